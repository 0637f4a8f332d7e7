"""Which temporary uploads an API process removes when it starts (app/storage/uploads.py): those
whose writer it can see is gone, and any not written to for a day; never a live one's."""

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import storage
from app.config import get_settings
from app.storage import uploads
from app.storage.uploads import STALE_SECONDS, new_upload_path, remove_left_behind


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DISTILL_STORAGE_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield storage.uploads_dir()
    get_settings.cache_clear()


def upload(folder: Path, name: str, age: float = 0) -> Path:
    path = folder / name
    path.write_bytes(b"part of an upload")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_an_api_process_removes_only_the_uploads_nobody_will_finish(tmp_dir: Path) -> None:
    here = uploads._here()
    dead = subprocess.Popen(["true"])
    dead.wait()  # gone, and reaped
    live = subprocess.Popen(["sleep", "60"])
    day = STALE_SECONDS
    try:
        mine = new_upload_path()
        mine.write_bytes(b"in flight")
        kept = [
            mine,  # this process's, in flight
            upload(tmp_dir, f"{here}_{live.pid}_0a1b2c3d_1"),  # another live process's
            upload(tmp_dir, f"{here}_{live.pid}_0a1b2c3d_2", age=day - 60),
            upload(tmp_dir, "other-host_4026531836_7_0a1b2c3d_3"),  # a process out of sight
            upload(tmp_dir, f"{socket.gethostname()}_1_{dead.pid}_0a1b2c3d_4"),  # other namespace
            upload(tmp_dir, "9f0c2e5a41b84d7c8e6f0a1b2c3d4e5f"),  # named by an earlier release
        ]
        removed = [
            upload(tmp_dir, f"{here}_{dead.pid}_0a1b2c3d_5"),  # its process is gone
            upload(tmp_dir, f"{here}_{os.getpid()}_0a1b2c3d_6"),  # this pid's earlier run
            upload(tmp_dir, "other-host_4026531836_7_0a1b2c3d_7", age=day + 60),  # a day old
            upload(tmp_dir, "0b1c2e5a41b84d7c8e6f0a1b2c3d4e5f", age=day + 60),
            upload(tmp_dir, f"{here}_{live.pid}_0a1b2c3d_8", age=day + 60),  # live, but idle
        ]
        assert remove_left_behind() == len(removed)
        assert sorted(tmp_dir.iterdir()) == sorted(kept)
    finally:
        live.kill()
        live.wait()
