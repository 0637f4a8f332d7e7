"""What the CLI prints, from plain data: no server needed."""

from rich.console import Console

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
