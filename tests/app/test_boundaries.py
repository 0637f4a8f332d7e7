"""The API process never loads torch, nor the worker package, at run time.

pyproject's import contracts (``lint-imports``) check our own import lines; they cannot see a
third-party package that loads torch behind our back (``transformers``, ``safetensors.torch``), nor
an import made by name at run time. This test imports the API's modules and looks."""

import subprocess
import sys


def test_the_api_imports_neither_torch_nor_worker() -> None:
    code = (
        "import sys, app.main, app.cli, app.launch\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'worker'))\n"
        "print(','.join(leaked))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
