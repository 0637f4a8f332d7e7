"""Temporary uploads: the files a request's body streams into (app/files/service.py) before it
becomes a stored file, and, at an API process's start, the removal of those that a killed process
left behind.

Several API processes may share the directory (the local store over NFS, or replicas on one
machine), and a process that starts must not delete another one's upload in flight. So each
upload's name says who writes it: ``<host>_<pidns>_<pid>_<run>_<random>``, where ``pidns``
is the process's PID namespace (a container has its own) and ``run`` is random per process, so
that a restarted container's API, pid 1 again, tells its own uploads from its predecessor's. At
start, an API process removes

- the uploads of a process it can see is gone: same host, same PID namespace, and no process
  with that pid, or this very pid in an earlier run;
- any upload not written to for a day (``STALE_SECONDS``): those of other hosts and other
  containers, whose processes it cannot see, and those named by earlier releases. An upload in
  flight is written to as its bytes arrive.

Everything else stays: at worst a dead upload waits out the day.
"""

import logging
import os
import secrets
import socket
import time
import uuid
from pathlib import Path

from app.storage import uploads_dir

log = logging.getLogger(__name__)

STALE_SECONDS = 24 * 3600
_RUN = secrets.token_hex(4)


def new_upload_path() -> Path:
    """Where this process streams a new upload."""
    return uploads_dir() / f"{_writer()}_{uuid.uuid4().hex}"


def remove_left_behind(now: float | None = None) -> int:
    """Remove the uploads that nobody will finish (see above); how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for path in uploads_dir().iterdir():
        try:
            if path.is_file() and _left_behind(path, now):
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process starting up removed it first
            pass
        except OSError as e:
            log.warning("could not remove the temporary upload %s: %s", path, e)
    if removed:
        log.info("removed %d temporary uploads left behind in %s", removed, uploads_dir())
    return removed


def _writer() -> str:
    return f"{_here()}_{os.getpid()}_{_RUN}"


def _here() -> str:
    """This host and PID namespace: where a pid names the same process as in this one."""
    return f"{socket.gethostname()}_{_pid_namespace()}"


def _left_behind(path: Path, now: float) -> bool:
    parts = path.name.rsplit("_", 3)  # here, pid, run, random
    if len(parts) == 4 and parts[0] == _here() and parts[1].isdigit():
        pid, run = int(parts[1]), parts[2]
        if pid == os.getpid():
            return run != _RUN
        if not _running(pid):
            return True
    return now - path.stat().st_mtime > STALE_SECONDS


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:  # not Linux
        return "0"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
