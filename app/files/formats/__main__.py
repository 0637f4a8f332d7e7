"""``python -m app.files.formats PATH PURPOSE LIMITS CPU_SECONDS MEMORY_BYTES``: one upload's
check, in a process of its own (started by app/files/checking.py), printing what it found or why
it refused the file as one JSON object."""

import json
import resource
import sys
from pathlib import Path
from typing import cast

from app.files.formats import Purpose, UnsafeFile, UnsupportedFormat, detect
from app.files.formats.errors import OVER_BUDGET_ADVICE
from app.files.limits import Limits


def _main(path: str, purpose: str, limits: str, cpu_seconds: str, memory_bytes: str) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds) + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))
    result: dict
    try:
        found = detect(Path(path), cast(Purpose, purpose), Limits(**json.loads(limits)))
        result = {"format": found.format, "meta": found.meta}
    except (UnsafeFile, UnsupportedFormat) as exc:
        result = {"error": exc.code, "message": str(exc)}
    except MemoryError:
        message = (
            f"Checking this file needed more than {memory_bytes} bytes of memory "
            f"(DISTILL_UPLOAD_CHECK_MEMORY_BYTES). {OVER_BUDGET_ADVICE}"
        )
        result = {"error": "unsafe_file", "message": message}
    sys.stdout.write(json.dumps(result))


_main(*sys.argv[1:])
