"""A language model's file as an ordinary Hugging Face folder, whichever format it came in.

Every later step (loading the teacher or the student, reading the tokenizer, saving the student)
reads a plain ``save_pretrained`` folder. An ``hf_archive`` is one already, zipped: it is unpacked
with the text teachers' bounded extraction (``hf.extract_archive``). A ``gguf`` file is
dequantized into one (``gguf.gguf_to_hf``), which takes about 30 s for a 135M model on two cores,
so with a cache directory the folder is kept under the file's sha256 for later jobs on the same
file. It appears there only whole, by a rename, so a job never reads a half-written folder, and
two jobs converting the same file at once both end with one complete folder.
"""

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from file_rules.gguf import read_gguf_header
from worker.engine import hf
from worker.engine.errors import UnsupportedInput
from worker.engine.lm import gguf
from worker.engine.teacher_cache import file_sha256

Log = Callable[[str], None]  # an info message for the job's log
FORMATS = ("hf_archive", "gguf")


def lm_folder(
    path: Path,
    fmt: str,
    work_dir: Path,
    cache_dir: Path | None,
    sha256: str | None,
    max_unpacked_bytes: int,
    on_log: Log | None = None,
) -> Path:
    """The model folder of the file at ``path`` (an ``hf_archive`` or a ``gguf``). ``work_dir``
    is this model's own scratch directory (the teacher's and the student's differ); a GGUF's
    folder goes to ``cache_dir / "gguf" / <sha256>`` instead when there is a ``cache_dir``
    (``sha256`` is the file's, computed when not given). Either unpacks to at most
    ``max_unpacked_bytes``."""
    log = on_log or _quiet
    if fmt == "hf_archive":
        return hf.extract_archive(path, work_dir / "archive", max_unpacked_bytes)
    if fmt != "gguf":
        raise UnsupportedInput(
            f"{path.name} is a {fmt} file; a language model comes as one of {', '.join(FORMATS)}.",
            code="unsupported_teacher",
        )
    _check_dequantized_size(path, max_unpacked_bytes)
    if cache_dir is None:
        return _convert(path, work_dir / "gguf", log)
    digest = sha256 or file_sha256(path)
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{digest!r} is not a sha256")
    folder = cache_dir / "gguf" / digest
    if folder.is_dir():
        log(f"Reused the float model converted from {path.name} by an earlier job.")
        return folder
    return _convert(path, folder, log)


def _convert(path: Path, folder: Path, log: Log) -> Path:
    """Dequantize ``path`` into a folder of its own beside ``folder`` and rename it into place;
    if another job's conversion got there first, keep that one."""
    started = time.monotonic()
    folder.parent.mkdir(parents=True, exist_ok=True)
    mine = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    try:
        gguf.gguf_to_hf(path, mine)
        try:
            os.rename(mine, folder)
        except OSError:
            if not folder.is_dir():  # not another job's folder in the way: a real failure
                raise
    finally:
        shutil.rmtree(mine, ignore_errors=True)
        shutil.rmtree(mine.with_name(mine.name + ".partial"), ignore_errors=True)
    log(f"Converted {path.name} (GGUF) into a float model in {time.monotonic() - started:.0f} s.")
    return folder


def _check_dequantized_size(path: Path, max_unpacked_bytes: int) -> None:
    """The float32 folder takes four bytes a weight, many times the quantized file: refused
    before any work when it would pass the bound that archives have too."""
    gguf.inspect_gguf(path)  # a clear error for a damaged or unsupported file
    with path.open("rb") as f:
        header = read_gguf_header(f, path.stat().st_size)
    dequantized = 4 * sum(tensor.numel for tensor in header.tensors)
    if dequantized > max_unpacked_bytes:
        raise UnsupportedInput(
            f"{path.name} dequantizes to {dequantized / 2**30:.1f} GiB of float32 weights, more "
            f"than this worker unpacks ({max_unpacked_bytes / 2**30:.1f} GiB, "
            "DISTILL_MAX_UNPACKED_BYTES); use a smaller model or raise the limit.",
            code="unsupported_teacher",
        )


def _quiet(message: str) -> None:
    pass
