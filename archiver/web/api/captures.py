"""Captures: submit URLs, list and show captures, verify one, find similar media.

``POST /api/captures``                queue URLs for the daemon (202, the jobs)
``GET  /api/captures``                newest first, filtered, keyset-paginated
``GET  /api/captures/{id}``           details, artifacts, custody timeline (access.viewed)
``POST /api/captures/{id}/verify``    re-read and check every copy, signature, ledger
``GET  /api/captures/{id}/similar``   captures with media that look alike

A capture is named by its full id (36 characters): a prefix that matched captures of
several cases would tell a person, through "ambiguous", that a capture they may not see
exists. Every answer about one capture first asks the gate about its case; an unknown id
and a capture of a case the person is not in get the same 404 body.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from archiver import models
from archiver.archive import Archive
from archiver.capture.values import Capture
from archiver.cases import check_case_name
from archiver.clock import rfc3339
from archiver.errors import BadInput
from archiver.people.access import Action
from archiver.urls import MAX_URL_LENGTH, BadUrl, RefusedUrl, check_text, printable, submitted_url
from archiver.web.errors import bad_request, not_found
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pagination import Cursor, Limit
from archiver.web.visibility import (
    UNFILED,
    Branch,
    branches,
    capture_condition,
    captures_visible,
    case_id_for,
)
from chain_of_custody.ledger import entries_table

router = APIRouter(tags=["captures"])

CAPTURE_ID_LENGTH = 36
MAX_CUSTODY = 500
"""Custody entries shown with a capture (oldest first); the ledger routes give all."""
MAX_NAME = 200
MAX_BRANCHES = 100
"""Cases a list of captures reads as separate index ranges, at most."""
MAX_NOTE = 10_000


# -- shapes -------------------------------------------------------------------------------


class SubmitBody(BaseModel):
    """URLs to capture (1 to 100), the case to file them under (null: unfiled), a note,
    and whether to capture a URL the case captured (or queued) already."""

    model_config = ConfigDict(extra="forbid")

    urls: list[Annotated[str, Field(max_length=MAX_URL_LENGTH)]] = Field(
        min_length=1, max_length=100)
    case: str | None = Field(default=None, max_length=MAX_NAME)
    note: str | None = Field(default=None, max_length=MAX_NOTE)
    again: bool = False


class QueuedJob(BaseModel):
    job_id: int
    capture_id: str
    url: str
    state: str
    duplicate: bool = Field(description="true: the URL was already captured or queued in "
                                        "this case; this is that job (again=true forces)")


class RefusedUrlOut(BaseModel):
    url: str
    code: str = Field(description="bad-url (malformed) or refused (scheme, password in it)")
    message: str


class Submission(BaseModel):
    jobs: list[QueuedJob]
    refused: list[RefusedUrlOut]


class CaptureItem(BaseModel):
    id: str
    url: str
    case: str | None
    status: str
    reason: str | None
    requested_at: str
    requested_by: str
    ended: str | None
    manifest_sha256: str | None


class CapturePage(BaseModel):
    items: list[CaptureItem]
    next: str | None


class ArtifactOut(BaseModel):
    name: str
    role: str
    media_type: str
    size: int
    sha256: str
    sha512: str
    download: str = Field(description="the artifact's download path (GET, Range allowed)")


class CustodyEntry(BaseModel):
    seq: int
    time: str
    actor: str
    action: str
    payload: dict[str, Any] = Field(description="the entry's payload, without the context "
                                                "(client address, session or token id) of "
                                                "other people's acts")


class CaptureDetail(CaptureItem):
    note: str | None
    requested_via: str
    message: str | None
    started: str | None
    final_url: str | None
    http_status: int | None
    key_id: str | None = Field(description="the key that signed the manifest")
    ledger_seq: int | None = Field(description="the capture.completed entry")
    outcomes: dict[str, Any]
    artifacts: list[ArtifactOut]
    custody: list[CustodyEntry]
    custody_complete: bool = Field(description=f"false when more than {MAX_CUSTODY} entries "
                                               "name this capture (see the ledger routes)")


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str | None


class VerificationOut(BaseModel):
    capture_id: str
    ok: bool
    checks: list[CheckOut]


class SimilarOut(BaseModel):
    capture_id: str
    url: str
    requested_at: str
    distance: int
    artifact: str
    matching_hashes: int


class SimilarAnswer(BaseModel):
    capture_id: str
    max_distance: int
    items: list[SimilarOut]


# -- finding one capture ------------------------------------------------------------------


def archive_of(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def checked_capture(request: Request, gate: Gate, capture_id: str,
                    action: Action | None = None) -> Capture:
    """The capture ``capture_id`` (a full id) once the gate allowed it; 404 otherwise
    (the same body for an unknown id and a capture of a case the person is not in)."""
    archive = archive_of(request)
    if len(capture_id) != CAPTURE_ID_LENGTH:
        raise not_found()
    c = models.captures
    with archive.reader.connect() as conn:
        row = conn.execute(
            sa.select(c.c.case_id, c.c.requested_by).where(c.c.id == capture_id)
        ).first()
    if row is None:
        raise not_found()
    gate.require(row.case_id, submitted_by=row.requested_by, action=action)
    return archive.get_capture(capture_id)


def _item(row: Any) -> CaptureItem:
    return CaptureItem(
        id=row.id, url=row.url, case=row.case_name, status=row.status, reason=row.reason,
        requested_at=row.requested_at, requested_by=row.requested_by, ended=row.ended,
        manifest_sha256=row.manifest_sha256,
    )


def _moment(text: str | None, what: str) -> str | None:
    """An RFC 3339 time (or a date: midnight UTC) as the archive writes times."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return rfc3339(datetime(day.year, day.month, day.day, tzinfo=UTC))
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"{what} is not a time: give RFC 3339, e.g. 2026-01-31T12:00:00Z "
                          "or a date 2026-01-31", code="bad-time") from None
    if moment.tzinfo is None:
        raise bad_request(f"{what} has no time zone: end it with Z or an offset such as "
                          "+01:00", code="bad-time")
    return rfc3339(moment)


