"""The dashboard every node serves at ``/``: static files shipped in this package (no build
step, no CDN, works offline) that read the public API from the browser.

``GET /`` is the page; ``GET /dashboard/<file>`` its script, style sheet and icon — only the
files listed in :data:`FILES`, so no request names a path on disk. What the page shows and
which endpoints it calls: ``dashboard.js``'s header and docs/operations.md#dashboard.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ...errors import ApiError

__all__ = ["FILES", "router"]

#: The files served under /dashboard/, with their media types.
FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: The page may load and connect to this node only (WebSockets included): nothing inline,
#: nothing from elsewhere, not framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_HERE = Path(__file__).resolve().parent

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(
        _HERE / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/dashboard/{name}")
async def asset(name: str) -> FileResponse:
    media_type = FILES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    return FileResponse(_HERE / name, media_type=media_type, headers=SECURITY_HEADERS)
