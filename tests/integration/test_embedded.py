"""`distill up` on embedded defaults: SQLite, kombu's filesystem broker and a real Celery worker
process, with nothing configured, in an empty directory."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster import free_port, wait_for
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env["DISTILL_TORCH_THREADS"] = "1"  # not a service setting: the worker shares two cores
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield base, proc, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_distill_up_runs_a_job_on_embedded_defaults(embedded, digits: Digits) -> None:
    base, proc, home = embedded
    key_file = home / "var" / "admin_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # readable by its owner only
    assert (home / "var" / "distill.db").exists()  # SQLite, not a server
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        ids = {}
        for name, path, purpose in (("teacher", digits.teacher, "teacher"),
                                    ("train", digits.train, "dataset")):  # fmt: skip
            with path.open("rb") as f:
                response = client.post("/v1/files", files={"file": f}, data={"purpose": purpose})
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        spec = {
            "teacher": {"file_id": ids["teacher"]},
            "student": {"hidden_sizes": [32]},
            "data": {"train_file_id": ids["train"]},
            "hyperparameters": {"epochs": 1},
        }
        job = client.post("/v1/jobs", json=spec).json()
        sse = {"Accept": "text/event-stream"}
        with client.stream(
            "GET", f"/v1/jobs/{job['id']}/events", headers=sse, timeout=120
        ) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert '"status":"succeeded"' in lines[-1], lines[-1]
        finished = client.get(f"/v1/jobs/{job['id']}").json()  # the ORM path, on SQLite
        assert finished["status"] == "succeeded" and finished["metrics"]["student_params"] > 0
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
        assert {"student.pt", "student.safetensors"} <= {a["name"] for a in artifacts}

    # Another terminal in the same folder: the client finds this port and key on its own.
    assert (home / "var" / "url").read_text().strip() == base
    listed = subprocess.run(
        [sys.executable, "-m", "app.cli", "jobs", "list", "--json"], cwd=home,
        env={**os.environ, **_client_env(home)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [job["id"]]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0  # stops cleanly, worker included
    assert not (home / "var" / "url").exists()  # no longer up: the client stops looking there


def _client_env(home: Path) -> dict[str, str]:
    """A shell with nothing set for the client: no DISTILL_* and no saved login."""
    clean = {k: "" for k in os.environ if k.startswith("DISTILL_")}
    return {**clean, "XDG_CONFIG_HOME": str(home / "config"), "PYTHONPATH": os.getcwd()}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_distill_up_stops_its_worker_on_a_signal(embedded, stop: signal.Signals) -> None:
    _, proc, home = embedded
    worker_pid = _announced_worker(home)
    proc.send_signal(stop)
    assert proc.wait(timeout=60) == 0
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left behind
        os.kill(worker_pid, 0)


def _announced_worker(home: Path) -> int:
    announced = (home / "up.log").read_text()
    return int(announced.split("(worker pid ")[1].split(")")[0])


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited: only unreaped


def _children(pid: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and int(stat[1]) == pid
    ]


def test_a_killed_distill_up_takes_its_worker_with_it(embedded) -> None:
    """SIGKILL runs no cleanup in ``distill up``: its Celery worker, and the worker's pool
    process, must not live on under PID 1 and keep taking jobs."""
    _, proc, home = embedded
    worker_pid = _announced_worker(home)
    pool = wait_for(lambda: _children(worker_pid), "the worker's pool process", timeout=120)
    try:
        proc.kill()
        proc.wait()
        wait_for(
            lambda: not any(_running(pid) for pid in (worker_pid, *pool)),
            "the worker and its pool process to exit",
            timeout=60,
        )
    finally:
        for pid in [worker_pid, *pool]:  # not left behind for the next tests, pass or fail
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_distill_serve_refuses_to_start_without_an_admin_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "DISTILL_ADMIN_KEY" in result.stdout + result.stderr
    assert not (tmp_path / "var").exists()  # nothing created