# -- routes -------------------------------------------------------------------------------


@route(router, "POST", "/api/captures", action=Action.CAPTURE_SUBMIT, status_code=202,
       response_model=Submission)
def submit(body: SubmitBody, gate: GateDep, request: Request) -> Submission:
    """Queue each URL for the daemon under the case (which must exist; null: unfiled).
    A URL the archive will not take is listed in ``refused`` with the reason; the others
    are queued. ``capture.queued`` names the person and how they came (token or session,
    client address)."""
    from archiver.watch.jobs import JobLimits, JobQueue, JobRequest

    archive = archive_of(request)
    case = None if body.case in (None, UNFILED) else body.case
    try:
        if case is not None:
            check_text(case, "the case", max_length=MAX_NAME)
            check_case_name(case)  # "Unfiled": neither the pseudo-case nor a case
        if body.note is not None:
            check_text(body.note, "the note", max_length=MAX_NOTE)
    except BadInput as exc:
        raise bad_request(str(exc), code="bad-input") from exc
    with archive.reader.connect() as conn:
        case_id = case_id_for(conn, case)
    gate.require(case_id, submitted_by=gate.actor)
    queue = JobQueue(archive.engine, ledger=archive.ledger,
                     limits=JobLimits.from_settings(archive.settings), clock=archive.clock)
    jobs: list[QueuedJob] = []
    refused: list[RefusedUrlOut] = []
    context = gate.context()
    for given in body.urls:
        try:
            url = submitted_url(given)
        except BadUrl as exc:
            refused.append(RefusedUrlOut(
                url=printable(given[:300]),
                code="refused" if isinstance(exc, RefusedUrl) else "bad-url",
                message=str(exc)))
            continue
        submitted = queue.submit(JobRequest(
            url=url, requested_by=gate.actor, via="api", case=case, note=body.note,
            again=body.again, context=context,
        ))
        job = submitted.job or submitted.duplicate_of
        assert job is not None  # one or the other, always
        jobs.append(QueuedJob(job_id=job.id, capture_id=job.capture_id, url=job.url,
                              state=job.state, duplicate=submitted.job is None))
    return Submission(jobs=jobs, refused=refused)


