"""``distill worker`` on a machine with several GPUs: which worker processes to run
(``plan_workers``, pure), and a supervisor that runs them (``Supervisor``).

One Celery worker process per GPU, each pinned with ``CUDA_VISIBLE_DEVICES``: a worker runs one
job at a time, so a GPU never holds two jobs, and a job sees only its GPU.
"""

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.gpus import Gpu
from app.hardening import die_with_parent, make_undumpable

# Seconds before restarting a worker that died: longer after each death in a row, back to the
# first once a worker has stayed up STABLE_SECONDS.
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
STABLE_SECONDS = 300.0


class PlanError(ValueError):
    """The GPUs asked for do not exist, or contradict DISTILL_DEVICE."""


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # Celery node name
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's environment
    gpu: Gpu | None = None


def plan_workers(
    gpus: str,
    detected: Sequence[Gpu],
    *,
    device: str,
    processes: int = 1,
    name: str = "distill@%h",
    visible: str | None = None,
) -> list[WorkerSpec]:
    """The worker processes ``distill worker`` runs. ``gpus``: ``auto``, ``all``, ``none`` or
    indices like ``0,2``; ``detected``: the machine's GPUs; ``device``: DISTILL_DEVICE;
    ``processes``: workers per GPU (per machine without GPUs); ``visible``: the
    CUDA_VISIBLE_DEVICES ``distill worker`` itself was given, if any.

    Without GPUs to pin, the workers keep the environment as it is (DISTILL_DEVICE decides)."""
    if processes < 1:
        raise PlanError("--processes must be at least 1.")
    chosen = _choose(gpus, detected, device, visible)
    if not chosen:
        labels = [f"cpu{i}" for i in range(processes)] if processes > 1 else [None]
        return [WorkerSpec(_node(name, label)) for label in labels]
    several = len(chosen) * processes > 1
    return [
        WorkerSpec(
            name=_node(name, _gpu_label(gpu, i, processes) if several else None),
            env={
                "CUDA_VISIBLE_DEVICES": str(gpu.index),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # nvidia-smi's numbering, not fastest-first
                "DISTILL_DEVICE": "cuda",
            },
            gpu=gpu,
        )
        for gpu in chosen
        for i in range(processes)
    ]


def _choose(gpus: str, detected: Sequence[Gpu], device: str, visible: str | None) -> list[Gpu]:
    by_index = {gpu.index: gpu for gpu in detected}
    if gpus == "none":
        return []
    if gpus == "auto":
        if device == "cpu":
            return []
        if device.startswith("cuda:"):  # one GPU asked for by DISTILL_DEVICE
            wanted = _indices(device.removeprefix("cuda:"), "DISTILL_DEVICE")
            return [by_index[i] for i in wanted if i in by_index]
        if visible is not None:  # the operator narrowed it down already
            entries = [v.strip() for v in visible.split(",") if v.strip()]
            if not all(v.isdigit() for v in entries):  # UUIDs, MIG: leave them as given
                return []
            return [by_index[int(v)] for v in entries if int(v) in by_index]
        return list(detected)
    if device == "cpu":
        raise PlanError(f"--gpus {gpus} asks for GPUs, but DISTILL_DEVICE is cpu.")
    if gpus == "all":
        if not detected:
            raise PlanError("--gpus all: nvidia-smi finds no GPU on this machine.")
        return list(detected)
    wanted = _indices(gpus, "--gpus")
    missing = [i for i in wanted if i not in by_index]
    if missing:
        have = ", ".join(str(i) for i in by_index) or "none"
        raise PlanError(f"--gpus {gpus}: no GPU {missing[0]} on this machine (GPUs: {have}).")
    return [by_index[i] for i in wanted]


def _indices(text: str, what: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise PlanError(f"{what} {text}: expected GPU indices such as 0,2.") from None
    return list(dict.fromkeys(indices))  # each once, in the order given


def _gpu_label(gpu: Gpu, i: int, processes: int) -> str:
    return f"gpu{gpu.index}" if processes == 1 else f"gpu{gpu.index}-{i}"


def _node(name: str, label: str | None) -> str:
    """``distill@%h`` with ``gpu0`` is ``distill-gpu0@%h``: Celery node names must differ."""
    if label is None:
        return name
    base, at, host = name.partition("@")
    return f"{base}-{label}{at}{host}"


@dataclass
class _Worker:
    spec: WorkerSpec
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    deaths: int = 0  # in a row
    restart_at: float | None = None


class Supervisor:
    """Runs one process per spec, each in its own process group (a terminal's ^C reaches only
    the supervisor, which forwards it once). SIGINT and SIGTERM are forwarded: the first asks
    Celery for a warm shutdown (running jobs finish), a second one for a cold one. A worker
    that dies meanwhile is restarted after a delay (``RESTART_DELAYS``). ``run()`` returns 0
    once every worker has stopped cleanly after a signal, else 1."""

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        argv: Callable[[WorkerSpec], list[str]],
        env: Mapping[str, str] | None = None,
    ):
        self.workers = [_Worker(spec) for spec in specs]
        self.argv, self.env = argv, dict(os.environ if env is None else env)
        self.stopping = False

    def run(self) -> int:
        make_undumpable()  # this process's environment holds the workers' secrets
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous_fd = signal.set_wakeup_fd(wake_w)
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGINT, self._forward),
                (signal.SIGTERM, self._forward),
                (signal.SIGCHLD, lambda *_: None),  # only to wake the loop up
            )
        }
        try:
            for worker in self.workers:
                self._start(worker)
            while not (self.stopping and all(self._gone(w) for w in self.workers)):
                self._tend()
                select.select([wake_r], [], [], self._next_wake())
                while _drain(wake_r):
                    pass
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
        return 0 if all(w.proc is None or w.proc.returncode == 0 for w in self.workers) else 1

    def _start(self, worker: _Worker) -> None:
        worker.proc = subprocess.Popen(
            self.argv(worker.spec),
            env={**self.env, **worker.spec.env},
            process_group=0,
            # A killed supervisor: a warm stop.
            preexec_fn=partial(die_with_parent, signal.SIGTERM, os.getpid()),
        )
        worker.started, worker.restart_at = time.monotonic(), None
        _say(f"worker {worker.spec.name}: pid {worker.proc.pid}{_pinned(worker.spec)}")

    def _tend(self) -> None:
        """Notice workers that died; restart those that are due."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is not None and worker.restart_at is None and not self.stopping:
                code = worker.proc.poll()
                if code is not None:
                    stable = now - worker.started >= STABLE_SECONDS
                    worker.deaths = 1 if stable else worker.deaths + 1
                    delay = RESTART_DELAYS[min(worker.deaths, len(RESTART_DELAYS)) - 1]
                    worker.restart_at = now + delay
                    _say(f"worker {worker.spec.name} exited ({code}); restarting in {delay:g} s")
            if worker.restart_at is not None and now >= worker.restart_at and not self.stopping:
                self._start(worker)

    def _next_wake(self) -> float | None:
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due and not self.stopping else None

    def _gone(self, worker: _Worker) -> bool:
        return worker.proc is None or worker.proc.poll() is not None

    def _forward(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.restart_at = None
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signum)


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _pinned(spec: WorkerSpec) -> str:
    if spec.gpu is None:
        return ""
    return f", GPU {spec.gpu.index} ({spec.gpu.name}, {spec.gpu.memory_bytes / 2**30:.0f} GiB)"


def _say(line: str) -> None:
    print(f"distill worker: {line}", file=sys.stderr, flush=True)
