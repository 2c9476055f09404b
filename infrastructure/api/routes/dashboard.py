"""The dashboard: a static page that reads the API and the live tail with the caller's token."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from agent_ledger.infrastructure.api import dashboard
from agent_ledger.infrastructure.api.errors import ProblemError

# the page holds no data: it is public, and every call it makes carries the user's token
router = APIRouter(include_in_schema=False)

_ASSET = re.compile(r"[a-z][a-z0-9_-]*\.(js|css)")
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",  # ES modules need a JavaScript type
    ".css": "text/css; charset=utf-8",
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    **_HEADERS,
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def root() -> RedirectResponse:
    """Send a browser at the bare address to the dashboard."""
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
def page() -> FileResponse:
    """The dashboard page."""
    return _file("index.html", _PAGE_HEADERS)


@router.get("/dashboard/static/{name}")
def asset(name: str) -> FileResponse:
    """One of the page's scripts or style sheets."""
    if not _ASSET.fullmatch(name) or not _path(name).is_file():
        raise ProblemError(404, "not-found", "Not found", f"the dashboard has no file {name!r}")
    return _file(name, _HEADERS)


def _path(name: str) -> Path:
    return Path(str(resources.files(dashboard) / name))


def _file(name: str, headers: dict[str, str]) -> FileResponse:
    return FileResponse(_path(name), media_type=_MEDIA_TYPES[Path(name).suffix], headers=headers)
