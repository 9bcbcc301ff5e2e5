"""Watches: what the daemon polls, per case.

``GET    /api/watches``               the watches a person may see (``?case=``, ``?status=``)
``GET    /api/watches/{id}``          one watch
``POST   /api/watches``               add one (``watch.added``)
``POST   /api/watches/{id}/pause``    ``watch.paused``; ``/resume``: ``watch.resumed``
``DELETE /api/watches/{id}``          ``watch.removed`` (the row stays, status removed)
``POST   /api/watches/import``        a watchlist (CSV or TOML, the format of
                                      ``archiver watch import``) into a case

A watch belongs to the case it files its captures under (``case_name``); a watch with no
case is unfiled, and its creator keeps the investigator's rights on it, as on the
unfiled captures they submitted. Viewing needs ``watch.view`` on its case, every change
``watch.manage``; an unknown watch and a watch of a case the person is not in get the
same 404. Every change is a ``watch.*`` ledger entry naming the person and the context
(token or session, client address) they acted through. Reading a watch is not recorded:
a watch is the archive's configuration, not evidence.

A URL is watched once per case (unfiled: once per person), so a case adds a URL that
another case watches as if no one did: the answer never tells that a watch of a case the
person is not in exists (:func:`archiver.watch.watches.watch_scope`). Each watch polls
and files what it finds into its own case.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from archiver import models
from archiver.archive import Archive
from archiver.cases import ReservedCaseName, check_case_name
from archiver.durations import parse_duration
from archiver.errors import BadInput, ConfigError
from archiver.people.access import Action
from archiver.urls import MAX_URL_LENGTH, printable
from archiver.watch.watches import (
    REMOVED,
    ImportReport,
    WatchError,
    Watchlist,
    WatchSpec,
    WatchView,
    read_watchlist,
    same_scope,
    url_sha256,
    watch_view,
)
from archiver.web.errors import ApiError, bad_request, not_found
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pagination import Cursor, Limit
from archiver.web.visibility import UNFILED, Branch, branches, case_id_for

router = APIRouter(tags=["watches"])

MAX_NAME = 200
MAX_PATTERN = 1000
WATCHES_LIST = "watches"
FORMAT_TYPES = {"text/csv": "csv", "application/toml": "toml", "text/toml": "toml",
                "application/x-toml": "toml"}


# -- shapes -------------------------------------------------------------------------------


class WatchOut(BaseModel):
    """A watch as the API shows it."""

    id: int
    url: str
    kind: str
    source_url: str
    pattern: str | None
    case: str | None
    every: str
    every_seconds: float
    anchor: str
    status: str
    created: str
    created_by: str
    changed: str
    polls: int
    polls_ok: int
    failures: int
    last_poll_at: str | None
    last_ok_at: str | None
    last_error: str | None
    last_new_posts: int | None
    posts_seen: int


class WatchPage(BaseModel):
    items: list[WatchOut]
    next: str | None


class WatchBody(BaseModel):
    """A watch to add: the URL, the case its captures are filed under (null: unfiled),
    how often (``"15m"``, ``"1h"``, or seconds; default ``watch.default_every``), the
    source kind (default ``auto``: detected by fetching the URL) and, for pages, a
    pattern of the links to capture."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_LENGTH)
    case: str | None = Field(default=None, max_length=MAX_NAME)
    every: Annotated[str, Field(max_length=32)] | float | None = None
    kind: Literal["auto", "feed", "channel", "activitypub", "bluesky", "telegram",
                  "page"] = "auto"
    pattern: str | None = Field(default=None, max_length=MAX_PATTERN)


class NotAdded(BaseModel):
    """A watchlist entry that was not added, and why."""

    url: str
    reason: str


class ImportOut(BaseModel):
    added: list[WatchOut]
    skipped: list[NotAdded] = Field(description="already watched")
    refused: list[NotAdded] = Field(description="not allowed (a case the person may not "
                                                "manage) or not valid (URL, kind, interval)")


def watch_out(view: WatchView) -> WatchOut:
    return WatchOut(**view.as_json())


# -- helpers ------------------------------------------------------------------------------


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _watchlist(request: Request, gate: Gate) -> Watchlist:
    return Watchlist(_archive(request), actor=gate.actor, context=gate.context())


def _find(request: Request, gate: Gate, watch_id: int, action: Action | None = None
          ) -> WatchView:
    """The watch, once the gate allowed ``action`` on its case; the same 404 for an
    unknown watch and a watch of a case the person is not in."""
    with _archive(request).reader.connect() as conn:
        row = conn.execute(sa.select(models.watches)
                           .where(models.watches.c.id == watch_id)).first()
        if row is None:
            raise not_found()
        case_id = case_id_for(conn, row.case_name)
    gate.require(case_id, submitted_by=row.created_by if case_id is None else None,
                 action=action)
    return watch_view(row)


