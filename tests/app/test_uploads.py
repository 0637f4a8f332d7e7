"""Refused uploads: too large, malformed or incomplete. Each answers the contract's error body and
leaves nothing behind: no file row, no blob, no temporary file.

The size limit is checked on the raw ASGI app, where the test can count the body bytes the server
read: an honest Content-Length over the limit is refused before any of the body is read, and a
chunked body (no Content-Length) is cut off once the limit is passed, not buffered to the end.
"""

import asyncio
import io
import json
import secrets
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from fastapi.testclient import TestClient

from tests.conftest import Client
from tests.helpers.api import error_of, stored

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # DISTILL_MAX_UPLOAD_BYTES in tests/conftest.py
CHUNK = 1024 * 1024


@pytest.fixture
def nothing_stored(team: Client) -> Iterator[None]:
    """Asserts, after the test, that it left no file, blob or temporary upload behind."""
    before = stored(team)
    assert before[2] == [], f"temporary uploads left over before the test: {before[2]}"
    yield
    assert stored(team) == before


def multipart_parts(size: int, boundary: str, purpose: str = "dataset") -> tuple[bytes, bytes]:
    """The bytes before and after a file part of ``size`` bytes."""
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        f"{purpose}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


class RawUpload:
    """Drives the ASGI app directly with a body fed chunk by chunk, counting what it reads."""

    def __init__(self, app: Any, headers: dict[str, str], chunks: Iterator[bytes]):
        self.app, self.chunks = app, chunks
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.bytes_read = 0
        self.status = 0
        self.body = b""

    async def _receive(self) -> dict[str, Any]:
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.bytes_read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def post(self, path: str) -> "RawUpload":
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        asyncio.run(self.app(scope, self._receive, self._send))
        return self


def file_body(size: int, boundary: str) -> Iterator[bytes]:
    head, tail = multipart_parts(size, boundary)
    yield head
    for offset in range(0, size, CHUNK):
        yield b"\0" * min(CHUNK, size - offset)
    yield tail


def assert_too_large(upload: RawUpload) -> None:
    assert upload.status == 413, upload.body
    error = json.loads(upload.body)["error"]
    assert error["code"] == "file_too_large" and error["param"] == "file", error
    assert str(MAX_UPLOAD_BYTES) in error["message"], error


@pytest.mark.usefixtures("nothing_stored")
def test_oversize_upload_with_content_length_is_refused_before_reading(
    api: TestClient, team: Client
) -> None:
    boundary = secrets.token_hex(8)
    size = MAX_UPLOAD_BYTES + 2 * CHUNK  # past the limit and the allowance for multipart framing
    head, tail = multipart_parts(size, boundary)
    headers = {
        **team.headers,
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + size + len(tail)),
    }
    upload = RawUpload(api.app, headers, file_body(size, boundary)).post("/v1/files")
    assert_too_large(upload)
    assert upload.bytes_read == 0


@pytest.mark.usefixtures("nothing_stored")
def test_oversize_chunked_upload_is_cut_off_while_streaming(api: TestClient, team: Client) -> None:
    boundary = secrets.token_hex(8)
    size = 4 * MAX_UPLOAD_BYTES
    headers = {**team.headers, "content-type": f"multipart/form-data; boundary={boundary}"}
    upload = RawUpload(api.app, headers, file_body(size, boundary)).post("/v1/files")
    assert_too_large(upload)
    # It stopped reading within a chunk of the limit, rather than buffering the whole body.
    assert MAX_UPLOAD_BYTES < upload.bytes_read <= MAX_UPLOAD_BYTES + 2 * CHUNK


@pytest.mark.usefixtures("nothing_stored")
def test_oversize_upload_through_the_client(team: Client) -> None:
    """Just over the limit, so the declared length alone does not give it away."""

    def chunked() -> Iterator[bytes]:
        boundary_head, tail = multipart_parts(MAX_UPLOAD_BYTES + 1, "b0undary")
        yield boundary_head
        yield b"x" * (MAX_UPLOAD_BYTES + 1)
        yield tail

    content_type = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    honest = team.post(
        "/v1/files",
        files={"file": ("big.bin", b"x" * (MAX_UPLOAD_BYTES + 1))},
        data={"purpose": "dataset"},
    )
    assert error_of(honest, 413)["code"] == "file_too_large"
    streamed = team.post("/v1/files", content=chunked(), headers=content_type)
    assert error_of(streamed, 413)["code"] == "file_too_large"


