"""What the CLI prints and reads, from plain data: no server needed."""

from pathlib import Path

from rich.console import Console

from distillery.cli.jobs import load_spec
from distillery.display import queue_tables
from distillery.types import QueueSnapshot


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


def test_a_yaml_spec_reads_exponents_as_numbers(tmp_path: Path) -> None:
    # The API takes numbers only as JSON numbers; PyYAML alone reads 1e-3 as a string.
    path = tmp_path / "spec.yaml"
    path.write_text("hyperparameters:\n  learning_rate: 1e-3\n  temperature: 2.5E+0\n  epochs: 3\n")
    spec = load_spec(path)
    assert spec["hyperparameters"] == {"learning_rate": 0.001, "temperature": 2.5, "epochs": 3}
