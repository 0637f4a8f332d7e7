"""How the app answers what no route serves (a 405 names every method served at the path),
and how the schema documents the errors of the routes it has."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Client
from tests.helpers.api import error_of


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/v1/files/file_x", {"GET", "DELETE"}),
        ("delete", "/v1/jobs/job_x", {"GET", "PATCH"}),
        ("delete", "/v1/jobs", {"GET", "POST"}),
        ("post", "/v1/webhook_secret", {"GET"}),
        ("post", "/healthz", {"GET"}),
    ],
)
def test_405_allows_every_method_of_the_path(
    team: Client, method: str, path: str, allowed: set[str]
) -> None:
    response = getattr(team, method)(path)
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == allowed
    for other in allowed:
        assert getattr(team, other.lower())(path).status_code != 405, other


ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/v1/jobs", {"401", "404", "409", "422"}),
        ("get", "/v1/jobs/{job_id}", {"401", "404"}),
        ("patch", "/v1/jobs/{job_id}", {"401", "404", "409", "422"}),
        ("post", "/v1/jobs/{job_id}/cancel", {"401", "404", "409"}),
        ("get", "/v1/jobs/{job_id}/artifacts/{name}", {"401", "404", "416"}),
        ("post", "/v1/files", {"401", "413", "422"}),
        ("delete", "/v1/files/{file_id}", {"401", "404", "409"}),
        ("get", "/v1/files/{file_id}/content", {"401", "404", "416"}),
        ("post", "/v1/teams", {"401", "403", "409", "422"}),
        ("patch", "/v1/teams/{team_id}", {"401", "403", "404", "422"}),
        ("delete", "/v1/keys/{key_id}", {"401", "403", "404"}),
        ("get", "/v1/queue", {"401", "422"}),
        ("get", "/v1/webhook_secret", {"401"}),
    ],
)
def test_the_schema_documents_each_routes_errors_with_the_error_body(
    api: TestClient, method: str, path: str, statuses: set[str]
) -> None:
    schema = api.get("/openapi.json").json()
    responses = schema["paths"][path][method]["responses"]
    assert statuses <= set(responses), sorted(responses)
    for status in statuses:
        assert responses[status]["content"]["application/json"]["schema"] == ERROR_BODY, status
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "message", "param"}
