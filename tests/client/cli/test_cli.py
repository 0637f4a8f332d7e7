"""The ``distill`` client commands end to end, in-process (typer's CliRunner) against the real
server and worker."""

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner, Result

from app.cli import cli
from distillery import Client, config
from tests.client.conftest import SMALL_JOB, Digits, Server, new_team
from tests.helpers.teachers import accuracy


def distill(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert "Traceback" not in result.output + result.stderr, result.output + result.stderr
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def team_key(admin: Client) -> str:
    return new_team(admin)[1]


@pytest.fixture
def logged_in(server: Server, team_key: str) -> str:
    result = distill("login", "--url", server.url, "--key", team_key)
    assert result.exit_code == 0, result.stderr
    return team_key


def test_login_checks_the_key_and_saves_it_owner_only(
    server: Server, team_key: str, client_env: Path
) -> None:
    wrong = distill("login", "--url", server.url, "--key", "dk_wrong")
    assert wrong.exit_code == 1
    assert "This API key is unknown or revoked. (unauthorized)" in wrong.stderr
    assert not config.config_path().exists()

    # The key asked for, hidden, when not given.
    result = distill("login", "--url", server.url + "/", input=team_key + "\n")
    assert result.exit_code == 0, result.stderr
    assert team_key not in result.stdout
    path = client_env / "distillery" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.load_saved() == config.Saved(url=server.url, api_key=team_key)
    assert "team key" in result.stdout

    assert as_json(distill("logout", "--json")) == {"removed": True, "config": str(path)}
    assert not path.exists()


def test_files_commands(logged_in: str, digits: Digits) -> None:
    uploaded = as_json(
        distill("files", "upload", str(digits.teacher), "--purpose", "teacher", "--json")
    )
    assert uploaded["format"] == "torchscript"
    assert [f["id"] for f in as_json(distill("files", "list", "--json"))] == [uploaded["id"]]
    assert as_json(distill("files", "show", uploaded["id"], "--json")) == uploaded
    shown = distill("files", "show", uploaded["id"])
    assert uploaded["id"] in shown.stdout and "torchscript" in shown.stdout
    as_json(distill("files", "delete", uploaded["id"], "--json"))
    assert as_json(distill("files", "list", "--json")) == []


def test_errors_print_the_contract_message_without_a_traceback(
    logged_in: str, tmp_path: Path
) -> None:
    missing = distill("jobs", "show", "job_nope")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "No job job_nope." in missing.stderr and "(not_found)" in missing.stderr

    as_machine = distill("jobs", "show", "job_nope", "--json")
    assert as_machine.exit_code == 1 and as_machine.stdout == ""
    assert json.loads(as_machine.stderr)["error"] == {
        "code": "not_found",
        "message": "No job job_nope.",
    }

    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {
                "teacher": {"file_id": "f"},
                "data": {"train_file_id": "f"},
                "hyperparameters": {"epochs": 0},
            }
        )
    )
    invalid = distill("jobs", "submit", str(spec))
    assert invalid.exit_code == 1
    assert "hyperparameters.epochs:" in invalid.stderr and "(invalid_request)" in invalid.stderr

    spec.write_text('{"teacher": {"path": "nowhere.pt"}, "data": {"train_file_id": "f"}}')
    no_file = distill("jobs", "submit", str(spec))
    assert no_file.exit_code == 1 and "teacher.path: no such file" in no_file.stderr


def test_submit_refuses_before_uploading_anything(
    logged_in: str, digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert distill("jobs", "list").stdout.strip() == "No jobs."
    assert distill("files", "list").stdout.strip() == "No files."

    # A misspelt field, named with the one meant.
    typo = write_spec(tmp_path, digits, hyperparamters={"epochs": 2})
    result = distill("jobs", "submit", str(typo))
    assert result.exit_code == 1
    assert '"hyperparamters" is not a field' in result.stderr
    assert 'did you mean "hyperparameters"?' in result.stderr

    # An output folder holding an earlier student: refused unless --force.
    spec = write_spec(tmp_path, digits)
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "student.pt").write_bytes(b"an earlier student")
    taken = distill("jobs", "submit", str(spec), "--wait", "-o", "student")
    assert taken.exit_code == 1 and "(output_not_empty)" in taken.stderr
    assert "student already holds student.pt" in taken.stderr and "--force" in taken.stderr
    assert (tmp_path / "student" / "student.pt").read_bytes() == b"an earlier student"

    assert as_json(distill("files", "list", "--json")) == []  # nothing was uploaded
    assert as_json(distill("jobs", "list", "--json")) == []  # nor submitted