def _visible(shown: list[Branch]) -> Any:
    """The watches one of ``shown`` shows (a watch names its case by name; an unfiled
    one is its creator's)."""
    w = models.watches.c
    parts: list[Any] = []
    named = [b.case_name for b in shown if b.case_id is not None and b.case_name]
    if named:
        parts.append(w.case_name.in_(named))
    for b in shown:
        if b.case_id is None:
            parts.append(w.case_name.is_(None) if b.submitted_by is None else
                         sa.and_(w.case_name.is_(None), w.created_by == b.submitted_by))
    return sa.or_(*parts) if parts else sa.false()


def _skip_reason(request: Request, gate: Gate, spec: WatchSpec, reason: str) -> str:
    """Why ``spec`` was not added (its URL is watched already in the same case, or
    unfiled by the same person), naming the watch only when the person may see it."""
    w = models.watches
    with _archive(request).reader.connect() as conn:
        row = conn.execute(sa.select(w.c.case_name, w.c.created_by).where(
            w.c.url_sha256 == url_sha256(spec.url), w.c.status != REMOVED,
            *same_scope(spec.case, gate.actor))).first()
        case_id = None if row is None else case_id_for(conn, row.case_name)
    if row is not None and gate.allows(case_id, submitted_by=row.created_by,
                                       action=Action.WATCH_VIEW):
        return reason
    return f"{spec.url} is already watched"


def _every(value: str | float | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise bad_request(f"every: {exc}") from None


def _not_unfiled(case: str) -> None:
    """400 for ``Unfiled`` and the like: no case has that name, nor may have; said
    before the gate, since it tells nothing about any case."""
    try:
        check_case_name(case)
    except BadInput as exc:
        raise bad_request(str(exc), code="bad-input") from None


def _case_of_new(request: Request, gate: Gate, case: str | None) -> str | None:
    """The case name a new watch is filed under (None: unfiled), once the gate allowed
    ``watch.manage`` on it; 404 for a case that does not exist or is not the person's."""
    if case is None or case == UNFILED:
        gate.require(None, submitted_by=gate.actor)
        return None
    _not_unfiled(case)
    with _archive(request).reader.connect() as conn:
        case_id = case_id_for(conn, case)
    gate.require(case_id)
    return case


# -- routes -------------------------------------------------------------------------------


@route(router, "GET", "/api/watches", action=Action.WATCH_VIEW, response_model=WatchPage)
def list_watches(
    request: Request, gate: GateDep,
    case: Annotated[str | None, Query(max_length=MAX_NAME,
                                      description="a case name, or `unfiled`")] = None,
    status: Literal["active", "paused", "removed"] | None = None,
    cursor: Cursor = None, limit: Limit = 50,
) -> WatchPage:
    """The watches of the cases the person may see (and the unfiled ones they created),
    by id; removed ones only with ``status=removed``."""
    seen = gate.visible()
    cursors = request.app.state.cursors
    after = cursors.decode(WATCHES_LIST, cursor)
    w = models.watches
    with _archive(request).reader.connect() as conn:
        shown = branches(conn, seen, case)
        query = sa.select(w).where(_visible(shown))
        query = query.where(w.c.status == status) if status is not None \
            else query.where(w.c.status != REMOVED)
        if after is not None:
            query = query.where(w.c.id > int(after[0]))
        rows = conn.execute(query.order_by(w.c.id).limit(limit + 1)).all()
    page = cursors.page(WATCHES_LIST, rows, limit, lambda r: [r.id],
                        lambda r: watch_out(watch_view(r)))
    return WatchPage(items=page.items, next=page.next)


@route(router, "GET", "/api/watches/{watch_id}", action=Action.WATCH_VIEW,
       response_model=WatchOut)
def show_watch(request: Request, gate: GateDep, watch_id: int) -> WatchOut:
    """One watch: its source, interval, state and polling counts."""
    return watch_out(_find(request, gate, watch_id))


@route(router, "POST", "/api/watches", action=Action.WATCH_MANAGE, status_code=201,
       response_model=WatchOut)
def add_watch(request: Request, gate: GateDep, body: WatchBody) -> WatchOut:
    """Add a watch, polled first at once. 404: the case does not exist or is not the
    person's; 400: a bad URL, interval or pattern; 409: the URL is watched already in
    that case (unfiled: by the same person), or ``auto`` could not recognise it."""
    case = _case_of_new(request, gate, body.case)
    spec = WatchSpec(url=body.url, kind=body.kind, every=_every(body.every), case=case,
                     pattern=body.pattern)
    watchlist = _watchlist(request, gate)
    try:
        report = watchlist.add_many([spec], spread=False)
    except ConfigError as exc:  # the interval is below watch.min_every: the client's
        raise bad_request(str(exc)) from None
    finally:
        watchlist.close()
    if report.skipped:
        raise ApiError(409, "refused", _skip_reason(request, gate, *report.skipped[0]))
    return watch_out(report.added[0])


def _change(request: Request, gate: Gate, watch_id: int, what: str) -> WatchOut:
    view = _find(request, gate, watch_id)
    watchlist = _watchlist(request, gate)
    changed = {"pause": watchlist.pause, "resume": watchlist.resume,
               "remove": watchlist.remove}[what](view.id)
    return watch_out(changed)


@route(router, "POST", "/api/watches/{watch_id}/pause", action=Action.WATCH_MANAGE,
       response_model=WatchOut)
def pause_watch(request: Request, gate: GateDep, watch_id: int) -> WatchOut:
    """Stop polling a watch until it is resumed (``watch.paused``; nothing is recorded
    for a watch that is paused already). 409 for a removed watch."""
    return _change(request, gate, watch_id, "pause")


@route(router, "POST", "/api/watches/{watch_id}/resume", action=Action.WATCH_MANAGE,
       response_model=WatchOut)
def resume_watch(request: Request, gate: GateDep, watch_id: int) -> WatchOut:
    """Poll a paused watch again (``watch.resumed``). 409 for a removed watch."""
    return _change(request, gate, watch_id, "resume")


@route(router, "DELETE", "/api/watches/{watch_id}", action=Action.WATCH_MANAGE,
       response_model=WatchOut)
def remove_watch(request: Request, gate: GateDep, watch_id: int) -> WatchOut:
    """Stop watching for good (``watch.removed``); the watch stays listed with
    ``status=removed``, as the ledger and its captures refer to it."""
    return _change(request, gate, watch_id, "remove")


_IMPORT_BODY = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"},
                 "example": "url,kind,every,case,pattern\nhttps://example.org/feed,feed,1h,,\n"},
    "application/toml": {"schema": {"type": "string"},
                         "example": '[[watch]]\nurl = "https://example.org/feed"\n'},
}}}


