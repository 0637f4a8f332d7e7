"""The API process never loads torch, nor the worker package."""

import subprocess
import sys


def test_the_api_imports_neither_torch_nor_worker() -> None:
    code = (
        "import sys, app.main, app.cli\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'worker'))\n"
        "print(','.join(leaked))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
