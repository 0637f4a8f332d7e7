"""The client on a real server: typed results, paging, errors in the contract's words."""

import hashlib
import io

import numpy as np
import pytest

from distillery import (
    AuthenticationError,
    Client,
    ConflictError,
    DistilleryError,
    File,
    InvalidSpecError,
    Job,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableError,
    WaitTimeoutError,
)
from tests.client.conftest import SMALL_JOB, Digits, Server, new_team


def small_dataset(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    np.savez(buffer, x=rng.random((4, 3), dtype=np.float32), y=np.arange(4, dtype=np.int64) % 2)
    return buffer.getvalue()


def test_files_are_typed_and_round_trip(team: Client, digits: Digits) -> None:
    teacher = team.files.upload(digits.teacher, "teacher")
    assert isinstance(teacher, File)
    assert teacher.id.startswith("file_") and teacher.format == "torchscript"
    assert teacher.sha256 == hashlib.sha256(digits.teacher.read_bytes()).hexdigest()
    assert teacher.filename == "teacher.pt" and teacher.purpose == "teacher"
    assert team.files.get(teacher.id) == teacher
    assert team.files.content(teacher.id) == digits.teacher.read_bytes()

    with digits.train.open("rb") as f:  # a file object, as well as a path or bytes
        data = team.files.upload(f, "dataset")
    assert data.format == "npz" and data.filename == "train.npz"
    assert [f.id for f in team.files.list()] == [data.id, teacher.id]
    assert [f.id for f in team.files.list(purpose="teacher")] == [teacher.id]

    team.files.delete(data.id)
    with pytest.raises(NotFoundError):
        team.files.get(data.id)


def test_a_file_the_team_already_has_is_reused_not_sent_again(
    admin: Client, paused_team: Client, server: Server, digits: Digits
) -> None:
    spec = {"teacher": {"path": str(digits.teacher)}, "data": {"train_path": str(digits.train)}}
    seen: list[tuple[str, bool]] = []
    first = paused_team.jobs.create(
        spec, on_upload=lambda p, f, reused: seen.append((f.id, reused))
    )
    again = paused_team.jobs.create(
        spec, on_upload=lambda p, f, reused: seen.append((f.id, reused))
    )
    assert again.spec["teacher"] == first.spec["teacher"]
    assert again.spec["data"]["train_file_id"] == first.spec["data"]["train_file_id"]
    assert [reused for _, reused in seen] == [False, False, True, True]
    assert len(list(paused_team.files.list())) == 2
    # Asked to, it uploads anyway.
    paused_team.jobs.create(spec, reuse_uploads=False)
    assert len(list(paused_team.files.list())) == 4

    # The same bytes in another team are that team's own: never found from here.
    with Client(server.url, new_team(admin)[1]) as other:
        assert other.files.find(digits.teacher, "teacher") is None
        # The purpose is part of the match.
        assert paused_team.files.find(digits.teacher, "dataset") is None

    with pytest.raises(UnprocessableError) as bad:
        paused_team._transport.request("GET", "/v1/files", params={"sha256": "nothex"})
    assert bad.value.param == "sha256"


def test_lists_walk_every_page(team: Client) -> None:
    uploaded = [
        team.files.upload(small_dataset(i), "dataset", filename=f"{i}.npz") for i in range(5)
    ]
    newest_first = [f.id for f in reversed(uploaded)]
    assert [f.id for f in team.files.list(page_size=2)] == newest_first
    assert [f.id for f in team.files.list(page_size=2, limit=3)] == newest_first[:3]


def test_jobs_list_pages_filters_and_cancels(paused_team: Client, digits: Digits) -> None:
    data = {"train_path": str(digits.train), "validation_path": str(digits.train)}
    first = paused_team.jobs.create({"teacher": {"path": str(digits.teacher)}, "data": data})
    # The local paths were uploaded first, the one named twice once.
    assert len(list(paused_team.files.list())) == 2
    assert first.spec["data"]["train_file_id"] == first.spec["data"]["validation_file_id"]
    spec = {"teacher": first.spec["teacher"], "data": first.spec["data"]}
    jobs = [first] + [paused_team.jobs.create(spec, name=f"q{i}", **SMALL_JOB) for i in (1, 2)]
    assert all(isinstance(j, Job) and j.status == "queued" for j in jobs)
    assert jobs[1].spec["hyperparameters"]["epochs"] == 2  # merged over the defaults
    assert jobs[1].spec["hyperparameters"]["batch_size"] == 32
    assert jobs[0].queue_position is not None

    listed = list(paused_team.jobs.list(page_size=2))
    assert [j.id for j in listed] == [j.id for j in reversed(jobs)]

    cancelled = paused_team.jobs.cancel(jobs[0].id)
    assert cancelled.status == "cancelled" and cancelled.is_final
    assert [j.id for j in paused_team.jobs.list(status="cancelled")] == [jobs[0].id]
    assert {j.id for j in paused_team.jobs.list(status="queued")} == {jobs[1].id, jobs[2].id}
    with pytest.raises(ConflictError) as raised:
        paused_team.jobs.cancel(jobs[0].id)
    assert raised.value.code == "job_finished" and raised.value.status_code == 409

    # A job that cannot start before the timeout.
    with pytest.raises(WaitTimeoutError):
        paused_team.jobs.wait(jobs[1].id, timeout=0.5)


def test_errors_carry_the_contract_body(team: Client, server: Server) -> None:
    with pytest.raises(NotFoundError) as missing:
        team.jobs.get("job_doesnotexist")
    error = missing.value
    assert (error.status_code, error.code, error.param) == (404, "not_found", "job_id")
    assert str(error) == error.message == "No job job_doesnotexist."

    with pytest.raises(UnprocessableError) as invalid:
        team.jobs.create(
            {"teacher": {"file_id": "file_x"}, "data": {"train_file_id": "file_y"}},
            hyperparameters={"epochs": 0},
        )
    assert isinstance(invalid.value, InvalidSpecError)  # found before anything was sent
    assert invalid.value.code == "invalid_request"
    assert invalid.value.param == "hyperparameters.epochs"
    assert str(invalid.value).startswith("hyperparameters.epochs:")

    # A near miss of a key the client itself reads is named as it is (the server, which never
    # sees local paths, names the file id instead).
    with pytest.raises(InvalidSpecError) as typo:
        team.jobs.create({"teacher": {"file_id": "file_x"}, "data": {"train_pth": "train.npz"}})
    assert typo.value.param == "data.train_pth"
    assert 'did you mean "data.train_path"?' in str(typo.value)

    with pytest.raises(UnprocessableError) as unsupported:
        team.files.upload(b"not a teacher at all", "teacher", filename="x.bin")
    assert unsupported.value.code == "unsupported_format"

    with Client(server.url, "dk_not_a_key") as stranger, pytest.raises(AuthenticationError) as e:
        stranger.queue()
    assert (e.value.status_code, e.value.code) == (401, "unauthorized")
    assert str(e.value) == "This API key is unknown or revoked."
    assert isinstance(e.value, DistilleryError)

    with pytest.raises(PermissionDeniedError):
        list(team.teams.list())


def test_a_team_may_be_given_a_device_quota(admin: Client, server: Server) -> None:
    team = admin.teams.create("devices-" + server.url[-5:], max_running_devices=4)
    assert (team.max_running_jobs, team.max_running_devices) == (1, 4)
    plain = admin.teams.create("plain-" + server.url[-5:])
    assert plain.max_running_devices is None


def test_revoked_key_answers_401(admin: Client, server: Server) -> None:
    team = admin.teams.create("revoked-" + server.url[-5:], max_running_jobs=1)
    key = admin.keys.create(team.id, "short-lived")
    assert key.key and key.team_id == team.id
    with Client(server.url, key.key) as client:
        assert client.queue().teams
        admin.keys.revoke(key.id)
        with pytest.raises(AuthenticationError):
            client.queue()
