"""``GET /healthz``: is the server up and its database reachable. No auth, no data.
``GET /api/openapi.json``: the API's OpenAPI document."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from archiver.people.access import Action
from archiver.web.gate import route

router = APIRouter(tags=["health"])


@route(router, "GET", "/healthz", action=Action.HEALTH)
def healthz(request: Request) -> JSONResponse:
    """``{"ok": true}`` when the database answers, 503 ``{"ok": false}`` when it does not."""
    try:
        with request.app.state.archive.reader.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return JSONResponse({"ok": False}, status_code=503)
    return JSONResponse({"ok": True})


@route(router, "GET", "/api/openapi.json", action=Action.API_DOCS, include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document of this API (every operation names its ``x-action``)."""
    return JSONResponse(request.app.openapi())
