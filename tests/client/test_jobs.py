"""A real job, trained by a real worker: following it, its results, and its downloads."""

import hashlib
from pathlib import Path

import pytest
import torch

from distillery import ChecksumMismatchError, Client, Event, Job, MetricPoint
from tests.client.conftest import Digits, Finished
from tests.client.proxy import FaultyProxy
from tests.helpers.teachers import accuracy


def test_wait_follows_the_job_to_its_end(finished: Finished) -> None:
    job = finished.job
    assert isinstance(job, Job) and job.status == "succeeded", job.error
    assert finished.job_before_wait.status == "queued"
    assert job.spec["teacher"]["file_id"].startswith("file_")  # distil() uploaded the teacher
    assert job.metrics is not None and 0.5 < job.metrics["student_accuracy"] <= 1.0

    events = finished.events
    assert all(isinstance(e, Event) for e in events)
    statuses = [e.status for e in events if e.type == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    progress = [e.data for e in events if e.type == "progress" and e.data]
    assert progress and progress[-1]["epoch"] == 2 and progress[-1]["epochs"] == 2
    assert [e.id for e in events] == sorted(e.id for e in events)

    # After the end, the stream replays everything and stops; ``after`` skips what was seen.
    jobs = finished.client.jobs
    assert [e.id for e in jobs.events(job.id)] == [e.id for e in events]
    assert [e.id for e in jobs.events(job.id, after=events[1].id)] == [e.id for e in events[2:]]
    listed = list(finished.client.jobs.events(job.id, follow=False))
    assert [e.id for e in listed] == [e.id for e in events]


def test_event_stream_reconnects_after_the_last_event_seen(
    finished: Finished, proxy: FaultyProxy
) -> None:
    events = finished.events
    cut = len(events[0].model_dump_json()) + len(events[1].model_dump_json()) + 200
    proxy.once("GET", f"/v1/jobs/{finished.job.id}/events", "truncate", keep_bytes=cut)
    with Client(proxy.url, finished.client.api_key) as client:
        again = list(client.jobs.events(finished.job.id))
    assert [e.id for e in again] == [e.id for e in events]  # none lost, none twice
    retries = proxy.requests("GET", f"/v1/jobs/{finished.job.id}/events")
    assert len(retries) == 2
    assert retries[1].headers["last-event-id"] in {e.id for e in events[:3]}


def test_metrics_and_artifacts(finished: Finished) -> None:
    curve = finished.client.jobs.metrics(finished.job.id)
    assert curve and all(isinstance(p, MetricPoint) for p in curve)
    assert [p.step for p in curve] == sorted(p.step for p in curve)
    names = {a.name for a in finished.client.jobs.artifacts(finished.job.id)}
    assert {"student.pt", "student.safetensors", "student.json", "metrics.json"} <= names


def test_download_all_is_verified_and_the_student_loads(
    finished: Finished, digits: Digits, tmp_path: Path
) -> None:
    paths = finished.client.jobs.download_all(finished.job.id, tmp_path / "student")
    listing = {a.name: a for a in finished.client.jobs.artifacts(finished.job.id)}
    assert {p.name for p in paths} == set(listing)
    for path in paths:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listing[path.name].sha256
    assert not list((tmp_path / "student").glob("*.part"))
    student = torch.jit.load(str(tmp_path / "student" / "student.pt")).eval()
    assert accuracy(student, digits.trained.x_test, digits.trained.y_test) > 0.5


def artifact_bytes(finished: Finished, name: str) -> bytes:
    return finished.client._transport.request(
        "GET", f"/v1/jobs/{finished.job.id}/artifacts/{name}"
    ).content


def test_a_partial_download_resumes_with_range(
    finished: Finished, proxy: FaultyProxy, tmp_path: Path
) -> None:
    whole = artifact_bytes(finished, "student.safetensors")
    dest = tmp_path / "student.safetensors"
    (tmp_path / "student.safetensors.part").write_bytes(whole[: len(whole) // 3])

    with Client(proxy.url, finished.client.api_key) as client:
        assert client.jobs.download(finished.job.id, "student.safetensors", tmp_path) == dest
    assert dest.read_bytes() == whole
    assert not (tmp_path / "student.safetensors.part").exists()
    (get,) = proxy.requests("GET", f"/v1/jobs/{finished.job.id}/artifacts/")
    assert get.headers["range"] == f"bytes={len(whole) // 3}-" and get.status == 206


def test_a_download_that_breaks_off_resumes_in_the_same_call(
    finished: Finished, proxy: FaultyProxy, tmp_path: Path
) -> None:
    whole = artifact_bytes(finished, "student.pt")
    url = f"/v1/jobs/{finished.job.id}/artifacts/student.pt"
    proxy.once("GET", url, "truncate", keep_bytes=len(whole) // 2)
    with Client(proxy.url, finished.client.api_key) as client:
        path = client.jobs.download(finished.job.id, "student.pt", tmp_path / "s.pt")
    assert path.read_bytes() == whole
    first, second = proxy.requests("GET", url)
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={len(whole) // 2}-" and second.status == 206


@pytest.mark.parametrize("corrupt", ["prefix", "whole"])
def test_a_corrupted_partial_raises_and_leaves_nothing(
    finished: Finished, tmp_path: Path, corrupt: str
) -> None:
    whole = artifact_bytes(finished, "student.safetensors")
    size = len(whole) if corrupt == "whole" else len(whole) // 2
    part = tmp_path / "student.safetensors.part"
    part.write_bytes(bytes(b ^ 0xFF for b in whole[:size]))
    with pytest.raises(ChecksumMismatchError) as raised:
        finished.client.jobs.download(finished.job.id, "student.safetensors", tmp_path)
    assert raised.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []
    # Nothing kept, so the next try starts afresh and succeeds.
    path = finished.client.jobs.download(finished.job.id, "student.safetensors", tmp_path)
    assert path.read_bytes() == whole
