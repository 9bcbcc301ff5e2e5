"""The pages' own static files (``/static/app.css``, ``/static/app.js``): public, a fixed
list read once from the package, served with their digest as ETag."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

from archiver.people.access import Action
from archiver.web.errors import not_found
from archiver.web.gate import route

router = APIRouter(include_in_schema=False)

FILES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


@cache
def _content(name: str) -> bytes:
    return files("archiver.web").joinpath("static", name).read_bytes()


@route(router, "GET", "/static/{name}", action=Action.HEALTH, response_class=Response)
def static_file(name: str, request: Request) -> Response:
    """One of :data:`FILES` (any other name: 404)."""
    media_type = FILES.get(name)
    if media_type is None:
        raise not_found()
    body = _content(name)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)
