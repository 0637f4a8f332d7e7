"""The training process's walls: a bubblewrap (``bwrap``) sandbox around ``python -m
worker.sandbox``.

A teacher is a program (TorchScript and ``torch.export`` archives run code), so the process that
runs it sees only what one job needs:

- no network (its own network namespace: only a loopback with nothing on it), no view of the
  worker's processes (its own PID namespace and ``/proc``), an unprivileged uid (65534) in a user
  namespace of its own, no new privileges, the environment cleared to the allow-list;
- a read-only system: the interpreter, the libraries and this code, nothing else of the host's
  file system: not the database file, not the storage root, not another job's directory;
- the job's own inputs read-only, and writable only its scratch directory, its output directory,
  its checkpoint's directory, and its own corner of the teacher-output cache;
- on a GPU worker, the ``/dev/nvidia*`` devices of its own GPUs and none other.

A path the sandbox would need that holds the storage root or the database file (a virtualenv in
the storage directory, say) is refused rather than exposed: the job fails with
``sandbox_unavailable`` and the worker's log says which.
"""

import functools
import glob
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.engine import EngineError, EngineJob

log = logging.getLogger(__name__)

UNAVAILABLE = "sandbox_unavailable"
NOBODY = 65534
# Teachers stored as programs: loading one runs code. Refused where no sandbox can be built,
# unless the operator accepts the risk (DISTILL_ALLOW_UNCONFINED_CODE_TEACHERS).
CODE_FORMATS = frozenset({"torchscript", "torch_export"})
# What the dynamic loader, Python and torch read from /etc; nothing else of it (no shadow, no
# keys, no service configuration).
ETC_FILES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/alternatives",
)  # fmt: skip
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The code the child imports: these packages of this checkout, never the checkout itself (the
# embedded mode keeps its database and store in ./var beside them).
PACKAGES = ("app", "worker", "file_rules", "jobspec")
NVIDIA_SHARED = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


@dataclass
class Walls:
    """What one training process may read and write, as host paths."""

    read: list[Path] = field(default_factory=list)
    write: list[Path] = field(default_factory=list)
    devices: list[Path] = field(default_factory=list)
    # Paths that must stay out of reach: no bind may contain one.
    forbidden: list[Path] = field(default_factory=list)


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def sandbox_problem() -> str | None:
    """Why this host cannot build the sandbox, or None when it can. Tried once per process with
    the same namespaces every job gets."""
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = [bwrap, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap could not be started: {e}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"status {done.returncode}"
        return (
            f"bwrap cannot create its namespaces here ({reason}); unprivileged user namespaces "
            "must be enabled (sysctl kernel.unprivileged_userns_clone=1, and in a container a "
            "seccomp profile that allows them; see docs/deploy.md)"
        )
    return None


def job_walls(
    job: EngineJob, scratch: Path, forbidden: Iterable[Path], visible: str | None = None
) -> Walls:
    """The paths ``job`` needs (``visible``: the training process's CUDA_VISIBLE_DEVICES, whose
    GPUs it may open). Its writable directories are created here, as the sandbox can only bind
    what exists."""
    write = [scratch, job.output_dir, job.checkpoint_path.parent]
    if job.cache_dir is not None:
        write.append(job.cache_dir)
    for path in write:
        path.mkdir(parents=True, exist_ok=True)
    inputs = [job.teacher_path, job.student_path, job.train_path, job.validation_path]
    devices = gpu_devices(visible, job.device)
    # The CUDA driver and NVML read the GPUs' PCI entries in /sys; a CPU job gets no /sys.
    system = [Path("/sys")] if devices else []
    return Walls(
        read=[*_runtime_paths(), *system, *(p for p in inputs if p is not None)],
        write=write,
        devices=devices,
        forbidden=[Path(p).absolute() for p in forbidden],
    )


def command(
    inner: list[str], walls: Walls, cwd: Path, env: Mapping[str, str], info_fd: int
) -> list[str]:
    """``inner`` run by bwrap inside ``walls``, in ``cwd``, with exactly ``env``; bwrap writes
    the sandbox's PID 1 (as JSON) to ``info_fd``."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise EngineError(f"No sandbox: {sandbox_problem()}.", code=UNAVAILABLE)
    argv = [bwrap, *_namespaces(), "--die-with-parent", "--clearenv", "--info-fd", str(info_fd)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    binds = [("--ro-bind", p) for p in _existing(walls.read)]
    binds += [("--bind", Path(os.path.abspath(p))) for p in walls.write]
    # Outer directories first: a path bound inside another keeps its own mode.
    for option, path in sorted(binds, key=lambda bind: len(bind[1].parts)):
        _refuse_if_exposing(path, walls.forbidden)
        argv += [option, str(path), str(path)]
    for device in walls.devices:
        argv += ["--dev-bind", str(device), str(device)]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    return [*argv, "--chdir", str(cwd), "--", *inner]


def _namespaces() -> list[str]:
    """Every namespace bwrap can make (user, mount, PID, network, IPC, UTS, cgroup), as uid and
    gid 65534 inside, with no way back to privileges."""
    return ["--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY)]


def _runtime_paths() -> list[Path]:
    """The system, the interpreter and its packages, and this code: read-only."""
    paths = [Path(p) for p in (*SYSTEM_DIRS, *ETC_FILES)]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(Path(prefix))
    paths.append(Path(sys.executable).resolve().parent)
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.append(Path(sysconfig.get_path(name)))
    from worker.sandbox.environment import CODE_ROOT

    paths += [CODE_ROOT / package for package in PACKAGES]
    return paths


def gpu_devices(visible: str | None, device: str) -> list[Path]:
    """The ``/dev/nvidia*`` files a job on ``device`` needs: the driver's shared ones and its own
    GPUs' (``CUDA_VISIBLE_DEVICES`` by index; by UUID every GPU's, as the mapping needs the
    driver). None for a CPU job."""
    if not device.startswith(("cuda", "auto")) or not os.path.exists("/dev/nvidiactl"):
        return []
    gpus = sorted(glob.glob("/dev/nvidia[0-9]*"))
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in wanted):
            gpus = [f"/dev/nvidia{v}" for v in wanted if os.path.exists(f"/dev/nvidia{v}")]
    shared = [p for p in (*NVIDIA_SHARED, *glob.glob("/dev/nvidia-caps/*")) if os.path.exists(p)]
    return [Path(p) for p in (*shared, *gpus)]


def _existing(paths: Iterable[Path]) -> list[Path]:
    """Each path once, absolute, if it exists; a path inside another on the list is covered by
    it already."""
    unique = sorted({Path(os.path.abspath(p)) for p in paths if os.path.lexists(p)})
    return [p for p in unique if not any(p != q and p.is_relative_to(q) for q in unique)]


def _refuse_if_exposing(path: Path, forbidden: list[Path]) -> None:
    for secret in forbidden:
        if secret.is_relative_to(path.resolve()) or secret.is_relative_to(path):
            log.error("sandbox: binding %s would expose %s; job refused", path, secret)
            raise EngineError(
                "The worker's sandbox would expose the storage directory or the database to the "
                "job (the worker's log says which path); the job was not started.",
                code=UNAVAILABLE,
            )
