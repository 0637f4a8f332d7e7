"""``distill worker`` as root: a warning in the log and on stderr. The worker stops right after
it (``--gpus 0`` with ``DISTILL_DEVICE=cpu`` is refused), so no broker or database is needed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Imports first, as root (the virtualenv may be root's alone); then, for "user", drops to nobody.
WORKER = """
import os, sys
from app import launch  # noqa: F401  (what `worker` runs, loaded while the venv is readable)
from app.cli import main
if sys.argv.pop(1) == "user":
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
sys.argv = ["distill", "worker", "--gpus", "0"]
main()
"""


def distill_worker(as_: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DISTILL_DEVICE": "cpu",
        "DISTILL_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [sys.executable, "-c", WORKER, as_],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="starts the worker as root")
def test_distill_worker_warns_when_it_runs_as_root() -> None:
    as_root = distill_worker("root")
    assert "--gpus 0 asks for GPUs" in as_root.stderr  # it got as far as planning its workers
    lines = as_root.stderr.splitlines()
    assert any(" WARNING distill.cli: distill worker is running as root" in ln for ln in lines)
    assert "WARNING: distill worker is running as root" in as_root.stderr
    assert "Run workers as an ordinary user" in as_root.stderr

    as_user = distill_worker("user")
    assert "--gpus 0 asks for GPUs" in as_user.stderr
    assert "root" not in as_user.stderr
