"""``GET /v1/queue`` over HTTP: every team's counts, but another team's name only for the admin
key or where the operator sets DISTILL_QUEUE_SHOWS_TEAM_NAMES."""

from collections.abc import Iterator

import pytest

from app.config import get_settings
from tests.conftest import Client, make_team


@pytest.fixture
def names_shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DISTILL_QUEUE_SHOWS_TEAM_NAMES", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("DISTILL_QUEUE_SHOWS_TEAM_NAMES")
    get_settings.cache_clear()


def names(client: Client) -> dict[str, str | None]:
    response = client.get("/v1/queue")
    assert response.status_code == 200, response.text
    return {row["team_id"]: row["name"] for row in response.json()["teams"]}


def team_name(admin: Client, team_id: str) -> str:
    teams = admin.get("/v1/teams", params={"limit": 100}).json()["data"]
    return next(t["name"] for t in teams if t["id"] == team_id)


def test_a_team_sees_its_own_name_and_only_counts_of_others(admin: Client) -> None:
    mine, other = make_team(admin), make_team(admin)
    seen = names(mine)
    assert seen[mine.team_id] == team_name(admin, mine.team_id)
    assert seen[other.team_id] is None
    assert all(name is None for team_id, name in seen.items() if team_id != mine.team_id)
    assert team_name(admin, other.team_id) not in mine.get("/v1/queue").text


def test_the_admin_key_sees_every_name(admin: Client) -> None:
    mine, other = make_team(admin), make_team(admin)
    seen = names(admin)
    assert seen[mine.team_id] == team_name(admin, mine.team_id)
    assert seen[other.team_id] == team_name(admin, other.team_id)
    assert None not in seen.values()


@pytest.mark.usefixtures("names_shown")
def test_the_operator_may_show_every_name_to_every_team(admin: Client) -> None:
    mine, other = make_team(admin), make_team(admin)
    assert names(mine)[other.team_id] == team_name(admin, other.team_id)
