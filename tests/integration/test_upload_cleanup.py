"""Temporary uploads across API restarts, with real ``distill serve`` processes sharing one
storage directory: a killed process's half-received upload is removed when the next API process
starts, and an upload that a live process is receiving is left alone."""

import contextlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ADMIN_KEY
from tests.integration.cluster import distill_serve, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOUNDARY = "held-upload"


def dataset() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, x=rng.random((64, 4), dtype=np.float32), y=np.arange(64) % 2)
    return buffer.getvalue()


class HeldUpload(threading.Thread):
    """POST /v1/files from a thread, the body held back half-way until ``finish()``."""

    def __init__(self, base: str, data: bytes):
        super().__init__(daemon=True)
        self.base, self.data = base, data
        self.released = threading.Event()
        self.response: httpx.Response | None = None

    def body(self) -> Iterator[bytes]:
        half = len(self.data) // 2
        yield (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\ndataset\r\n'
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="train.npz"\r\n\r\n'
        ).encode() + self.data[:half]
        self.released.wait(timeout=120)
        yield self.data[half:] + f"\r\n--{BOUNDARY}--\r\n".encode()

    def run(self) -> None:
        headers = {
            "Authorization": f"Bearer {ADMIN_KEY}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        }
        with contextlib.suppress(httpx.HTTPError):  # its server may be killed
            self.response = httpx.post(
                f"{self.base}/v1/files", content=self.body(), headers=headers, timeout=120
            )

    def finish(self) -> httpx.Response | None:
        self.released.set()
        self.join(timeout=120)
        return self.response


def receiving(uploads: Path, pid: int) -> list[Path]:
    """The temporary uploads that process ``pid`` is writing (their names carry its pid)."""
    return [p for p in uploads.iterdir() if p.name.rsplit("_", 3)[1:2] == [str(pid)]]


def test_an_api_start_removes_a_killed_process_upload_and_keeps_a_live_one(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, "DISTILL_STORAGE_DIR": str(tmp_path / "storage")}
    uploads = tmp_path / "storage" / "tmp"
    data = dataset()

    with distill_serve(env, tmp_path / "killed.log") as (base, killed):
        lost = HeldUpload(base, data)
        lost.start()
        (left,) = wait_for(lambda: receiving(uploads, killed.pid), "the upload on disk")
        killed.kill()
        killed.wait()
        lost.finish()
    assert left.exists()  # what a crash leaves

    with distill_serve(env, tmp_path / "live.log") as (base, live):
        assert not left.exists()  # removed as this one started: its writer is gone
        kept = HeldUpload(base, data)
        kept.start()
        (in_flight,) = wait_for(lambda: receiving(uploads, live.pid), "the upload on disk")
        with distill_serve(env, tmp_path / "another.log"):  # starts beside a live one
            assert in_flight.exists()
        response = kept.finish()
        assert response is not None and response.status_code == 201, response
    assert list(uploads.iterdir()) == []
