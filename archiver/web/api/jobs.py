"""The daemon's side, as a person may see it: jobs, takedowns, and the queue's status.

``GET /api/jobs``          the jobs of the cases the person may see, newest first
``GET /api/jobs/{id}``     one job: state, attempts, the last error in plain words
``GET /api/takedowns``     targets recorded gone (``target.gone``), newest first
``GET /api/status``        counts only: queue depth, processes alive, last poll time

A job names its case by name (``jobs.case_name``); it is judged like the capture it will
make: its case, or for an unfiled job, whether the person submitted it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from archiver import models
from archiver.people.access import Action
from archiver.web.api.captures import MAX_NAME, archive_of
from archiver.web.errors import bad_request, not_found
from archiver.web.gate import GateDep, route
from archiver.web.pagination import Cursor, Limit
from archiver.web.visibility import branches, captures_visible, case_id_for, jobs_visible
from chain_of_custody.ledger import entries_table

router = APIRouter(tags=["jobs"])

MAX_JOB_ID = 2**63 - 1

_REASONS = {
    "refused": "the address was refused (a private or local address, or a scheme other "
               "than http and https)",
    "timeout": "the capture ran out of time",
    "redirects": "the site redirected too many times",
    "too-large": "a response was larger than the archive accepts",
    "tls": "the secure connection failed (TLS handshake or certificate)",
    "network": "the site could not be reached (name lookup, connection or protocol)",
    "budget": "the capture reached its size or request budget",
    "storage": "the archive could not store the capture",
    "error": "the capture failed",
    "removed": "the platform says the content was removed",
}


def plain_error(text: str | None) -> str | None:
    """A job's ``last_error`` in words a person can read: the reason codes of failed
    captures spelled out, an HTTP status said as such, an error of the archive itself
    (an exception's text, which may name files of the server) only said to have
    happened: the operator's log has it."""
    if text is None:
        return None
    gave_up = ""
    core = text
    if core.endswith(")") and " (gave up after " in core:
        core, _, tail = core.rpartition(" (gave up after ")
        gave_up = f" (gave up after {tail[:-1]})"
    if core in _REASONS:
        return _REASONS[core] + gave_up
    if core.startswith("the server answered HTTP "):
        return core + gave_up
    if core.startswith("interrupted: "):
        return ("the capture was interrupted (the worker stopped or lost its lease); "
                "it is tried again" if not gave_up else
                "the capture was interrupted every time") + gave_up
    return "the capture stopped on an error of the archive; the operator's log has the " \
           "details" + gave_up


class JobOut(BaseModel):
    id: int
    url: str
    case: str | None
    state: Literal["queued", "running", "done", "failed"]
    attempts: int
    max_attempts: int
    created: str
    requested_by: str
    via: str
    capture_id: str = Field(description="the capture of the current (or last) attempt")
    not_before: str
    started: str | None
    finished: str | None
    result: str | None = Field(description="completed / failed: how the capture ended")
    last_error: str | None = Field(description="why the last attempt did not end the job, "
                                               "in plain words")


class JobPage(BaseModel):
    items: list[JobOut]
    next: str | None


class TakedownOut(BaseModel):
    seq: int = Field(description="the target.gone ledger entry")
    time: str
    url: str
    reason: str = Field(description="http-404, http-410, removal-page, removed")
    http_status: int | None
    capture_id: str = Field(description="the capture that showed the target gone")
    revisit_of: str | None = Field(description="the capture made while it was up")
    case: str | None
    manifest_sha256: str | None


class TakedownPage(BaseModel):
    items: list[TakedownOut]
    next: str | None


class QueueCounts(BaseModel):
    queued: int
    due: int
    running: int
    done: int
    failed: int


class StatusOut(BaseModel):
    queue: QueueCounts
    workers_alive: int
    daemons_alive: int
    scheduler_running: bool
    last_poll_at: str | None
    watches_active: int
    watches_paused: int


def _job_out(row: Any) -> JobOut:
    return JobOut(
        id=int(row.id), url=row.url, case=row.case_name, state=row.state,
        attempts=row.attempts, max_attempts=row.max_attempts, created=row.created,
        requested_by=row.requested_by, via=row.via, capture_id=row.capture_id,
        not_before=row.not_before, started=row.started, finished=row.finished,
        result=row.result, last_error=plain_error(row.last_error),
    )


@route(router, "GET", "/api/jobs/{job_id}", action=Action.JOB_VIEW, response_model=JobOut)
def show_job(job_id: int, gate: GateDep, request: Request) -> JobOut:
    """One job, if it is of a case the person may see (else 404, as for no such job)."""
    archive = archive_of(request)
    j = models.jobs
    if not 0 < job_id <= MAX_JOB_ID:
        raise not_found()
    with archive.reader.connect() as conn:
        row = conn.execute(sa.select(j).where(j.c.id == job_id)).first()
        if row is None:
            raise not_found()
        case_id = case_id_for(conn, row.case_name)
    gate.require(case_id, submitted_by=row.requested_by)
    return _job_out(row)


@route(router, "GET", "/api/jobs", action=Action.JOB_VIEW, response_model=JobPage)
def list_jobs(
    gate: GateDep,
    request: Request,
    case: Annotated[str | None, Query(max_length=MAX_NAME,
                                      description="a case name, or 'unfiled'")] = None,
    state: Annotated[Literal["queued", "running", "done", "failed"] | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JobPage:
    """The jobs the person may see, newest first."""
    archive = archive_of(request)
    cursors = request.app.state.cursors
    after = cursors.decode("jobs", cursor)
    if after is not None and not (len(after) == 1 and isinstance(after[0], int)):
        raise bad_request("this cursor was not given by this list; start from the first "
                          "page", code="bad-cursor")
    j = models.jobs
    with archive.reader.connect() as conn:
        shown = branches(conn, gate.visible(), case)
        query = sa.select(j).where(jobs_visible(shown))
        if state is not None:
            query = query.where(j.c.state == state)
        if after is not None:
            query = query.where(j.c.id < after[0])
        rows = conn.execute(query.order_by(j.c.id.desc()).limit(limit + 1)).all()
    page = cursors.page("jobs", rows, limit, lambda r: [int(r.id)], _job_out)
    return JobPage(items=page.items, next=page.next)


@route(router, "GET", "/api/takedowns", action=Action.TAKEDOWN_VIEW, response_model=TakedownPage)
def list_takedowns(
    gate: GateDep,
    request: Request,
    case: Annotated[str | None, Query(max_length=MAX_NAME,
                                      description="a case name, or 'unfiled'")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> TakedownPage:
    """Targets recorded gone, newest first: the capture that showed each gone, and the
    capture made while it was up (when the person may see that one too)."""
    archive = archive_of(request)
    cursors = request.app.state.cursors
    after = cursors.decode("takedowns", cursor)
    if after is not None and not (len(after) == 1 and isinstance(after[0], int)):
        raise bad_request("this cursor was not given by this list; start from the first "
                          "page", code="bad-cursor")
    e, c, cases = entries_table.c, models.captures, models.cases
    r, up = models.revisits, models.captures.alias("while_up")
    with archive.reader.connect() as conn:
        shown = branches(conn, gate.visible(), case)
        # A takedown is shown with the capture that showed it gone, or with the capture
        # it was a revisit of (a revisit of an unfiled capture is the service's own, so
        # the person who submitted the capture sees its takedown through the latter).
        query = (
            sa.select(e.seq, e.time, e.payload, c.c.id.label("capture_id"),
                      cases.c.name.label("case_name"))
            .select_from(entries_table)
            .join(c, c.c.id == sa.func.substr(e.subject, len("capture:") + 1))
            .outerjoin(cases, cases.c.id == c.c.case_id)
            .outerjoin(r, r.c.gone_seq == e.seq)
            .outerjoin(up, up.c.id == r.c.capture_id)
            .where(e.action == "target.gone", e.subject.startswith("capture:"),
                   sa.or_(captures_visible(shown), captures_visible(shown, up)))
        )
        if after is not None:
            query = query.where(e.seq < after[0])
        rows = conn.execute(query.order_by(e.seq.desc()).limit(limit + 1)).all()
        payloads = {r.seq: _payload(r.payload) for r in rows}
        earlier = sorted({p["revisit_of"] for p in payloads.values()
                          if isinstance(p.get("revisit_of"), str)})
        visible_earlier = set(conn.execute(
            sa.select(c.c.id).where(c.c.id.in_(earlier), captures_visible(shown))
        ).scalars()) if earlier else set()

    def item(row: Any) -> TakedownOut:
        p = payloads[row.seq]
        status = p.get("http_status")
        was = p.get("revisit_of")
        sha = p.get("manifest_sha256")
        return TakedownOut(
            seq=row.seq, time=row.time, url=str(p.get("url", "")),
            reason=str(p.get("reason", "")),
            http_status=status if isinstance(status, int) else None,
            capture_id=row.capture_id,
            revisit_of=was if was in visible_earlier else None,
            case=row.case_name, manifest_sha256=sha if isinstance(sha, str) else None,
        )

    page = cursors.page("takedowns", rows, limit, lambda r: [int(r.seq)], item)
    return TakedownPage(items=page.items, next=page.next)


def _payload(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


@route(router, "GET", "/api/status", action=Action.STATUS_VIEW, response_model=StatusOut)
def status(request: Request) -> StatusOut:
    """How the queue stands, as counts: nothing about any capture, URL, case or error."""
    from archiver.watch.jobs import JobLimits, JobQueue
    from archiver.watch.status import ProcessRegistry

    archive = archive_of(request)
    settings = archive.settings
    queue = JobQueue(archive.engine, ledger=archive.ledger,
                     limits=JobLimits.from_settings(settings), clock=archive.clock)
    counts = queue.counts()
    processes = ProcessRegistry(archive.engine, clock=archive.clock).live(
        stale_after=2 * settings.daemon.lease_seconds)
    w = models.watches
    with archive.reader.connect() as conn:
        last_poll = conn.execute(sa.select(sa.func.max(w.c.last_poll_at))).scalar_one()
        watch_states = {s: int(n) for s, n in conn.execute(
            sa.select(w.c.status, sa.func.count()).group_by(w.c.status))}
    return StatusOut(
        queue=QueueCounts(**{k: counts.get(k, 0) for k in
                             ("queued", "due", "running", "done", "failed")}),
        workers_alive=sum(1 for p in processes if p.role == "worker"),
        daemons_alive=sum(1 for p in processes if p.role == "daemon"),
        scheduler_running=any(p.scheduler for p in processes),
        last_poll_at=last_poll,
        watches_active=watch_states.get("active", 0),
        watches_paused=watch_states.get("paused", 0),
    )
