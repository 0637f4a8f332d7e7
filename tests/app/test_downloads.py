"""Downloads and ``Range``: one satisfiable range is ``206``; a header we cannot read is ignored
(the whole file, ``200``, RFC 9110, 14.2); a range past the end is ``416`` in the contract's
error body. Over HTTP on the local store (the S3 store is tested in tests/integration/test_s3.py),
and ``requested_range``, which decides for both stores, on its own."""

from collections.abc import Iterator

import pytest
from starlette.datastructures import Headers

from app.downloads import RangeNotSatisfiable, requested_range
from tests.conftest import Client
from tests.helpers.api import error_of

CONTENT = b"a,label\n" + b"".join(f"{i},{i % 3}\n".encode() for i in range(40))
SIZE = len(CONTENT)
ETAG = '"etag"'


@pytest.fixture
def url(team: Client) -> Iterator[str]:
    response = team.post(
        "/v1/files", files={"file": ("d.csv", CONTENT)}, data={"purpose": "dataset"}
    )
    assert response.status_code == 201, response.text
    file_id = response.json()["id"]
    yield f"/v1/files/{file_id}/content"
    assert team.delete(f"/v1/files/{file_id}").status_code == 204


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=10-19", 10, 19),
        ("bytes=-7", SIZE - 7, SIZE - 1),
        (f"bytes={SIZE - 3}-", SIZE - 3, SIZE - 1),
        (f"bytes=5-{SIZE + 100}", 5, SIZE - 1),
        ("BYTES = 0-0", 0, 0),
    ],
)
def test_one_range_is_206(team: Client, url: str, header: str, first: int, last: int) -> None:
    response = team.get(url, headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.content == CONTENT[first : last + 1]


@pytest.mark.parametrize(
    "header",
    [
        "bytes",  # no "="
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=5-2",  # last before first
        "bytes=0-1,5-6",  # several: S3 reads one, so both stores serve the whole file
        "lines=1-2",  # a unit HTTP says to ignore
        "bytes=1-2-3",
        "\u00e9",
    ],
)
def test_a_range_header_we_cannot_read_is_ignored(team: Client, url: str, header: str) -> None:
    response = team.get(url, headers={"Range": header.encode("utf-8")})
    assert response.status_code == 200, response.text
    assert response.content == CONTENT
    assert "content-range" not in response.headers


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_a_range_past_the_end_is_416_in_the_error_body(team: Client, url: str, header: str) -> None:
    response = team.get(url, headers={"Range": header})
    error = error_of(response, 416)
    assert (error["code"], error["param"]) == ("range_not_satisfiable", "Range")
    assert response.headers["content-range"] == f"bytes */{SIZE}"


def test_if_range_with_another_etag_gets_the_whole_file(team: Client, url: str) -> None:
    etag = team.get(url).headers["etag"]
    stale = team.get(url, headers={"Range": "bytes=0-1", "If-Range": '"another-version"'})
    assert (stale.status_code, stale.content) == (200, CONTENT)
    fresh = team.get(url, headers={"Range": "bytes=0-1", "If-Range": etag})
    assert (fresh.status_code, fresh.content) == (206, CONTENT[:2])


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=2-4", (2, 5)),
        ("bytes=-5", (SIZE - 5, SIZE)),
        ("bytes=5-2", None),
        ("bytes=0-1,5-6", None),
        ("bytes=x-", None),
        ("bytes", None),
        ("items=0-1", None),
        ("", None),
    ],
)
def test_requested_range(header: str, span: tuple[int, int] | None) -> None:
    assert requested_range(Headers({"range": header}), SIZE, ETAG) == span


def test_requested_range_past_the_end() -> None:
    with pytest.raises(RangeNotSatisfiable):
        requested_range(Headers({"range": f"bytes={SIZE}-"}), SIZE, ETAG)
