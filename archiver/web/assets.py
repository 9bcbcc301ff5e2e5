"""``GET /assets/{name}``: the browser code from the npm registry that the pages use.

Served by the app itself from the project's ``node_modules`` (``npm ci`` in
``scripts/setup``, at the versions package-lock.json pins; setting ``web.assets_dir``),
never from a CDN. Only the files named in :data:`ASSETS` are served: a name is looked
up, never joined to a path, so nothing else under ``node_modules`` is reachable.
ReplayWeb.page is not here: it runs on the replay origin (:mod:`archiver.web.replay`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from archiver.people.access import Action
from archiver.web.errors import ApiError, not_found
from archiver.web.gate import GateDep, route

router = APIRouter(tags=["assets"], include_in_schema=False)

ASSETS: dict[str, tuple[str, str]] = {
    "htmx.min.js": ("htmx.org/dist/htmx.min.js", "text/javascript"),
}
"""Name under /assets/ → (path under node_modules, media type)."""


def default_assets_dir() -> Path:
    """``node_modules`` beside the project's pyproject.toml (a checkout or an editable
    install); set ``web.assets_dir`` for any other layout."""
    return Path(__file__).resolve().parents[2] / "node_modules"


def assets_dir(request: Request) -> Path:
    configured: Path | None = request.app.state.options.assets_dir
    return configured if configured is not None else default_assets_dir()


# Public like the health check: fixed library files, nothing of the archive.
@route(router, "GET", "/assets/{name:path}", action=Action.HEALTH, response_class=Response)
def asset(name: str, gate: GateDep, request: Request) -> Response:
    """One vendored file (404 for any other name; 503 when npm ci has not been run)."""
    entry = ASSETS.get(name)
    if entry is None:
        raise not_found()
    path = assets_dir(request) / entry[0]
    if not path.is_file():
        raise ApiError(503, "assets-missing",
                       f"{name} is not installed: run scripts/setup (npm ci)")
    return FileResponse(path, media_type=entry[1], headers={"Cache-Control": "no-cache"})
