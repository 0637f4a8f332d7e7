"""The dashboard's static page and assets: served without a key, with their content types, a
CSP that allows this server only, caching pinned to each asset's version, and nothing of it in
the API schema. The page itself is tested in a browser (tests/integration/test_dashboard.py)."""

import re

from fastapi.testclient import TestClient

from app.dashboard.router import STATIC, assets
from tests.helpers.api import error_of


def test_root_redirects_to_the_dashboard(api: TestClient) -> None:
    response = api.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui"


def test_the_page_needs_no_key_and_allows_no_other_origin(api: TestClient) -> None:
    response = api.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == "'self'", directive
    assert csp["frame-ancestors"] == "'none'"
    assert not re.search(r"https?:|\*", response.headers["content-security-policy"])
    # Nothing from elsewhere in the page either: every src and href is this server's.
    for url in re.findall(r'(?:src|href)="([^"]+)"', response.text):
        assert url.startswith(("/ui/assets/", "#/")), url


def test_assets_have_their_types_and_versioned_caching(api: TestClient) -> None:
    page = api.get("/ui").text
    pinned = dict(re.findall(r'"/ui/assets/([^"?]+)\?v=([0-9a-f]{16})"', page))
    assert {"app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"} <= set(pinned)
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for name, version in pinned.items():
        assert assets()[name].version == version
        suffix = name[name.rfind(".") :]
        response = api.get(f"/ui/assets/{name}", params={"v": version})
        assert response.status_code == 200, name
        assert response.content == (STATIC / name).read_bytes()
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        if suffix in types:
            assert response.headers["content-type"] == types[suffix], name
        assert "default-src 'none'" in response.headers["content-security-policy"]
    # A module the page imports by its plain name, or an old version's URL: revalidated.
    for params in ({}, {"v": "0" * 16}):
        response = api.get("/ui/assets/job.js", params=params)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["etag"]
    assert api.head("/ui/assets/app.js").status_code == 200


def test_an_unknown_asset_is_the_contracts_404(api: TestClient) -> None:
    for name in ("nope.js", "../router.py", "index.html", "%2e%2e/router.py"):
        error = error_of(api.get(f"/ui/assets/{name}"), 404)
        assert error["code"] == "not_found"


def test_the_dashboard_is_not_in_the_api_schema(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]
