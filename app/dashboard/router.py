"""The dashboard's page and assets, served without a key: they hold no secret. Everything the
page shows it reads from /v1 with the key its user pastes, so the data stays behind the keys.

Asset URLs in the page carry a hash of the asset (``?v=``), so a browser may keep them for good
and still gets the new one after an upgrade; the page itself is revalidated on every load.
"""

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from app.errors import NotFound

STATIC = Path(__file__).parent / "static"
PAGE = "/ui"
ASSETS = "/ui/assets"

# Nothing from another origin, no inline script or style, no framing: the page runs only the
# code shipped here, so a pasted key can only go to this server.
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}
FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Asset:
    path: Path
    media_type: str
    version: str


@cache
def assets() -> dict[str, Asset]:
    """Every servable file under static/ but the page, by its path there."""
    found = {}
    for path in sorted(STATIC.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            found[path.relative_to(STATIC).as_posix()] = Asset(path, media_type, version)
    return found


@cache
def page() -> str:
    """index.html, each asset URL in it pinned to the asset's version."""

    def pinned(match: re.Match[str]) -> str:
        asset = assets()[match.group(1)]
        return f"{ASSETS}/{match.group(1)}?v={asset.version}"

    html = (STATIC / "index.html").read_text()
    return re.sub(re.escape(ASSETS) + r"/([\w./-]+)", pinned, html)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(PAGE)


@router.api_route(PAGE, methods=["GET", "HEAD"])
def dashboard() -> HTMLResponse:
    return HTMLResponse(page(), headers={**SECURITY_HEADERS, "Cache-Control": REVALIDATE})


@router.api_route(ASSETS + "/{name:path}", methods=["GET", "HEAD"])
def asset(name: str, v: str | None = None) -> FileResponse:
    found = assets().get(name)
    if found is None:
        raise NotFound(f"The dashboard has no asset '{name}'.", param="name")
    cache_control = FOREVER if v == found.version else REVALIDATE
    return FileResponse(
        found.path,
        media_type=found.media_type,
        headers={**SECURITY_HEADERS, "Cache-Control": cache_control},
    )
