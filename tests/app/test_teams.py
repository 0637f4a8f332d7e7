"""Teams, keys and authentication, against the real database."""

import secrets

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Client, make_team
from tests.helpers.api import error_of


def test_missing_and_unknown_keys_are_401(api: TestClient) -> None:
    assert error_of(api.get("/v1/jobs"), 401)["code"] == "unauthorized"
    response = api.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert error_of(response, response.status_code)["code"] == "unauthorized"


def test_admin_creates_team_and_key(admin: Client) -> None:
    created = admin.post("/v1/teams", json={"name": "vision-x", "max_running_jobs": 2})
    assert created.status_code == 201, created.text
    team = created.json()
    assert team["object"] == "team" and team["id"].startswith("team_")
    assert team["max_running_jobs"] == 2
    assert team["created_at"].endswith(("Z", "+00:00"))
    key = admin.post(f"/v1/teams/{team['id']}/keys", json={"name": "ci"})
    assert key.status_code == 201
    body = key.json()
    assert body["object"] == "api_key" and body["team_id"] == team["id"] and body["key"]
    listed = admin.get("/v1/teams", params={"limit": 100}).json()
    assert team["id"] in [t["id"] for t in listed["data"]]


def test_duplicate_team_name_is_409(admin: Client) -> None:
    assert admin.post("/v1/teams", json={"name": "dup-team"}).status_code == 201
    response = admin.post("/v1/teams", json={"name": "dup-team"})
    assert response.status_code == 409
    assert error_of(response, response.status_code)["param"] == "name"


def test_team_keys_cannot_call_admin_routes(team: Client) -> None:
    response = team.post("/v1/teams", json={"name": "sneaky"})
    assert response.status_code == 403
    assert error_of(response, response.status_code)["code"] == "forbidden"
    assert team.get("/v1/teams").status_code == 403


def test_revoked_key_is_401(admin: Client) -> None:
    member = make_team(admin)
    assert member.get("/v1/jobs").status_code == 200
    keys = admin.post(f"/v1/teams/{member.team_id}/keys", json={"name": "second"}).json()
    assert admin.delete(f"/v1/keys/{keys['id']}").status_code == 204
    revoked = Client(admin.api, keys["key"], member.team_id)
    assert revoked.get("/v1/jobs").status_code == 401
    assert member.get("/v1/jobs").status_code == 200  # the team's other key still works


def test_unknown_key_id_is_404(admin: Client) -> None:
    response = admin.delete("/v1/keys/key_missing")
    assert response.status_code == 404
    assert error_of(response, response.status_code)["code"] == "not_found"


def test_validation_error_names_the_field(admin: Client) -> None:
    response = admin.post("/v1/teams", json={"name": "ok-name", "max_running_jobs": -1})
    assert response.status_code == 422
    error = error_of(response, response.status_code)
    assert error["code"] == "invalid_request" and error["param"] == "max_running_jobs"


def test_a_nul_in_an_id_is_a_422_not_a_500(admin: Client, team: Client) -> None:
    for response in (
        team.get("/v1/jobs/job_%00x"),
        team.get("/v1/files/file_%00x"),
        team.post(
            "/v1/jobs", json={"teacher": {"file_id": "\u0000"}, "data": {"train_file_id": "f"}}
        ),
        admin.delete("/v1/keys/key_%00"),
    ):
        assert error_of(response, 422)["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_running_jobs": False}, "max_running_jobs"),
        ({"max_running_jobs": "3"}, "max_running_jobs"),
        ({"max_running_jobs": 2.0}, "max_running_jobs"),
        ({"max_running_devices": -1}, "max_running_devices"),
        ({"max_running_devices": "4"}, "max_running_devices"),
        ({"weight": 5e-324}, "weight"),
        ({"weight": 0.0009}, "weight"),
        ({"weight": 1000.5}, "weight"),
        ({"weight": "2"}, "weight"),
        ({"weight": True}, "weight"),
    ],
)
def test_team_quota_and_weight_take_numbers_in_range(admin: Client, body: dict, param: str) -> None:
    team_id = admin.post("/v1/teams", json={"name": f"strict-{secrets.token_hex(4)}"}).json()["id"]
    for response in (
        admin.patch(f"/v1/teams/{team_id}", json=body),
        admin.post("/v1/teams", json={"name": f"strict-{secrets.token_hex(4)}", **body}),
    ):
        error = error_of(response, 422)
        assert (error["code"], error["param"]) == ("invalid_request", param)


def test_team_weight_bounds_are_inclusive_and_integers_are_numbers(admin: Client) -> None:
    team_id = admin.post("/v1/teams", json={"name": f"strict-{secrets.token_hex(4)}"}).json()["id"]
    for weight in (0.001, 1000, 3):
        response = admin.patch(f"/v1/teams/{team_id}", json={"weight": weight})
        assert response.status_code == 200, response.text
        assert response.json()["weight"] == weight


def test_a_device_quota_is_set_kept_and_lifted(admin: Client) -> None:
    name = f"devices-{secrets.token_hex(4)}"
    created = admin.post("/v1/teams", json={"name": name, "max_running_devices": 4}).json()
    assert created["max_running_devices"] == 4
    team_id = created["id"]
    kept = admin.patch(f"/v1/teams/{team_id}", json={"max_running_jobs": 3}).json()
    assert (kept["max_running_jobs"], kept["max_running_devices"]) == (3, 4)  # left out: kept
    lifted = admin.patch(f"/v1/teams/{team_id}", json={"max_running_devices": None}).json()
    assert lifted["max_running_devices"] is None
    default = admin.post("/v1/teams", json={"name": f"{name}-b"}).json()
    assert default["max_running_devices"] is None  # no device limit beyond max_running_jobs
