"""What the CLI prints and reads, from plain data: no server needed."""

import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from distillery.cli.jobs import load_spec
from distillery.display import eta, files_table, jobs_table, queue_tables
from distillery.types import Event, Job, QueueSnapshot


def test_the_queue_shows_another_teams_row_by_its_id_when_its_name_is_hidden() -> None:
    usage = {"running": 1, "queued": 2, "max_running_jobs": 1, "gpu_seconds_24h": 12.5}
    snapshot = QueueSnapshot.model_validate(
        {
            "workers": [],
            "running": [{"id": None, "team_id": "team_other", "status": "running"}],
            "queued": [],
            "teams": [
                {"team_id": "team_mine", "name": "vision", **usage},
                {"team_id": "team_other", "name": None, **usage},
            ],
        }
    )
    console = Console(width=200, record=True)
    for table in queue_tables(snapshot):
        console.print(table)
    shown = console.export_text()
    assert "vision" in shown and "team_other" in shown and "None" not in shown


def test_a_team_s_device_quota_is_shown_beside_its_job_quota() -> None:
    usage = {"running": 1, "queued": 0, "max_running_jobs": 2, "gpu_seconds_24h": 0.0}
    snapshot = QueueSnapshot.model_validate(
        {
            "workers": [],
            "running": [],
            "queued": [],
            "teams": [
                {"team_id": "team_a", "name": "wide", **usage, "running_devices": 2,
                 "max_running_devices": 4},
                {"team_id": "team_b", "name": "plain", **usage},
            ],
        }
    )  # fmt: skip
    console = Console(width=200, record=True)
    for table in queue_tables(snapshot):
        console.print(table)
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "│" in line
            and line.split()[1] in {"wide", "plain"}}  # fmt: skip
    assert "2 (4 devices)" in rows["wide"]
    assert "devices" not in rows["plain"]


def test_a_yaml_spec_reads_exponents_as_numbers(tmp_path: Path) -> None:
    # The API takes numbers only as JSON numbers; PyYAML alone reads 1e-3 as a string.
    path = tmp_path / "spec.yaml"
    path.write_text("hyperparameters:\n  learning_rate: 1e-3\n  temperature: 2.5E+0\n  epochs: 3\n")
    spec = load_spec(path)
    assert spec["hyperparameters"] == {"learning_rate": 0.001, "temperature": 2.5, "epochs": 3}


def shown(*renderables: object, width: int = 80) -> str:
    """What a terminal (or a pipe: rich gives it 80 columns) of ``width`` columns shows."""
    console = Console(width=width, record=True, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


JOB = {
    "id": "job_01jd0000000000000000000000",
    "team_id": "team_default",
    "created_at": "2024-05-01T10:03:04Z",
    "name": "a rather long job name that leaves little room",
}


def test_statuses_and_ids_are_never_cut_on_80_columns() -> None:
    jobs = [
        Job.model_validate({**JOB, "status": status, "progress": None})
        for status in ("succeeded", "cancelled", "queued")
    ]
    text = shown(jobs_table(jobs))
    for status in ("succeeded", "cancelled", "queued"):
        assert status in text, text
    assert JOB["id"] in text and "…" not in text


def test_empty_listings_say_so() -> None:
    assert shown(jobs_table([])).strip() == "No jobs."
    assert shown(files_table([])).strip() == "No files."
    empty = QueueSnapshot.model_validate({"workers": [], "running": [], "queued": [], "teams": []})
    lines = [line.strip() for line in shown(*queue_tables(empty)).splitlines()]
    assert lines == ["No workers.", "No running jobs.", "No queued jobs.", "No teams."]


def test_a_team_is_shown_by_its_name_in_every_table_and_cpu_time_as_cpu_seconds() -> None:
    usage = {"running": 1, "queued": 1, "max_running_jobs": 1, "gpu_seconds_24h": 12.5}
    worker = {
        "id": "wrk_1", "hostname": "box", "device": "cpu", "device_name": "", "status": "busy",
        "last_heartbeat": "2024-05-01T10:03:04Z",
    }  # fmt: skip
    entry = {"id": JOB["id"], "team_id": "team_default"}
    snapshot = QueueSnapshot.model_validate(
        {
            "workers": [worker],
            "running": [{**entry, "status": "running"}],
            "queued": [{**entry, "status": "queued", "queue_position": 1}],
            "teams": [{"team_id": "team_default", "name": "default", **usage}],
        }
    )
    text = shown(*queue_tables(snapshot), width=200)
    assert "team_default" not in text and text.count("default") == 3
    assert "CPU s (24 h)" in text and "GPU" not in text


def test_the_eta_is_an_estimate_and_the_last_step_is_not_the_end() -> None:
    assert eta(95.4, 10, 100) == "eta ~95s"
    assert eta(0.0, 100, 100) == "measuring"  # final measurements and artifacts come after
    assert eta(None, 1, 100) == ""


def test_an_event_prints_as_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    event = Event.model_validate(
        {
            "id": "evt_1", "created_at": "2024-05-01T12:03:04Z", "level": "info",
            "type": "progress", "message": "Student epoch 3/10, step 90/300.",
            "data": {"step": 90, "train_loss": 0.31234, "val_accuracy": 0.95},
        }
    )  # fmt: skip
    assert str(event) == (
        "12:03:04 info    Student epoch 3/10, step 90/300. train_loss=0.3123 val_accuracy=0.95"
    )


def test_a_language_model_job_shows_its_perplexities() -> None:
    from distillery.display import metrics_table

    job = Job.model_validate(
        {
            "id": "job_lm",
            "team_id": "team_a",
            "status": "succeeded",
            "spec": {"task": "causal_lm"},
            "created_at": "2026-12-06T12:00:00Z",
            "metrics": {
                "teacher_perplexity": 12.345,
                "student_perplexity": 20.5,
                "baseline_perplexity": 24.0,
                "token_agreement": 0.5,
                "teacher_cache": "hit",
            },
        }
    )
    console = Console(width=200, record=True)
    console.print(metrics_table(job))
    console.print(jobs_table([job]))
    shown = console.export_text()
    assert "12.35" in shown and "24.00" in shown and "50.00%" in shown and "hit" in shown
    assert "ppl 20.50" in shown
