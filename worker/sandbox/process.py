"""The worker's side of a training process: start it, hand it its job, relay its callbacks, stop
it, and turn however it ends into what ``run_job`` returns or raises."""

import contextlib
import contextvars
import dataclasses
import json
import logging
import math
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from app import storage
from app.config import Settings
from worker.device import device_setting
from worker.engine import Callbacks, EngineError, EngineJob, EngineResult, JobCancelled, Progress
from worker.sandbox import confine, protocol
from worker.sandbox.environment import child_environment

POLL_SECONDS = 0.2  # how often a quiet child's stop request, time limit and lease are looked at
STOP_GRACE_SECONDS = 5.0  # a stopped job's checkpoint gets this long, then the child is killed
STDERR_LINE_BYTES = 64 * 1024  # a longer line is logged in pieces
DIED = "training_process_died"
child_log = logging.getLogger("worker.sandbox.child")
# Every on_* method of the engine's Callbacks protocol; the child may call these and no others.
CALLBACKS = frozenset(name for name in vars(Callbacks) if name.startswith("on_"))
CALLBACK_TYPES: dict[str, type] = {"Progress": Progress}
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HINTS = {
    "SIGKILL": " (the kernel's out-of-memory killer does this when the machine runs out of memory)",
    "SIGSEGV": " (a crash in native code, such as the teacher's)",
    "SIGBUS": " (a crash in native code, such as the teacher's)",
    "SIGABRT": " (a crash in native code, such as the teacher's)",
    "SIGILL": " (a crash in native code, such as the teacher's)",
}


@dataclasses.dataclass(frozen=True)
class SandboxSettings:
    # Address space of a CPU job's process (RLIMIT_AS); None: unbounded. Never applied to CUDA
    # jobs: the driver reserves virtual ranges far larger than any sensible bound.
    memory_bytes: int | None = None
    timeout_seconds: float | None = None  # wall clock, from the process's start
    torch_threads: int | None = None
    stop_grace_seconds: float = STOP_GRACE_SECONDS
    # The bubblewrap sandbox (confine.py): "auto" where the host can build it, "bwrap" always
    # (a job fails where it cannot), "off" never. Without it a teacher that is a program is
    # refused unless ``allow_unconfined_code``.
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    allow_unconfined_code: bool = False
    # The training process's CUDA_VISIBLE_DEVICES (a gang's GPUs, worker/runner.py); None: the
    # worker's own.
    visible_devices: str | None = None
    # Paths no sandbox may expose: the storage root and the database file.
    forbidden: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "SandboxSettings":
        return cls(
            memory_bytes=settings.job_memory_bytes or default_memory_bytes(),
            timeout_seconds=settings.job_timeout_seconds,
            torch_threads=settings.torch_threads,
            sandbox=settings.sandbox,
            allow_unconfined_code=settings.allow_unconfined_code_teachers,
            forbidden=(storage.root(), *settings.database_files, settings.broker_folder.resolve()),
        )