def test_no_server_is_an_error_message(client_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("DISTILL_API_KEY", "dk_any")
    result = distill("queue")
    assert result.exit_code == 1 and "Cannot reach the server" in result.stderr


def write_spec(folder: Path, digits: Digits, **over: Any) -> Path:
    """A YAML spec naming local files relative to its own folder."""
    import yaml

    for source in (digits.teacher, digits.train, digits.validation, digits.narrow):
        (folder / source.name).write_bytes(source.read_bytes())
    spec = {
        "name": "cli-test",
        "teacher": {"path": digits.teacher.name},
        "data": {"train_path": digits.train.name, "validation_path": digits.validation.name},
        **SMALL_JOB,
        **over,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_submit_wait_downloads_a_student_that_loads(
    logged_in: str,
    digits: Digits,
    tmp_path: Path,
    worker_process: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = write_spec(tmp_path / "spec", digits) if (tmp_path / "spec").mkdir() is None else None
    assert spec is not None
    monkeypatch.chdir(tmp_path)  # the spec's paths are read from its folder, not the cwd
    result = distill("jobs", "submit", str(spec), "--wait", "--json", "--output", "out")
    job = as_json(result)
    assert job["status"] == "succeeded" and job["name"] == "cli-test"
    downloaded = {Path(p).name: Path(p) for p in job["downloaded"]}
    assert {"student.pt", "student.safetensors", "metrics.json"} <= set(downloaded)
    assert downloaded["student.pt"].parent == Path("out")
    student = torch.jit.load(str(downloaded["student.pt"])).eval()
    assert accuracy(student, digits.trained.x_test, digits.trained.y_test) > 0.5

    shown = as_json(distill("jobs", "show", job["id"], "--json"))
    assert shown["status"] == "succeeded" and shown["curve"] and shown["artifacts"]
    assert job["id"] in [j["id"] for j in as_json(distill("jobs", "list", "--json"))]

    # Human output: the watch replays a finished job and exits 0; a download is verified.
    watched = distill("jobs", "watch", job["id"])
    assert watched.exit_code == 0 and "succeeded" in watched.stdout
    one = distill("jobs", "download", job["id"], "--name", "student.json", "-o", "again")
    assert one.exit_code == 0 and "sha256 ok" in one.stdout
    assert (tmp_path / "again" / "student.json").read_bytes() == (
        tmp_path / "out" / "student.json"
    ).read_bytes()
    # Into its own folder again: the job's own files, checked and kept. Into another job's: no.
    assert distill("jobs", "download", job["id"], "-o", "out").exit_code == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "student.pt").write_bytes(b"another job's student")
    refused = distill("jobs", "download", job["id"], "-o", "other")
    assert refused.exit_code == 1 and "(output_not_empty)" in refused.stderr
    assert distill("jobs", "download", job["id"], "-o", "other", "--force").exit_code == 0


def test_watch_exits_with_the_jobs_outcome(
    admin: Client,
    server: Server,
    digits: Digits,
    tmp_path: Path,
    worker_process: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTILL_URL", server.url)
    monkeypatch.chdir(tmp_path)
    # Cancelled: a job of a paused team, cancelled while it waits.
    monkeypatch.setenv("DISTILL_API_KEY", new_team(admin, max_running_jobs=0)[1])
    spec = write_spec(tmp_path, digits)
    queued = as_json(distill("jobs", "submit", str(spec), "--json"))
    assert queued["status"] == "queued"
    assert as_json(distill("jobs", "cancel", queued["id"], "--json"))["status"] == "cancelled"
    watched = distill("jobs", "watch", queued["id"], "--json")
    assert watched.exit_code == 4
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines[-1]["object"] == "job" and lines[-1]["status"] == "cancelled"
    assert [e["data"]["status"] for e in lines[:-1] if e["type"] == "status"] == [
        "queued",
        "cancelled",
    ]

    # Failed: 10 features for a teacher that takes 64.
    monkeypatch.setenv("DISTILL_API_KEY", new_team(admin)[1])
    bad = write_spec(tmp_path, digits, data={"train_path": digits.narrow.name})
    result = distill("jobs", "submit", str(bad), "--wait")
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "failed" in result.stdout


def test_queue_shows_workers_and_teams(logged_in: str, worker_process: object) -> None:
    snapshot = as_json(distill("queue", "--json"))
    assert snapshot["workers"] and snapshot["teams"]
    shown = distill("queue")
    assert shown.exit_code == 0 and "Workers" in shown.stdout and "Teams" in shown.stdout