@pytest.mark.parametrize(
    ("data", "files", "param"),
    [
        ({}, {"file": ("a.csv", b"a,label\n1,0\n")}, "purpose"),
        ({"purpose": "model"}, {"file": ("a.csv", b"a,label\n1,0\n")}, "purpose"),
        ({"purpose": "dataset"}, None, "file"),
    ],
    ids=["no-purpose", "unknown-purpose", "no-file"],
)
@pytest.mark.usefixtures("nothing_stored")
def test_incomplete_upload_form_is_422(
    team: Client, data: dict[str, str], files: dict | None, param: str
) -> None:
    if files is None:  # a multipart form with no file part
        files = {"other": ("x.txt", b"not the file")}
    error = error_of(team.post("/v1/files", data=data, files=files), 422)
    assert error["code"] == "invalid_request" and error["param"] == param


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"purpose": "dataset"}'),
        ("multipart/form-data", b"--x\r\n\r\n--x--\r\n"),  # no boundary
        ("multipart/form-data; boundary=x", b"--x\r\nNone--x--\r\n"),  # found by the fuzz
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n"),
    ],
    ids=["json", "no-boundary", "bad-part-headers", "cut-short"],
)
@pytest.mark.usefixtures("nothing_stored")
def test_malformed_upload_body_is_422(team: Client, content_type: str, body: bytes) -> None:
    response = team.post("/v1/files", content=body, headers={"Content-Type": content_type})
    error = error_of(response, 422)
    assert error["code"] == "invalid_request" and error["param"] == "file"


@pytest.mark.usefixtures("nothing_stored")
def test_two_file_parts_are_422(team: Client) -> None:
    files = [("file", ("a.csv", b"a,label\n1,0\n")), ("file", ("b.csv", b"a,label\n1,0\n"))]
    response = team.post("/v1/files", data={"purpose": "dataset"}, files=files)
    error = error_of(response, 422)
    assert error["code"] == "invalid_request" and error["param"] == "file"


# --- the upload check runs in a bounded process of its own (issue 11) --------------------------


def _torchscript_with_slow_code(tmp_path: Path) -> bytes:
    """A TorchScript archive whose code takes seconds of CPU to parse: nothing a real model has,
    and nothing the checker's own clock looks at while Python's parser runs."""
    import torch

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.save(torch.jit.script(Tiny()), tmp_path / "ts.pt")
    slow = b"_ = ((((((((((1))))))))))\n" * 250_000  # ~6.5 MB, well under the upload limit
    with (
        zipfile.ZipFile(tmp_path / "ts.pt") as zin,
        zipfile.ZipFile(tmp_path / "slow.pt", "w") as zout,
    ):
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr("ts/code/__torch__/slow.py", slow)
    return (tmp_path / "slow.pt").read_bytes()