def default_memory_bytes() -> int:
    """Three quarters of this machine's memory: a runaway job fails, the machine keeps running."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 3 // 4


class TrainingProcess:
    """One ``run_job`` in a child process. ``run()`` returns the ``EngineResult`` or raises
    ``EngineError`` / ``JobCancelled``, as ``run_job`` does, whatever happens to the child.

    ``callbacks`` are called here, in the caller's thread; ``abort`` (the lease was lost) kills
    the child at once. ``command`` starts something else that speaks the protocol (tests)."""

    def __init__(
        self,
        job: EngineJob,
        callbacks: Callbacks,
        settings: SandboxSettings | None = None,
        abort: threading.Event | None = None,
        command: Sequence[str] | None = None,
    ):
        self.job = _absolute(job)
        self.callbacks = callbacks
        self.settings = settings or SandboxSettings()
        self.abort = abort or threading.Event()
        self.command = list(command or [sys.executable, "-m", "worker.sandbox"])
        self.confined = False  # run() decides: in the bubblewrap sandbox, or a plain process
        self._sandbox_init: int | None = None  # the sandbox's PID 1, as this machine sees it
        self._pid: int | None = None
        self.returncode: int | None = None  # negative: the signal that ended it
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=256)
        self._killed_because: Exception | None = None  # what run() raises once the child is gone
        self._done = threading.Event()  # run() is over: the reader stops waiting to be heard
        self._stderr_relay: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The training process's pid on this machine (in the sandbox, the child of its PID 1;
        found on first use, as bwrap starts it a moment after reporting its PID 1)."""
        if self._pid is None and self._sandbox_init is not None:
            self._pid = _first_child(self._sandbox_init) or self._sandbox_init
        return self._pid

    def run(self) -> EngineResult:
        self.confined = self._decide_confinement()
        with tempfile.TemporaryDirectory(prefix="distill-job-", ignore_cleanup_errors=True) as d:
            try:
                self._start(Path(d))
                final = self._supervise()
            finally:
                self._kill()  # the whole process group: whatever the teacher started goes too
                self._reap()
                self._done.set()
                if self._stderr_relay is not None:  # its last lines are logged before run() ends
                    self._stderr_relay.join(self.settings.stop_grace_seconds)
        if self._killed_because is not None:
            raise self._killed_because
        return self._conclude(final)

    # -- the child's life -----------------------------------------------------------------------

    def _decide_confinement(self) -> bool:
        """True: this job runs in the sandbox. Raises where it must and cannot, or where its
        teacher is a program and nothing contains it."""
        mode = self.settings.sandbox
        problem = "DISTILL_SANDBOX=off" if mode == "off" else confine.sandbox_problem()
        if problem is None:
            return True
        if mode == "bwrap":
            raise EngineError(
                f"This worker cannot build its sandbox: {problem}. DISTILL_SANDBOX=bwrap "
                "runs no job without one.",
                code=confine.UNAVAILABLE,
            )
        fmt = self.job.teacher_format
        if fmt in confine.CODE_FORMATS and not self.settings.allow_unconfined_code:
            raise EngineError(
                f"This teacher is a program ({fmt}: loading it runs its code) and this worker "
                f"cannot sandbox it ({problem}). Upload the teacher's weights (safetensors or a "
                "state_dict) instead, or ask the operator to give the workers bubblewrap, or to "
                "set DISTILL_ALLOW_UNCONFINED_CODE_TEACHERS=true to run such teachers without a "
                "sandbox, accepting that one could read or change whatever the worker can.",
                code=confine.UNAVAILABLE,
            )
        return False

    def _start(self, scratch: Path) -> None:
        env = child_environment(os.environ, scratch)
        if self.settings.visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.settings.visible_devices
        argv, info, info_w = self.command, None, -1
        if self.confined:
            walls = confine.job_walls(
                self.job, scratch, self.settings.forbidden, env.get("CUDA_VISIBLE_DEVICES")
            )
            info, info_w = os.pipe()
        try:
            if info is not None:
                argv = confine.command(self.command, walls, scratch, env, info_fd=info_w)
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,  # into the worker's log, line by line (_relay_stderr)
                env=env,
                cwd=scratch,
                close_fds=True,
                pass_fds=(info_w,) if info is not None else (),
                start_new_session=True,  # its own process group, out of reach of the terminal's ^C
            )
        except BaseException:
            if info is not None:
                os.close(info)
            raise
        finally:
            if info is not None:
                os.close(info_w)
        if info is None:
            self._pid = self._proc.pid
        else:
            self._sandbox_init = _read_sandbox_pid(info) or self._proc.pid
        threads = {
            target: threading.Thread(
                # In the caller's context: the job's, so what the threads log names the job.
                target=contextvars.copy_context().run, args=(target,),
                name=f"sandbox-{self._proc.pid}", daemon=True,
            )
            for target in (self._read, self._await_exit, self._relay_stderr)
        }  # fmt: skip
        for thread in threads.values():
            thread.start()
        self._stderr_relay = threads[self._relay_stderr]
        self._send(
            {
                "type": "job",
                "job": self.job,
                "memory_bytes": self.settings.memory_bytes if self._bounded() else None,
                "torch_threads": self.settings.torch_threads,
            }
        )

    def _read(self) -> None:
        """The child's lines, then ("eof", b"")."""
        assert self._proc is not None and self._proc.stdout is not None
        with self._proc.stdout as stdout:
            while line := stdout.readline(protocol.MAX_LINE_BYTES + 1):
                self._put(("line", line))
        self._put(("eof", b""))

    def _relay_stderr(self) -> None:
        """What the child writes to stderr (a traceback, a library's warnings, a teacher's
        prints) goes to the worker's log as records of its own, in the worker's format."""
        assert self._proc is not None and self._proc.stderr is not None
        with self._proc.stderr as stderr:
            while line := stderr.readline(STDERR_LINE_BYTES):
                child_log.info("%s", line.decode(errors="replace").rstrip("\n"))

    def _await_exit(self) -> None:
        """("exited", b"") once the child has exited. Its exit is awaited without reaping it, so
        its process group cannot be reused before ``_kill`` sends to it."""
        assert self._proc is not None
        with contextlib.suppress(ChildProcessError):  # run() gave up on it, reaped it already
            os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT)
        self._put(("exited", b""))

    def _put(self, event: tuple[str, bytes]) -> None:
        while not self._done.is_set():
            try:
                self._events.put(event, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _supervise(self) -> dict[str, Any] | None:
        """Relay messages until the child has exited and its pipe is drained; return its final
        message, if any."""
        timeout, grace = self.settings.timeout_seconds, self.settings.stop_grace_seconds
        deadline = time.monotonic() + timeout if timeout else math.inf
        stop_sent = answered = gone = math.inf  # when stop was sent, it answered, it exited
        final: dict[str, Any] | None = None
        eof = False
        while not (eof and gone < math.inf):
            now = time.monotonic()
            if now >= gone + grace:
                break  # it has exited, but something it started holds the pipe open
            if self._killed_because is None and gone == math.inf:
                if self.abort.is_set():
                    self._kill(JobCancelled("The worker lost the job's lease; stopped at once."))
                elif final is None and now >= deadline:
                    self._kill(EngineError(self._over_time(), code="time_limit_exceeded"))
                elif final is None and now >= stop_sent + grace:
                    self._kill(JobCancelled(self._hard_cancel()))
                elif now >= answered + grace:  # a hung teardown must not hold the job
                    self._kill()
                elif final is None and stop_sent == math.inf and self.callbacks.should_stop():
                    self._send({"type": "stop"})
                    stop_sent = now
            try:
                kind, line = self._events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "eof":
                eof = True
            elif kind == "exited":
                gone = now
            elif self._killed_because is None and final is None:
                try:
                    final = self._handle(protocol.decode(line))
                except protocol.ProtocolError as e:
                    self._kill(EngineError(f"The training process {e}; it was stopped.", code=DIED))
                if final is not None:
                    answered = now
        return final

    def _handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Call back for a call; return a final message."""
        if message["type"] != "call":
            if message["type"] not in ("result", "error", "cancelled", "crashed"):
                raise protocol.ProtocolError(f"sent a message of type {message['type']!r}")
            return message
        method, args, kwargs = message.get("method"), message.get("args"), message.get("kwargs")
        if method not in CALLBACKS or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise protocol.ProtocolError(f"made a call the engine does not make ({method!r})")
        callback = getattr(self.callbacks, str(method), None)
        if callback is not None:  # callbacks that predate a newer on_* simply miss it
            callback(*protocol.revive(args, CALLBACK_TYPES), **protocol.revive(kwargs, {}))
        return None

    def _conclude(self, final: dict[str, Any] | None) -> EngineResult:
        if final is None:
            raise self._died()
        kind = final["type"]
        message = str(final.get("message", ""))[:2000]
        if kind == "result":
            return self._result(final.get("result"))
        if kind == "cancelled":
            raise JobCancelled(message)
        if kind == "crashed":
            raise EngineError(f"The training process failed: {message}", code="internal_error")
        code = final.get("code")
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise EngineError("The training process reported an error without a code.", code=DIED)
        raise EngineError(message, code=code)

    def _result(self, value: Any) -> EngineResult:
        """The child's result, if it names only regular files directly in the job's output
        directory: the worker hashes and serves them, so a link or another path is refused."""
        try:
            result = protocol.revive(value, {"EngineResult": EngineResult})
        except protocol.ProtocolError as e:
            raise EngineError(f"The training process {e}.", code=DIED) from e
        out = self.job.output_dir.resolve()
        if (
            not isinstance(result, EngineResult)
            or not isinstance(result.metrics, dict)
            or not isinstance(result.artifacts, list)
            or not all(_is_artifact(p, out) for p in result.artifacts)
        ):
            raise EngineError(
                "The training process returned artifacts outside the job's output directory, "
                "or links; the job's output was refused.",
                code=DIED,
            )
        return result

    # -- stopping -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(protocol.encode(message))
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):  # it is gone already: its exit says why
            pass

    def _kill(self, because: Exception | None = None) -> None:
        if because is not None and self._killed_because is None:
            self._killed_because = because
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self._proc is None:
            return
        self.returncode = self._proc.wait()
        if self.confined and self.returncode > 128:  # bwrap's way to say: killed by a signal
            self.returncode = 128 - self.returncode
        if self._proc.stdin is not None:  # stdout is the reader's to close
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()

    def _bounded(self) -> bool:
        """Whether the memory bound applies: CPU jobs only (see ``SandboxSettings``)."""
        return device_setting(self.job.device).startswith("cpu")

    def _died(self) -> EngineError:
        code = self.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return EngineError(
                f"The training process was killed by {name}{_HINTS.get(name, '')}. The worker "
                "is fine; the job can be submitted again.",
                code=DIED,
            )
        return EngineError(
            f"The training process exited with status {code} without a result; the worker's "
            "log has its output.",
            code=DIED,
        )

    def _over_time(self) -> str:
        return (
            f"The job ran longer than the time limit of {self.settings.timeout_seconds:g} "
            "seconds (DISTILL_JOB_TIMEOUT_SECONDS) and was stopped."
        )

    def _hard_cancel(self) -> str:
        return (
            f"Cancelled; the training process did not stop within "
            f"{self.settings.stop_grace_seconds:g} seconds and was killed, so the job's "
            "checkpoint is the last one it saved before."
        )


def _read_sandbox_pid(fd: int) -> int | None:
    """bwrap's ``--info-fd`` report: the sandbox's PID 1 as this machine sees it."""
    text = b""
    try:
        while chunk := os.read(fd, 4096):  # bwrap keeps it open: read up to a whole object
            text += chunk
            try:
                pid = json.loads(text)["child-pid"]
            except ValueError:
                continue
            except (KeyError, TypeError):
                return None
            return pid if isinstance(pid, int) else None
        return None  # bwrap failed before it started anything: its exit says why
    finally:
        os.close(fd)


def _first_child(pid: int, wait_seconds: float = 10.0) -> int | None:
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None  # it has exited
        if children:
            return int(children[0])
        time.sleep(0.01)
    return None


def _absolute(job: EngineJob) -> EngineJob:
    """The job with absolute paths: the child runs in its scratch directory."""
    paths = {
        f.name: getattr(job, f.name).absolute()
        for f in dataclasses.fields(job)
        if isinstance(getattr(job, f.name), Path)
    }
    return dataclasses.replace(job, **paths)


def _is_artifact(path: Any, out: Path) -> bool:
    return (
        isinstance(path, Path)
        and path.absolute().parent.resolve() == out
        and not path.is_symlink()
        and path.is_file()
    )


def run_in_sandbox(
    job: EngineJob,
    callbacks: Callbacks,
    settings: SandboxSettings | None = None,
    abort: threading.Event | None = None,
) -> EngineResult:
    """``worker.engine.run_job``, in a training process of its own."""
    return TrainingProcess(job, callbacks, settings, abort).run()
