"""The training process: ``python -m worker.sandbox``, started by ``TrainingProcess``.

It reads its job from stdin, bounds itself, and only then imports torch and loads the teacher;
callbacks, and the result or the error, go back as JSON lines (``protocol``). Anything else
written to stdout, by a teacher or a library, goes to stderr instead: the worker's log.
"""

import os
import resource
import signal
import sys
import threading
import traceback
from typing import IO, Any

from app.hardening import die_with_parent
from worker.sandbox import protocol


class _Channel:
    """The protocol's two pipes. stdin and stdout are moved off fds 0 and 1 first, so nothing
    but this channel can write a message."""

    def __init__(self) -> None:
        self.incoming: IO[bytes] = os.fdopen(os.dup(0), "rb")
        self.outgoing: IO[bytes] = os.fdopen(os.dup(1), "wb")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = protocol.encode(message)
        with self.lock:
            self.outgoing.write(line)
            self.outgoing.flush()

    def receive(self) -> dict[str, Any] | None:
        line = self.incoming.readline(protocol.MAX_LINE_BYTES + 1)
        return protocol.decode(line) if line else None


class _ParentCallbacks:
    """The engine's ``Callbacks``: every ``on_*`` call goes to the parent, which writes it to the
    database; ``should_stop`` is answered here, from the parent's stop message."""

    def __init__(self, channel: _Channel, stop: threading.Event):
        self.channel, self.stop = channel, stop

    def on_progress(self, progress: Any, points: list[dict]) -> None:
        self._call("on_progress", progress, points)

    def on_log(self, level: str, message: str, data: dict | None = None) -> None:
        self._call("on_log", level, message, data)

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.channel.send({"type": "call", "method": method, "args": args, "kwargs": kwargs})


def _listen(channel: _Channel, stop: threading.Event) -> None:
    """A stop message, or the parent closing the pipe, asks the engine to stop."""
    while True:
        try:
            message = channel.receive()
        except protocol.ProtocolError:
            continue
        if message is None or message["type"] == "stop":
            stop.set()
            return


def _bound(memory_bytes: int | None) -> None:
    """Limits that untrusted code cannot lift (the hard limit too, short of root): the address
    space, on CPU jobs (see docs/operations.md), and no core dumps of the teacher's memory."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def main() -> int:
    die_with_parent(signal.SIGKILL)
    channel = _Channel()
    first = channel.receive()
    if first is None or first["type"] != "job":
        return 2
    _bound(first.get("memory_bytes"))
    try:
        return _run(channel, first)
    except MemoryError:  # even the error could not be built
        channel.send({"type": "error", "code": "out_of_memory", "message": _OUT_OF_MEMORY})
        return 1


_OUT_OF_MEMORY = "The job ran out of memory; lower batch_size, or use less data or a smaller model."


def _run(channel: _Channel, first: dict[str, Any]) -> int:
    import torch  # only now: its import counts against the bound too

    from worker.engine import EngineError, EngineJob, EngineResult, JobCancelled, run_job

    if threads := first.get("torch_threads"):
        torch.set_num_threads(threads)
    from jobspec import JobSpec

    job = protocol.revive(first["job"], {"EngineJob": EngineJob, "JobSpec": JobSpec})
    stop = threading.Event()
    threading.Thread(target=_listen, args=(channel, stop), name="stop", daemon=True).start()
    try:
        result: EngineResult = run_job(job, _ParentCallbacks(channel, stop))
    except JobCancelled as e:
        channel.send({"type": "cancelled", "message": str(e)})
    except EngineError as e:
        channel.send({"type": "error", "code": e.code, "message": e.message})
    except MemoryError:
        channel.send({"type": "error", "code": "out_of_memory", "message": _OUT_OF_MEMORY})
    except Exception as e:
        traceback.print_exc()
        channel.send({"type": "crashed", "message": repr(e)})
    else:
        channel.send({"type": "result", "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