@pytest.fixture
def check_seconds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from app.config import get_settings

    monkeypatch.setenv("DISTILL_UPLOAD_CHECK_SECONDS", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("DISTILL_UPLOAD_CHECK_SECONDS")
    get_settings.cache_clear()


@pytest.mark.usefixtures("nothing_stored", "check_seconds")
def test_a_check_over_its_cpu_budget_is_refused_while_the_api_answers(
    team: Client, tmp_path: Path
) -> None:
    body = _torchscript_with_slow_code(tmp_path)
    answer: dict[str, Any] = {}

    def send() -> None:
        answer["response"] = team.post(
            "/v1/files", files={"file": ("slow.pt", body)}, data={"purpose": "teacher"}
        )

    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    while sender.is_alive() and time.monotonic() - started < 0.5:
        time.sleep(0.05)
    assert sender.is_alive(), "the check should still be running"
    assert team.get("/v1/files").status_code == 200  # answered while the check runs
    sender.join(timeout=60)
    error = error_of(answer["response"], 422)
    assert error["code"] == "unsafe_file" and error["param"] == "file", error
    assert "s of CPU time" in error["message"], error  # the kernel stopped it, not its clock


@pytest.mark.usefixtures("nothing_stored")
def test_a_small_bomb_is_refused_quickly(team: Client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/data.pkl", b"\x80\x02" + b"N0" * 20_000_000 + b"}.")
    response = team.post(
        "/v1/files", files={"file": ("bomb.pt", buffer.getvalue())}, data={"purpose": "teacher"}
    )
    error = error_of(response, 422)
    assert error["code"] == "unsafe_file" and "archive bomb" in error["message"], error


def test_an_accepted_upload_goes_through_the_checking_process(team: Client) -> None:
    csv = b"a,b,label\n1,2,0\n3,4,1\n"
    response = team.post("/v1/files", files={"file": ("d.csv", csv)}, data={"purpose": "dataset"})
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "csv"
    meta = response.json()["meta"]  # what detection recorded, shown as it is stored
    assert (meta["has_labels"], meta["label_kind"], meta["num_classes"]) == (True, "class", 2)
    assert team.get(f"/v1/files/{response.json()['id']}").json()["meta"] == meta


def _arrays(kind: str, y: np.ndarray) -> bytes:
    x = np.zeros((len(y), 2), dtype=np.float32)
    if kind == "safetensors":
        return safetensors.numpy.save({"x": x, "y": y})
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


BAD_LABELS = {
    "csv-beyond-int64": ("d.csv", b"a,label\n1,0\n2,99999999999999999999\n", "Line 3"),
    "csv-beyond-int32": ("d.csv", b"a,label\n1,2147483648\n", "from 0 to 2147483647"),
    "jsonl-1e30": ("d.jsonl", b'{"text": "a", "label": 1' + b"0" * 30 + b"}\n", "Line 1"),
    "jsonl-fraction": ("d.jsonl", b'{"text": "a", "label": 1.5}\n', "an integer 0 or more"),
    "jsonl-negative": ("d.jsonl", b'{"text": "a", "label": -1}\n', "an integer 0 or more"),
    "jsonl-lone-surrogate": (
        "d.jsonl",
        b'{"text": "ok", "label": 0}\n{"text": "a \\ud800 b", "label": 1}\n',
        "Line 2",
    ),
    "safetensors-u64": (
        "d.safetensors",
        _arrays("safetensors", np.array([0, 1], dtype=np.uint64)),
        "uint64",
    ),
    "safetensors-u32": (
        "d.safetensors",
        _arrays("safetensors", np.array([0, 1], dtype=np.uint32)),
        "uint32",
    ),
    "safetensors-u16": (
        "d.safetensors",
        _arrays("safetensors", np.array([0, 1], dtype=np.uint16)),
        "uint16",
    ),
    "safetensors-huge-id": (
        "d.safetensors",
        _arrays("safetensors", np.array([0, 2**40], dtype=np.int64)),
        "from 0 to 2147483647",
    ),
    "npz-u64": ("d.npz", _arrays("npz", np.array([0, 1], dtype=np.uint64)), "uint64"),
}


@pytest.mark.parametrize(("name", "content", "message"), BAD_LABELS.values(), ids=BAD_LABELS)
@pytest.mark.usefixtures("nothing_stored")
def test_labels_training_could_not_read_are_refused_at_upload(
    team: Client, name: str, content: bytes, message: str
) -> None:
    response = team.post("/v1/files", files={"file": (name, content)}, data={"purpose": "dataset"})
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsupported_format", "file")
    assert message in error["message"], error["message"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", b"a,label\n1,0\n2,2147483647\n"),
        ("d.jsonl", '{"text": "caf\u00e9 \U0001f600", "label": 2147483647}\n'.encode()),
        ("d.safetensors", _arrays("safetensors", np.array([0, 1], dtype=np.uint8))),
        ("d.npz", _arrays("npz", np.array([0, 2**31 - 1], dtype=np.int64))),
    ],
    ids=["csv", "jsonl", "safetensors-u8", "npz-int64"],
)
def test_labels_at_the_edge_of_the_rules_are_taken(team: Client, name: str, content: bytes) -> None:
    response = team.post("/v1/files", files={"file": (name, content)}, data={"purpose": "dataset"})
    assert response.status_code == 201, response.text
    assert team.delete(f"/v1/files/{response.json()['id']}").status_code == 204
