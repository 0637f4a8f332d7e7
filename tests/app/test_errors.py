"""How the app answers what no route serves: a 405 names every method served at the path."""

import pytest

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
