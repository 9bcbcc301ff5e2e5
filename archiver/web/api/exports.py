"""Exports: a case's signed evidence bundle, made in the background, then downloaded.

``POST /api/cases/{name}/exports``   ask for the bundle of a case (or of some of its
                                     captures): 202 and the export to poll
``GET  /api/cases/{name}/exports``   the case's exports, newest first
``GET  /api/exports/{id}``           one export: state, progress, ledger entry
``GET  /api/exports/{id}/bundle``    the ZIP (streamed; HTTP Range), once done

Asking needs ``case.export`` on the case, reading and downloading ``export.download``
(both: ``legal``). The export runs in the server's :class:`~archiver.export.requests.
ExportWorker` as the person who asked: ``export.requested`` and ``bundle.exported`` name
them and the context they asked through; each download is ``access.downloaded``
(subject ``case:<name>``), appended before the first byte.

Threat model: the captures asked for are checked against the case before anything is
queued, by full id: an id that is unknown and one of another case get the same 404, so
neither the export's error nor its answer ever names another case's capture. An
unknown export, case or capture and one of a case the person is not in get the same
404 body.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from archiver import models
from archiver.archive import Archive
from archiver.capture.values import ArtifactView
from archiver.errors import ArchiverError
from archiver.export.requests import (
    DONE,
    ExportQueueFull,
    ExportView,
    ExportWorker,
    export_view,
    select_exports,
)
from archiver.logs import event
from archiver.people.access import Action
from archiver.web.api.artifacts import ArtifactResponse, Unsatisfiable, byte_range, disposition
from archiver.web.errors import ApiError, bad_request, not_found
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pagination import Cursor, Limit
from archiver.web.visibility import UNFILED, case_id_for

log = logging.getLogger("archiver.web")
router = APIRouter(tags=["exports"])

CAPTURE_ID_LENGTH = 36
MAX_CAPTURES = 1000
MAX_NAME = 200
EXPORTS_LIST = "exports"
RETRY_AFTER_SECONDS = 60

CaseName = Annotated[str, Field(max_length=MAX_NAME)]


# -- shapes -------------------------------------------------------------------------------


class ExportBody(BaseModel):
    """Which captures of the case (full ids; none or null: every capture of the case)."""

    model_config = ConfigDict(extra="forbid")

    capture_ids: list[Annotated[str, Field(min_length=CAPTURE_ID_LENGTH,
                                           max_length=CAPTURE_ID_LENGTH)]] | None = Field(
        default=None, max_length=MAX_CAPTURES)


class ProgressOut(BaseModel):
    captures: int
    captures_done: int
    bytes_total: int
    bytes_done: int


class ExportOut(BaseModel):
    """An export. ``state``: queued, running, done (the bundle can be downloaded) or
    failed (``reason`` and ``error`` say why)."""

    export_id: str
    case: str
    captures: list[str] | None = Field(description="the captures asked for (null: all)")
    requested_by: str
    created: str
    state: str
    started: str | None
    finished: str | None
    sha256: str | None = Field(description="SHA-256 of the bundle ZIP")
    size: int | None
    file_name: str | None
    reason: str | None = Field(description=(
        "why it failed: not-found, evidence-damaged, store-unreadable, ledger-failed, "
        "write-failed, export-failed, bundle-not-stored, server-stopped, internal-error"))
    error: str | None = Field(description="why it failed, in a sentence")
    ledger_seq: int | None = Field(description="the bundle.exported ledger entry")
    progress: ProgressOut | None = Field(
        default=None, description="how far a running export is (when this server runs it)")
    bundle: str | None = Field(default=None, description="the download path, once done")


class ExportPage(BaseModel):
    items: list[ExportOut]
    next: str | None


# -- helpers ------------------------------------------------------------------------------


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _worker(request: Request) -> ExportWorker:
    worker: ExportWorker = request.app.state.exports
    return worker


def _out(request: Request, view: ExportView) -> ExportOut:
    progress = _worker(request).progress(view.id) if view.state != DONE else None
    return ExportOut(
        **view.as_json(),
        progress=None if progress is None else ProgressOut(**progress.as_json()),
        bundle=f"/api/exports/{view.id}/bundle" if view.state == DONE else None,
    )


def _case(request: Request, gate: Gate, name: str) -> int:
    """The id of case ``name`` once the gate allowed the route's action on it; the same
    404 for a case that does not exist and one that is not the person's."""
    if name == UNFILED:
        raise bad_request("the unfiled captures are not a case; file them under a case to "
                          "export them", code="bad-input")
    with _archive(request).reader.connect() as conn:
        case_id = case_id_for(conn, name)
    gate.require(case_id)
    assert case_id is not None
    return case_id


def _export(request: Request, gate: Gate, export_id: str) -> ExportView:
    """Export ``export_id`` once the gate allowed the route's action on its case."""
    if len(export_id) > 32:
        raise not_found()
    with _archive(request).reader.connect() as conn:
        row = conn.execute(select_exports()
                           .where(models.exports.c.id == export_id)).first()
    if row is None:
        raise not_found()
    gate.require(row.case_id)
    return export_view(row)


# -- routes -------------------------------------------------------------------------------


@route(router, "POST", "/api/cases/{name}/exports", action=Action.CASE_EXPORT,
       status_code=202, response_model=ExportOut,
       responses={429: {"description": "too many exports run or wait on this server"}})