@route(router, "POST", "/api/watches/import", action=Action.WATCH_MANAGE,
       response_model=ImportOut, openapi_extra=_IMPORT_BODY)
async def import_watches(
    request: Request, gate: GateDep,
    case: Annotated[str, Query(max_length=MAX_NAME,
                               description="the case of the entries that name none "
                                           "(`unfiled`: no case)")],
    format: Annotated[Literal["csv", "toml"] | None,
                      Query(description="default: from the Content-Type")] = None,
) -> ImportOut:
    """Add every watch of a watchlist (at most 1 MiB; CSV with the header
    ``url,kind,every,case,pattern`` or TOML ``[[watch]]`` tables). An entry naming a
    case the person may not manage, or that is not valid, is refused and reported; an
    entry whose URL is watched already is skipped; the others are added together.
    404: ``case`` does not exist or is not the person's; 400: the file cannot be read."""
    fmt = format or FORMAT_TYPES.get(
        request.headers.get("content-type", "").split(";")[0].strip().lower())
    if fmt is None:
        raise ApiError(415, "unsupported-media-type",
                       "send the watchlist as text/csv or application/toml, or give "
                       "?format=csv|toml")
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("the watchlist is not UTF-8 text") from None
    return await run_in_threadpool(_import, request, gate, case, text, fmt)


def _import(request: Request, gate: Gate, case: str, text: str, fmt: str) -> ImportOut:
    default_case = _case_of_new(request, gate, case)
    try:
        specs = read_watchlist(text, fmt, name="the watchlist")
    except WatchError as exc:  # names the line or entry
        raise bad_request(str(exc)) from None
    allowed: list[WatchSpec] = []
    refused: list[NotAdded] = []
    with _archive(request).reader.connect() as conn:
        for spec in specs:
            named = spec.case if spec.case not in (None, UNFILED) else None
            if spec.case is None:
                named = default_case
            try:
                if named is not None:
                    check_case_name(named)
            except ReservedCaseName as exc:
                refused.append(NotAdded(url=spec.url, reason=str(exc)))
                continue
            case_id = case_id_for(conn, named)
            if not gate.allows(case_id, submitted_by=gate.actor if case_id is None else None):
                # the same words for a case that does not exist and one that is not theirs
                refused.append(NotAdded(url=spec.url, reason=(
                    f"no case {printable(named or '')!r} that you may add watches to")))
                continue
            allowed.append(WatchSpec(url=spec.url, kind=spec.kind, every=spec.every,
                                     case=named, pattern=spec.pattern))
    watchlist = _watchlist(request, gate)
    try:
        report: ImportReport = watchlist.add_many(allowed, report_refused=True)
    finally:
        watchlist.close()
    refused += [NotAdded(url=s.url, reason=why) for s, why in report.refused]
    skipped = [NotAdded(url=s.url, reason=_skip_reason(request, gate, s, why))
               for s, why in report.skipped]
    return ImportOut(added=[watch_out(v) for v in report.added], skipped=skipped,
                     refused=refused)
