"""A worker's environment holds its secrets; its training processes, which run untrusted
teachers as the same user, must not read it through /proc."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECRET = "dk_admin_not_for_teachers"
# A worker as an ordinary user (the image runs as uid 1000; root could read anything anyway)
# that is left dumpable, as every process starts, or protects itself; then a process it starts
# reads its environment, as a teacher could.
WORKER = """
import ctypes, os, subprocess, sys
from app.hardening import make_undumpable
if os.geteuid() == 0:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
if sys.argv[1] == "protected":
    assert make_undumpable()
else:
    assert ctypes.CDLL(None).prctl(4, 1, 0, 0, 0) == 0  # PR_SET_DUMPABLE: a new process's 1
reader = ["cat", f"/proc/{os.getpid()}/environ"]
done = subprocess.run(reader, capture_output=True, cwd="/")
sys.stdout.buffer.write(done.stdout)
sys.stderr.buffer.write(done.stderr)
sys.exit(done.returncode)
"""


def worker(mode: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISTILL_ADMIN_KEY": SECRET}
    return subprocess.run([sys.executable, "-c", WORKER, mode], env=env, capture_output=True)


def test_an_undumpable_worker_keeps_its_environment_from_its_children() -> None:
    exposed = worker("exposed")
    assert exposed.returncode == 0, exposed.stderr
    assert SECRET.encode() in exposed.stdout  # without the flag, a child reads it

    protected = worker("protected")
    assert protected.returncode != 0
    assert SECRET.encode() not in protected.stdout
    assert b"Permission denied" in protected.stderr


ORPHAN = """
import os, sys
from app.hardening import die_with_parent
die_with_parent(parent=int(sys.argv[1]))
print("still here")
"""


def test_a_process_whose_parent_is_already_gone_exits_at_once() -> None:
    """A parent that died before the child set PR_SET_PDEATHSIG never sends the signal: the
    child sees another parent (PID 1, a subreaper) than the one that started it, and exits."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    orphan = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(os.getpid() + 1)], env=env, capture_output=True
    )
    assert orphan.returncode == 1 and b"still here" not in orphan.stdout, orphan.stderr
    child = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(os.getpid())], env=env, capture_output=True
    )
    assert child.returncode == 0 and b"still here" in child.stdout, child.stderr
