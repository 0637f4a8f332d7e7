"""A real HTTP proxy in front of the real server that misbehaves on request, once per rule: for
the client's retries, resumption and reconnection. It reads each answer whole before passing it
on, so it suits anything but a stream that has not ended (an SSE stream of a final job has)."""

import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Rule:
    method: str
    path: str  # a prefix of the request path
    mode: str  # "drop_before" | "drop_after" | "status" | "truncate"
    status: int = 503
    keep_bytes: int = 0
    used: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None  # what the proxy answered; None when it dropped the connection


@dataclass
class FaultyProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.upstream, timeout=60)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_DELETE = do_PATCH = do_PUT = do_HEAD = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def once(self, method: str, path: str, mode: str, **kw: Any) -> None:
        with self.lock:
            self.rules.append(Rule(method, path, mode, **kw))

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()

    def _rule(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.used and rule.method == method and path.startswith(rule.path):
                    rule.used = True
                    return rule
        return None

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = _read_body(h)
        seen = Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()})
        self.seen.append(seen)
        rule = self._rule(h.command, h.path)
        if rule and rule.mode == "drop_before":
            return  # the connection closes with no answer: the server never saw it
        if rule and rule.mode == "status":
            seen.status = rule.status
            payload = b'{"error": {"code": "proxy", "message": "Injected.", "param": null}}'
            _answer(h, rule.status, {"content-type": "application/json"}, payload)
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["accept-encoding"] = "identity"
        answer = self.http.request(h.command, h.path, headers=headers, content=body)
        if rule and rule.mode == "drop_after":
            return  # the server did it; the client never hears
        seen.status = answer.status_code
        out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        keep = rule.keep_bytes if rule and rule.mode == "truncate" else None
        _answer(h, answer.status_code, out_headers, answer.content, keep)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    if h.headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int(h.rfile.readline().split(b";")[0], 16):
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
        h.rfile.readline()
        return b"".join(chunks)
    return h.rfile.read(int(h.headers.get("content-length") or 0))


def _answer(
    h: BaseHTTPRequestHandler,
    status: int,
    headers: dict[str, str],
    body: bytes,
    keep: int | None = None,
) -> None:
    """Send the answer; with ``keep``, promise the whole body but send only that many bytes
    before closing, as a connection that breaks mid-download does."""
    h.send_response(status)
    for key, value in headers.items():
        if key.lower() != "content-encoding":
            h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body if keep is None else body[:keep])
    h.wfile.flush()


def token() -> str:
    return secrets.token_hex(4)
