"""Request bodies take JSON's own types: an integer field refuses "10", 10.0 and true, a float
field refuses "0.5" and true (and takes 1), a boolean refuses 1 and "true"."""

from typing import Any

import pytest

from tests.conftest import Client
from tests.helpers.api import error_of

SPEC: dict[str, Any] = {
    "teacher": {"file_id": "file_missing"},
    "data": {"train_file_id": "file_missing"},
}


def with_value(dotted: str, value: Any) -> dict[str, Any]:
    spec = {k: dict(v) for k, v in SPEC.items()}
    *path, last = dotted.split(".")
    node = spec
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return spec


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("hyperparameters.epochs", "10"),
        ("hyperparameters.epochs", True),
        ("hyperparameters.epochs", 10.0),
        ("hyperparameters.batch_size", "64"),
        ("hyperparameters.seed", False),
        ("hyperparameters.learning_rate", "0.01"),
        ("hyperparameters.learning_rate", True),
        ("hyperparameters.temperature", "4"),
        ("data.validation_split", "0.2"),
        ("data.max_length", "128"),
        ("student.hidden_sizes", ["64"]),
        ("student.dropout", True),
        ("baseline", 1),
        ("baseline", "true"),
        ("priority", "5"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_422(team: Client, dotted: str, value: Any) -> None:
    error = error_of(team.post("/v1/jobs", json=with_value(dotted, value)), 422)
    assert error["code"] == "invalid_request"
    assert error["param"] is not None and error["param"].startswith(dotted), error


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("hyperparameters.epochs", 10),
        ("hyperparameters.learning_rate", 1),  # an integer is a number
        ("hyperparameters.temperature", 2.5),
        ("student.hidden_sizes", [64, 32]),
        ("baseline", True),
        ("losses.hidden", {"layers": [[0, 1]]}),  # pairs are JSON arrays
        ("webhook_url", "https://example.com/hook"),
    ],
)
def test_values_of_the_right_type_pass_validation(team: Client, dotted: str, value: Any) -> None:
    # Validation passes; the job then fails on the missing teacher file.
    error = error_of(team.post("/v1/jobs", json=with_value(dotted, value)), 404)
    assert error["param"] == "teacher.file_id"


def test_priority_update_is_strict(team: Client) -> None:
    for value in ("5", True, 5.0):
        response = team.patch("/v1/jobs/job_missing", json={"priority": value})
        assert error_of(response, 422)["param"] == "priority"
