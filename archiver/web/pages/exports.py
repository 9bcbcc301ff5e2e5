"""The export pages of a case.

``GET /cases/{name}/exports``    its exports (state, bundle digest, ``bundle.exported``
                                 entry, download) and the captures to choose (100 a page)
``POST /cases/{name}/exports``   start an export of the chosen captures (none: all)
``GET /exports/{id}``            one export as it stands (polled each second until final)

The API's route functions do the work (:mod:`archiver.web.api.exports`); the bundle is
downloaded from the API's own route (``/api/exports/{id}/bundle``).
"""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from archiver.people.access import Action
from archiver.web.api import captures as captures_api
from archiver.web.api import exports as api
from archiver.web.errors import bad_request, not_found
from archiver.web.gate import GateDep, route
from archiver.web.pages.render import PAGE_SIZE, as_action, checked_by, render

router = APIRouter(include_in_schema=False)

CursorQ = Annotated[str | None, Query(max_length=512)]
FINAL = frozenset({"done", "failed"})


@route(router, "GET", "/cases/{name}/exports", action=Action.EXPORT_DOWNLOAD,
       response_class=HTMLResponse)
def exports_page(request: Request, gate: GateDep, name: str, cursor: CursorQ = None,
                 exports_cursor: CursorQ = None) -> HTMLResponse:
    """A case's exports, newest first (100 a page, ``exports_cursor``), and the form that
    starts one: every capture of the case, or those ticked among the captures listed
    (100 a page, ``cursor``)."""
    if len(name) > captures_api.MAX_NAME:
        raise not_found()
    exports = api.list_exports(request, gate, name, cursor=exports_cursor, limit=PAGE_SIZE)
    listing = as_action(gate, Action.CAPTURE_LIST)
    captures = captures_api.list_captures(listing, request, case=name, status=None,
                                          url=None, since=None, until=None, cursor=cursor,
                                          limit=PAGE_SIZE)
    checked_by(gate, listing)
    may_start = gate.allows(_case_id(request, name), action=Action.CASE_EXPORT)
    next_url = None if captures.next is None else \
        f"/cases/{quote(name, safe='')}/exports?{urlencode({'cursor': captures.next})}"
    more_exports = None if exports.next is None else \
        f"/cases/{quote(name, safe='')}/exports?{urlencode({'exports_cursor': exports.next})}"
    return render(request, "exports.html", name=name, exports=exports.items,
                  captures=captures.items, next_url=next_url, may_start=may_start,
                  more_exports=more_exports)


def _case_id(request: Request, name: str) -> int | None:
    from archiver.web.visibility import case_id_for

    with captures_api.archive_of(request).engine.connect() as conn:
        return case_id_for(conn, name)


@route(router, "POST", "/cases/{name}/exports", action=Action.CASE_EXPORT,
       response_class=HTMLResponse)
def start_export(request: Request, gate: GateDep, name: str,
                 captures: Annotated[list[str] | None, Form(max_length=10_000)] = None
                 ) -> HTMLResponse:
    """Start the export (``export.requested``); answers its state, which the page then
    follows until the bundle is ready."""
    try:
        body = api.ExportBody(capture_ids=captures or None)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise bad_request(f"captures: {first.get('msg', 'invalid')}", code="bad-input") \
            from None
    answer = api.request_export(request, gate, name, body)
    started = api.ExportOut(**json.loads(bytes(answer.body)))
    return render(request, "fragments/export.html", e=started, final=started.state in FINAL)


@route(router, "GET", "/exports/{export_id}", action=Action.EXPORT_DOWNLOAD,
       response_class=HTMLResponse)
def export_state(request: Request, gate: GateDep, export_id: str) -> HTMLResponse:
    """One export as it stands: progress, then the bundle's SHA-256, its
    ``bundle.exported`` entry and the download link (or why it failed)."""
    shown = api.show_export(request, gate, export_id[:64])
    return render(request, "fragments/export.html", e=shown, final=shown.state in FINAL)