def request_export(request: Request, gate: GateDep, name: str,
                   body: ExportBody | None = None) -> JSONResponse:
    """Ask for the signed bundle of case ``name`` (``export.requested``); poll the
    export until it is ``done``, then download its bundle. 404: the case, or one of the
    captures in it, does not exist or is not the person's; 409: the case has no
    captures; 429: the server's export queue is full (``Retry-After``)."""
    case_id = _case(request, gate, name)
    wanted = None if body is None or not body.capture_ids else body.capture_ids
    c = models.captures.c
    with _archive(request).reader.connect() as conn:
        if wanted is None:
            if conn.execute(sa.select(c.id).where(c.case_id == case_id).limit(1)).first() \
                    is None:
                raise ApiError(409, "refused", f"case {name!r} has no captures to export")
        else:
            found = set(conn.execute(sa.select(c.id).where(
                c.case_id == case_id, c.id.in_(sorted(set(wanted))))).scalars())
            if set(wanted) - found:
                raise not_found()
    try:
        view = _worker(request).submit(case_id=case_id, capture_ids=wanted,
                                       actor=gate.actor, context=gate.context())
    except ExportQueueFull as exc:
        raise ApiError(429, "rate-limited", str(exc),
                       {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    out = _out(request, view)
    return JSONResponse(out.model_dump(), status_code=202,
                        headers={"Location": f"/api/exports/{view.id}"})


@route(router, "GET", "/api/cases/{name}/exports", action=Action.EXPORT_DOWNLOAD,
       response_model=ExportPage)
def list_exports(request: Request, gate: GateDep, name: str, cursor: Cursor = None,
                 limit: Limit = 50) -> ExportPage:
    """The exports of case ``name``, newest first."""
    case_id = _case(request, gate, name)
    cursors = request.app.state.cursors
    after = cursors.decode(EXPORTS_LIST, cursor)
    e = models.exports.c
    query = select_exports().where(e.case_id == case_id)
    if after is not None:
        created, export_id = str(after[0]), str(after[1])
        query = query.where(sa.or_(e.created < created,
                                   sa.and_(e.created == created, e.id < export_id)))
    with _archive(request).reader.connect() as conn:
        rows = conn.execute(query.order_by(e.created.desc(), e.id.desc())
                            .limit(limit + 1)).all()
    page = cursors.page(EXPORTS_LIST, rows, limit, lambda r: [r.created, r.id],
                        lambda r: _out(request, export_view(r)))
    return ExportPage(items=page.items, next=page.next)


@route(router, "GET", "/api/exports/{export_id}", action=Action.EXPORT_DOWNLOAD,
       response_model=ExportOut)
def show_export(request: Request, gate: GateDep, export_id: str) -> ExportOut:
    """One export: its state, progress while it runs (when this server runs it), and
    once done the bundle's digest, size, ``bundle.exported`` entry and download path."""
    return _out(request, _export(request, gate, export_id))


@route(router, "GET", "/api/exports/{export_id}/bundle", action=Action.EXPORT_DOWNLOAD,
       response_class=JSONResponse,
       responses={200: {"content": {"application/zip": {}}, "description": "the bundle"},
                  206: {"description": "the requested byte range"},
                  409: {"description": "the export is not done"},
                  416: {"description": "the range lies past the end"}})
def download_bundle(request: Request, gate: GateDep, export_id: str) -> Any:
    """The bundle ZIP, streamed (HTTP Range: one range, 206), as an attachment;
    ``access.downloaded`` is appended before the first byte. A full download is
    re-hashed as it streams and cut short if it is not the recorded bundle."""
    view = _export(request, gate, export_id)
    if view.state != DONE or view.sha256 is None or view.size is None:
        raise ApiError(409, "not-ready", f"export {view.id} is {view.state}; its bundle can "
                                         "be downloaded once it is done")
    size = view.size
    etag = f'"{view.sha256}"'
    wanted = None
    try:
        if_range = request.headers.get("if-range")
        if if_range is None or if_range.strip() == etag:
            wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        raise ApiError(416, "range-not-satisfiable",
                       f"the range asks for bytes past the end of the bundle ({size} bytes)",
                       {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
                       ) from None
    name = view.file_name or f"{view.id}.zip"
    headers = {
        "Content-Type": "application/zip",
        "Content-Disposition": disposition(name, inline=False),
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, no-store",
    }
    start, length = 0, size
    if wanted is not None:
        start, length = wanted[0], wanted[1] - wanted[0] + 1
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
    headers["Content-Length"] = str(length)
    archive = _archive(request)
    closer = ExitStack()
    try:
        stream = closer.enter_context(_worker(request).open_bundle(view))
    except ArchiverError as exc:
        closer.close()
        event(log, "download.unreadable", level=logging.ERROR, export=view.id,
              error=str(exc))
        raise ApiError(500, "evidence-unreadable",
                       f"the bundle of export {view.id} cannot be read from the store; "
                       "ask for the export again") from exc
    try:
        payload: dict[str, Any] = {"export_id": view.id, "bundle_sha256": view.sha256,
                                   "size": size, "file_name": name}
        if wanted is not None:
            payload["range"] = [wanted[0], wanted[1]]
        context = gate.context()
        if context:
            payload["context"] = context
        archive.ledger.append(actor=gate.actor, action="access.downloaded",
                              subject=f"case:{view.case}", payload=payload)
    except BaseException:
        closer.close()
        raise
    # The bundle as the artifact it is, for the streaming response's digest check.
    expect = ArtifactView(name, "bundle", "application/zip", size, view.sha256, "")
    return ArtifactResponse(
        stream=stream, closer=closer, status_code=206 if wanted is not None else 200,
        headers=headers, start=start, length=length,
        expect=expect if wanted is None else None,
        label={"export": view.id, "actor": gate.actor},
    )