@route(router, "GET", "/api/captures", action=Action.CAPTURE_LIST, response_model=CapturePage)
def list_captures(
    gate: GateDep,
    request: Request,
    case: Annotated[str | None, Query(max_length=MAX_NAME,
                                      description="a case name, or 'unfiled'")] = None,
    status: Annotated[Literal["completed", "failed", "interrupted"] | None, Query()] = None,
    url: Annotated[str | None, Query(max_length=2048,
                                     description="captures whose URL contains this")] = None,
    since: Annotated[str | None, Query(max_length=64,
                                       description="requested at or after (RFC 3339)")] = None,
    until: Annotated[str | None, Query(max_length=64,
                                       description="requested before (RFC 3339)")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> CapturePage:
    """The captures the person may see, newest first (by request time, then id)."""
    archive = archive_of(request)
    cursors = request.app.state.cursors
    after = cursors.decode("captures", cursor)
    if after is not None and not (len(after) == 2 and all(isinstance(k, str) for k in after)):
        raise bad_request("this cursor was not given by this list; start from the first "
                          "page", code="bad-cursor")
    start, end = _moment(since, "since"), _moment(until, "until")
    c = models.captures
    with archive.reader.connect() as conn:
        shown = branches(conn, gate.visible(), case)
        if not shown:
            return CapturePage(items=[], next=None)

        def branch_query(branch: Branch | None) -> Any:
            query = sa.select(c).where(
                captures_visible(shown) if branch is None else capture_condition(branch))
            if status is not None:
                query = query.where(c.c.status == status)
            if url is not None:
                query = query.where(c.c.url.contains(url, autoescape=True))
            if start is not None:
                query = query.where(c.c.requested_at >= start)
            if end is not None:
                query = query.where(c.c.requested_at < end)
            if after is not None:
                query = query.where(sa.tuple_(c.c.requested_at, c.c.id)
                                    < sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
            return (query.order_by(c.c.requested_at.desc(), c.c.id.desc())
                    .limit(limit + 1))

        # Each branch is one range scan of ix_captures_case_requested, already in order
        # and cut at limit + 1; the union is merged and cut again. (One OR over every
        # case would make the database read and sort all of those cases' captures.)
        if len(shown) == 1:
            merged = branch_query(shown[0]).subquery()
        elif len(shown) > MAX_BRANCHES:
            # SQLite allows 500 terms in a compound select; a person in that many cases
            # gets one condition over all of them (right, if slower on a large archive).
            merged = branch_query(None).subquery()
        else:
            merged = sa.union_all(
                *(sa.select(branch_query(b).subquery()) for b in shown)).subquery()
        cases = models.cases
        rows = conn.execute(
            sa.select(merged, cases.c.name.label("case_name"))
            .outerjoin(cases, cases.c.id == merged.c.case_id)
            .order_by(merged.c.requested_at.desc(), merged.c.id.desc())
            .limit(limit + 1)
        ).all()
    page = cursors.page("captures", rows, limit, lambda r: [r.requested_at, r.id], _item)
    return CapturePage(items=page.items, next=page.next)


@route(router, "GET", "/api/captures/{capture_id}", action=Action.CAPTURE_VIEW,
       response_model=CaptureDetail)
def show_capture(capture_id: str, gate: GateDep, request: Request) -> CaptureDetail:
    """A capture's details, artifacts and custody timeline; recorded on the ledger as
    ``access.viewed`` (actor and context) before it is answered."""
    archive = archive_of(request)
    capture = checked_capture(request, gate, capture_id)
    archive.record_view(capture, actor=gate.actor, context=gate.context())
    e = entries_table.c
    with archive.reader.connect() as conn:
        entries = conn.execute(
            sa.select(e.seq, e.time, e.actor, e.action, e.payload)
            .where(e.subject == f"capture:{capture.id}")
            .order_by(e.seq).limit(MAX_CUSTODY + 1)
        ).all()
    custody = [CustodyEntry(seq=r.seq, time=r.time, actor=r.actor, action=r.action,
                            payload=_public_payload(r.payload))
               for r in entries[:MAX_CUSTODY]]
    return CaptureDetail(
        id=capture.id, url=capture.url, case=capture.case, status=capture.status,
        reason=capture.reason, requested_at=capture.requested_at,
        requested_by=capture.requested_by, ended=capture.ended,
        manifest_sha256=capture.manifest_sha256, note=capture.note,
        requested_via=capture.requested_via, message=capture.message,
        started=capture.started, final_url=capture.final_url,
        http_status=capture.http_status, key_id=capture.key_id,
        ledger_seq=capture.ledger_seq, outcomes=dict(capture.outcomes),
        artifacts=[ArtifactOut(
            name=a.name, role=a.role, media_type=a.media_type, size=a.size,
            sha256=a.sha256, sha512=a.sha512,
            download=str(request.url_for("download_artifact", capture_id=capture.id,
                                         name=a.name).path),
        ) for a in capture.artifacts],
        custody=custody, custody_complete=len(entries) <= MAX_CUSTODY,
    )


def _public_payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(payload, dict):
        return {}
    payload.pop("context", None)
    return payload


@route(router, "POST", "/api/captures/{capture_id}/verify", action=Action.CAPTURE_VERIFY,
       response_model=VerificationOut)
def verify(capture_id: str, gate: GateDep, request: Request) -> VerificationOut:
    """Re-read every copy of every artifact, check the manifest's signature and the
    capture's ledger entry against the latest signed checkpoint (auditors may verify any
    capture). Adds nothing to the ledger."""
    capture = checked_capture(request, gate, capture_id)
    result = archive_of(request).verify_capture(capture.id)
    return VerificationOut(
        capture_id=result.capture_id, ok=result.ok,
        checks=[CheckOut(name=ch.name, ok=ch.ok, detail=ch.problem) for ch in result.checks],
    )


@route(router, "GET", "/api/captures/{capture_id}/similar", action=Action.MEDIA_SIMILAR,
       response_model=SimilarAnswer)
def similar(
    capture_id: str,
    gate: GateDep,
    request: Request,
    max_distance: Annotated[int | None, Query(ge=0, le=256, description=(
        "Hamming distance of 256 bits that still counts as alike"))] = None,
) -> SimilarAnswer:
    """Captures whose media look like this capture's, closest first: only captures the
    person may see (the others are left out without a trace)."""
    from archiver.capture.media import phash

    archive = archive_of(request)
    capture = checked_capture(request, gate, capture_id)
    distance = phash.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    _, matches = archive.similar_to_capture(capture.id, max_distance=distance)
    ids = [m.capture_id for m in matches]
    visible: set[str] = set()
    if ids:
        c = models.captures
        with archive.reader.connect() as conn:
            shown = branches(conn, gate.visible())
            for start in range(0, len(ids), 500):
                visible.update(conn.execute(
                    sa.select(c.c.id).where(c.c.id.in_(ids[start:start + 500]),
                                            captures_visible(shown))).scalars())
    return SimilarAnswer(capture_id=capture.id, max_distance=distance, items=[
        SimilarOut(capture_id=m.capture_id, url=m.url, requested_at=m.requested_at,
                   distance=m.distance, artifact=m.artifact,
                   matching_hashes=m.matching_hashes)
        for m in matches if m.capture_id in visible
    ])
