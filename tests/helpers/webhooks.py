"""A real webhook receiver for tests (an ``http.server`` on 127.0.0.1 in a thread), and the
receiver's verification code, taken from docs/operations.md so that what is documented is what
is tested."""

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_verify() -> Callable[..., bool]:
    """``verify_distillery_signature`` exactly as docs/operations.md prints it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    [code] = [b for b in blocks if "def verify_distillery_signature" in b]
    namespace: dict = {}
    exec(code, namespace)
    return namespace["verify_distillery_signature"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    statuses: list[int]  # answers, in order; the last one repeats
    port: int = 0
    received: list[Received] = field(default_factory=list)
    answered: int = 0
    most_at_once: int = 0  # the most deliveries it held at one time
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, n: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} deliveries, not {n}")
                self.changed.wait(left)
            return list(self.received)


@contextmanager
def receiver(*statuses: int, hold: threading.Event | None = None) -> Iterator[Receiver]:
    """A server that answers each POST with the next of ``statuses`` (200 if none); given
    ``hold``, only once it is set (a slow receiver)."""
    state = Receiver(url="", statuses=list(statuses) or [200])
    at_once = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal at_once
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.changed:
                n = len(state.received)
                status = state.statuses[min(n, len(state.statuses) - 1)]
                state.received.append(Received(dict(self.headers.items()), body))
                at_once += 1
                state.most_at_once = max(state.most_at_once, at_once)
                state.changed.notify_all()
            if hold is not None:
                hold.wait(timeout=60)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            finally:
                with state.changed:
                    at_once -= 1
                    state.answered += 1
                    state.changed.notify_all()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}/hooks/distillery"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
