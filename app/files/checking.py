"""Each upload's format check runs in a process of its own, bounded in CPU time and memory, so a
file built to exhaust the checker costs one child process, never the API.

``detect`` waits for one of DISTILL_UPLOAD_CHECKS_AT_ONCE slots, then runs the check with
``python -m app.files.formats`` (app/files/formats/__main__.py). A child over its CPU time
(RLIMIT_CPU), memory (RLIMIT_AS) or wall-clock time is answered as an unsafe file, like any
other refusal.
"""

import asyncio
import json
import math
import os
import signal
import sys
import weakref
from pathlib import Path

from app.config import Settings, get_settings
from app.errors import Unprocessable
from app.files import formats
from app.files.formats.errors import OVER_BUDGET_ADVICE
from app.files.limits import Limits
from app.files.schemas import Purpose

_Slots = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
_slots: _Slots = weakref.WeakKeyDictionary()
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


async def detect(path: Path, purpose: Purpose) -> formats.Detected:
    """What ``formats.detect`` finds, from a bounded child process; refusals are
    ``Unprocessable``."""
    settings = get_settings()
    async with _slot(settings):
        result = await _run_child(path, purpose, settings)
    if "error" in result:
        raise Unprocessable(result["message"], param="file", code=result["error"])
    return formats.Detected(result["format"], result["meta"])


def _slot(settings: Settings) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()  # a semaphore belongs to one event loop
    if loop not in _slots:
        _slots[loop] = asyncio.Semaphore(settings.upload_checks_at_once)
    return _slots[loop]


async def _run_child(path: Path, purpose: Purpose, settings: Settings) -> dict:
    cpu_seconds = math.ceil(settings.upload_check_seconds)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.files.formats",
        str(path),
        purpose.value,
        json.dumps(_limits(settings).as_dict()),
        str(cpu_seconds),
        str(settings.upload_check_memory_bytes),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ | _ONE_THREAD,
    )
    try:
        # Waiting on the disk costs no CPU time; allow for it, but not forever.
        out, err = await asyncio.wait_for(child.communicate(), timeout=2 * cpu_seconds + 10)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise _over_budget(f"Checking this file took more than {2 * cpu_seconds + 10} s") from None
    finally:
        if child.returncode is None:  # cancelled: the client went away
            child.kill()
            await child.wait()
    if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise _over_budget(f"Checking this file took more than {cpu_seconds} s of CPU time")
    if child.returncode != 0 or not out:
        raise RuntimeError(f"the upload check failed ({child.returncode}): {err.decode()[-2000:]}")
    return json.loads(out)


def _limits(settings: Settings) -> Limits:
    return Limits(
        pickle_opcodes=settings.upload_max_pickle_opcodes,
        seconds=settings.upload_check_seconds,
        expansion_ratio=settings.upload_max_expansion_ratio,
        unpacked_bytes=settings.max_unpacked_bytes,
        safetensors_header_bytes=settings.upload_max_safetensors_header_bytes,
        safetensors_tensors=settings.upload_max_safetensors_tensors,
    )


def _over_budget(what: str) -> Unprocessable:
    return Unprocessable(
        f"{what} (DISTILL_UPLOAD_CHECK_SECONDS). {OVER_BUDGET_ADVICE}",
        param="file",
        code="unsafe_file",
    )
