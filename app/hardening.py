"""Two Linux process flags the worker side sets, through prctl(2). They need no torch, so the
``distill worker`` supervisor (app/) and the Celery workers (worker/) share them from here."""

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0)) == 0


def make_undumpable() -> bool:
    """Keep other processes of the same user, the training processes that run untrusted
    teachers among them, out of this process's ``/proc/<pid>/environ`` and memory, where the
    database URL, broker URL and keys live. Root (CAP_SYS_PTRACE) can still read them: run
    workers as an ordinary user. The flag survives fork and is reset by exec."""
    return _prctl(_PR_SET_DUMPABLE, 0)


def die_with_parent(sig: signal.Signals = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have the kernel send ``sig`` to this process when the thread that started it exits. The
    flag survives exec, so a ``preexec_fn`` sets it for the program a child runs.

    ``parent``: the pid of the process that started this one. A parent that died before the flag
    was set sends nothing, ever: this process is then an orphan, and exits at once."""
    done = _prctl(_PR_SET_PDEATHSIG, int(sig))
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    return done
