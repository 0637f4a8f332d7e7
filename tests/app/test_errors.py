"""How the app answers what no route serves (a 405 names every method served at the path),
and how the schema documents the errors of the routes it has."""

from typing import Any

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
        ("post", "/v1/jobs/validate", {"401", "404", "422"}),
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


SPEC = {"teacher": {"file_id": "file_t"}, "data": {"train_file_id": "file_d"}}


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {**SPEC, "hyperparamters": {"epochs": 3}},
            "hyperparamters",
            '"hyperparamters" is not a field; did you mean "hyperparameters"?',
        ),
        (
            {**SPEC, "hyperparameters": {"learning_rte": 0.01}},
            "hyperparameters.learning_rte",
            '"hyperparameters.learning_rte" is not a field; '
            'did you mean "hyperparameters.learning_rate"?',
        ),
        (
            {**SPEC, "student": {"arch": "cnn", "chanels": [8]}},
            "student.chanels",
            '"student.chanels" is not a field; did you mean "student.channels"?',
        ),
        (
            {**SPEC, "student": {"hiden_sizes": [8]}},  # the default arch, mlp
            "student.hiden_sizes",
            '"student.hiden_sizes" is not a field; did you mean "student.hidden_sizes"?',
        ),
        (
            {**SPEC, "hyperparameters": {"early_stopping": {"patiense": 2}}},
            "hyperparameters.early_stopping.patiense",
            '"hyperparameters.early_stopping.patiense" is not a field; '
            'did you mean "hyperparameters.early_stopping.patience"?',
        ),
    ],
)
def test_an_unknown_field_names_the_field_meant(
    team: Client, body: dict[str, Any], param: str, message: str
) -> None:
    for path in ("/v1/jobs", "/v1/jobs/validate"):
        error = error_of(team.post(path, json=body), 422)
        assert (error["code"], error["param"], error["message"]) == (
            "invalid_request",
            param,
            message,
        )


def test_a_misspelt_file_key_leads_with_itself_not_the_missing_id(team: Client) -> None:
    """``train_pth`` leaves ``train_file_id`` missing too; the error names the misspelling, the id
    meant, and the client's local-file key it resembles."""
    body = {"teacher": {"file_id": "file_t"}, "data": {"train_pth": "train.npz"}}
    error = error_of(team.post("/v1/jobs", json=body), 422)
    assert error["param"] == "data.train_pth"
    assert error["message"].startswith(
        '"data.train_pth" is not a field; did you mean "data.train_file_id"?'
    )
    assert '"train_path"' in error["message"] and "client" in error["message"]


def test_an_unknown_field_with_nothing_close_lists_the_fields_there(team: Client) -> None:
    error = error_of(team.post("/v1/jobs", json={**SPEC, "data": {**SPEC["data"], "zz": 1}}), 422)
    assert error["param"] == "data.zz"
    assert error["message"].startswith('"data.zz" is not a field. data takes: train_file_id, ')


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"teacher": {"file_id": "file_t"}', "application/json"),  # cut short
        (b"teacher=file_t", "application/x-www-form-urlencoded"),
        (b'{"teacher": {"file_id": "file_t"}}', "text/plain"),
    ],
)
def test_a_body_that_is_not_json_says_so(team: Client, content: bytes, content_type: str) -> None:
    response = team.post("/v1/jobs", content=content, headers={"Content-Type": content_type})
    error = error_of(response, 422)
    assert error["message"] == (
        "The body is not JSON: send Content-Type: application/json with a JSON object."
    )
    assert error["param"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "The body is an array in JSON; send a JSON object."),
        (b'"a spec"', "The body is a string in JSON; send a JSON object."),
        (b"", "The body is empty: send Content-Type: application/json with a JSON object."),
    ],
)
def test_a_body_that_is_no_json_object_says_what_it_is(
    team: Client, body: bytes, message: str
) -> None:
    response = team.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert error_of(response, 422)["message"] == message
