"""The pages of cases and captures.

``GET /cases``                      my cases (every case, for an admin)
``GET /cases/{name}``               a case: its captures (100 a page), links to the rest
``GET/POST /submit``                paste URLs, choose a case, add a note
``GET /submit/jobs?ids=…``          the jobs just queued, as they move (polled each second)
``GET /captures/{id}``              a capture (``access.viewed``, as the API)
``POST /captures/{id}/verify``      verify it now: each check

The data comes from the API's route functions (:mod:`archiver.web.api.captures`,
:mod:`archiver.web.api.jobs`), called with this request's gate: the same checks, the
same queries, the same ledger entries.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from archiver.capture.values import ArtifactView, Capture
from archiver.errors import ArchiverError
from archiver.people.access import Action
from archiver.web.api import admin as admin_api
from archiver.web.api import captures as api
from archiver.web.api import jobs as jobs_api
from archiver.web.errors import bad_request, not_found
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pages.render import PAGE_SIZE, as_action, render, render_text
from archiver.web.visibility import UNFILED, branches, case_id_for
from chain_of_custody.ledger import entries_table

router = APIRouter(include_in_schema=False)

CursorQ = Annotated[str | None, Query(max_length=512)]
MAX_PAGE_JSON = 4 * 1024 * 1024
"""The largest page.json read to show a capture's title and text."""
MAX_TEXT = 100_000
"""Characters of the visible text shown on the page (the artifact has all of it)."""
FINAL_JOB_STATES = frozenset({"done", "failed"})


def _next(path: str, cursor: str | None, **params: str) -> str | None:
    if cursor is None:
        return None
    return f"{path}?{urlencode({**params, 'cursor': cursor})}"


@route(router, "GET", "/cases", action=Action.SELF_VIEW, response_class=HTMLResponse)
def cases_page(request: Request, gate: GateDep, cursor: CursorQ = None) -> HTMLResponse:
    """My cases, by name, with my role on each (100 a page)."""
    page = admin_api.list_cases(request, gate, cursor=cursor, limit=PAGE_SIZE)
    return render(request, "cases.html", cases=page.items,
                  next_url=_next("/cases", page.next))


@route(router, "GET", "/cases/{name}", action=Action.CAPTURE_LIST, response_class=HTMLResponse)
def case_page(request: Request, gate: GateDep, name: str, cursor: CursorQ = None,
              status: Annotated[str | None, Query(max_length=20)] = None) -> HTMLResponse:
    """A case's captures, newest first (100 a page), and what else there is of it: its
    watches, takedowns and exports (for those whose role shows them)."""
    if len(name) > api.MAX_NAME:
        raise not_found()
    shown_status = status if status in ("completed", "failed", "interrupted") else None
    page = api.list_captures(gate, request, case=name, status=shown_status,  # type: ignore[arg-type]
                             url=None, since=None, until=None, cursor=cursor,
                             limit=PAGE_SIZE)
    archive = api.archive_of(request)
    with archive.engine.connect() as conn:
        case_id = case_id_for(conn, name)
    return render(
        request, "case.html", name=name, captures=page.items,
        next_url=_next(f"/cases/{quote(name, safe='')}", page.next,
                       **({"status": shown_status} if shown_status else {})),
        may_export=name != UNFILED and gate.allows(case_id, action=Action.EXPORT_DOWNLOAD),
        may_submit=gate.allows(case_id, action=Action.CAPTURE_SUBMIT),
    )


def _submit_cases(request: Request, gate: Gate) -> list[str]:
    """The cases the person may submit to (names; ``unfiled`` last)."""
    archive = api.archive_of(request)
    with archive.engine.connect() as conn:
        shown = branches(conn, gate.visible())
    names = sorted(b.case_name for b in shown if b.case_name is not None)
    return names + ([UNFILED] if any(b.case_id is None for b in shown) else [])


@route(router, "GET", "/submit", action=Action.CAPTURE_SUBMIT, response_class=HTMLResponse)
def submit_page(request: Request, gate: GateDep,
                case: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    """Paste one or many URLs (one a line), choose the case, add a note."""
    return render(request, "submit.html", cases=_submit_cases(request, gate), chosen=case)


@route(router, "POST", "/submit", action=Action.CAPTURE_SUBMIT, response_class=HTMLResponse)
def submit(request: Request, gate: GateDep,
           urls: Annotated[str, Form(max_length=300_000)],
           case: Annotated[str, Form(max_length=200)] = UNFILED,
           note: Annotated[str, Form(max_length=10_000)] = "",
           again: Annotated[str | None, Form(max_length=5)] = None) -> HTMLResponse:
    """Queue the URLs (the API's submission: ``capture.queued`` for each); answers the
    list of jobs, which the page then follows."""
    lines = [line.strip() for line in urls.splitlines() if line.strip()]
    if not lines:
        raise bad_request("paste at least one URL (one a line)", code="bad-input")
    if len(lines) > 100:
        raise bad_request(f"at most 100 URLs at once ({len(lines)} given)", code="bad-input")
    try:
        body = api.SubmitBody(urls=lines, case=case or None, note=note.strip() or None,
                              again=again is not None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise bad_request(f"{where}: {first.get('msg', 'invalid')}", code="bad-input") from None
    answer = api.submit(body, gate, request)
    ids = ",".join(str(j.job_id) for j in answer.jobs)
    jobs = [_job(gate, request, j.job_id) for j in answer.jobs]
    return render(request, "fragments/submitted.html", refused=answer.refused,
                  jobs_html=_jobs_fragment(request, ids, jobs))


def _job(gate: Gate, request: Request, job_id: int) -> jobs_api.JobOut:
    return jobs_api.show_job(job_id, as_action(gate, Action.JOB_VIEW), request)


def _jobs_fragment(request: Request, ids: str, jobs: list[jobs_api.JobOut]) -> str:
    final = all(j.state in FINAL_JOB_STATES for j in jobs)
    return render_text(request, "fragments/jobs.html", jobs=jobs, final=final,
                       poll=f"/submit/jobs?{urlencode({'ids': ids})}")


@route(router, "GET", "/submit/jobs", action=Action.JOB_VIEW, response_class=HTMLResponse)
def submitted_jobs(request: Request, gate: GateDep,
                   ids: Annotated[str, Query(max_length=2100)]) -> HTMLResponse:
    """The jobs ``ids`` (comma-separated, at most 100) as they stand: polled by the
    submit page each second until every one is done or failed."""
    try:
        wanted = [int(part) for part in ids.split(",") if part.strip()]
    except ValueError:
        raise not_found() from None
    if not wanted or len(wanted) > 100:
        raise not_found()
    jobs = [jobs_api.show_job(job_id, gate, request) for job_id in wanted]
    return HTMLResponse(_jobs_fragment(request, ids, jobs))


def _page_facts(request: Request, capture: Capture) -> dict[str, Any]:
    """The title and visible text the browser saw (its ``page.json``), when there is one
    and it can be read; the stored file is not re-hashed here (verify does that)."""
    none: dict[str, Any] = {"title": None, "text": None, "text_cut": False,
                            "unreadable": False}
    found = next((a for a in capture.artifacts if a.name.rsplit("/", 1)[-1] == "page.json"
                  and a.media_type.startswith("application/json")), None)
    if found is None or found.size > MAX_PAGE_JSON:
        return none
    try:
        with api.archive_of(request).open_artifact(found) as stream:
            data = json.loads(stream.read(MAX_PAGE_JSON + 1))
    except (ArchiverError, OSError, ValueError):
        return {**none, "unreadable": True}
    if not isinstance(data, dict):
        return none
    title, text = data.get("title"), data.get("text")
    text = text if isinstance(text, str) else None
    return {**none, "title": title if isinstance(title, str) else None,
            "text": None if text is None else text[:MAX_TEXT],
            "text_cut": text is not None and len(text) > MAX_TEXT}


def _replay_url(request: Request, gate: Gate, capture: Capture) -> str | None:
    """The replay frame's address (:func:`archiver.web.replay.replay_frame_url`, which
    records the replay view), or None: no replay origin is configured, or the capture
    has nothing to replay (no WARC)."""
    options = getattr(request.app.state, "options", None)
    if getattr(options, "replay_origin", None) is None:
        return None  # never a frame of this origin: captured pages do not run here
    from archiver.web.replay import ReplayRefused, replay_frame_url

    try:
        return replay_frame_url(request, gate, capture)
    except ReplayRefused:
        return None


def _inline(artifact: ArtifactView, kinds: tuple[str, ...]) -> bool:
    essence = artifact.media_type.split(";", 1)[0].strip().lower()
    return essence.startswith(kinds)


@route(router, "GET", "/captures/{capture_id}", action=Action.CAPTURE_VIEW,
       response_class=HTMLResponse)
def capture_page(request: Request, gate: GateDep, capture_id: str) -> HTMLResponse:
    """A capture: screenshot, title and visible text, each fetcher's outcome, the media
    (a video player streamed with Range from the artifact route), every artifact (size,
    SHA-256, download), signature and ledger status, verify now, and the custody
    timeline. Recorded as ``access.viewed`` (by the API's function) before it is shown."""
    detail = api.show_capture(capture_id, gate, request)
    capture = api.archive_of(request).get_capture(detail.id)
    with api.archive_of(request).engine.connect() as conn:
        case_id = None if capture.case is None else case_id_for(conn, capture.case)
    may_download = gate.allows(case_id, submitted_by=capture.requested_by,
                               action=Action.ARTIFACT_DOWNLOAD)
    screenshot = next((a for a in capture.artifacts if a.role == "screenshot"
                       and _inline(a, ("image/png",))), None) if may_download else None
    media = [a for a in capture.artifacts if _inline(a, ("video/", "audio/"))] \
        if may_download else []
    downloads = {a.name: a.download for a in detail.artifacts}
    custody = detail.custody[:PAGE_SIZE]
    more = len(detail.custody) > PAGE_SIZE or not detail.custody_complete
    return render(
        request, "capture.html", c=detail, facts=_page_facts(request, capture),
        custody=custody,
        custody_next=f"/captures/{detail.id}/custody?after={custody[-1].seq}" if more
        else None,
        may_download=may_download,
        screenshot=None if screenshot is None else downloads[screenshot.name],
        media=[(a, downloads[a.name]) for a in media],
        may_verify=gate.allows(case_id, submitted_by=capture.requested_by,
                               action=Action.CAPTURE_VERIFY),
        replay=_replay_url(request, gate, capture) if may_download else None,
        outcomes=sorted(detail.outcomes.items()),
    )


@route(router, "GET", "/captures/{capture_id}/custody", action=Action.CAPTURE_VIEW,
       response_class=HTMLResponse)
def custody_page(request: Request, gate: GateDep, capture_id: str,
                 after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0) -> HTMLResponse:
    """The rest of a capture's custody timeline, 100 entries a page after entry
    ``after`` (seq, person, act and time: nothing of the evidence content)."""
    capture = api.checked_capture(request, gate, capture_id)
    e = entries_table.c
    with api.archive_of(request).engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.seq, e.time, e.actor, e.action)
            .where(e.subject == f"capture:{capture.id}", e.seq > after)
            .order_by(e.seq).limit(PAGE_SIZE + 1)).all()
    shown = rows[:PAGE_SIZE]
    return render(request, "custody.html", capture=capture, custody=shown,
                  custody_next=f"/captures/{capture.id}/custody?after={shown[-1].seq}"
                  if len(rows) > PAGE_SIZE else None)


@route(router, "POST", "/captures/{capture_id}/verify", action=Action.CAPTURE_VERIFY,
       response_class=HTMLResponse)
def verify(request: Request, gate: GateDep, capture_id: str) -> HTMLResponse:
    """Verify the capture now (every copy, the signature, the ledger): each check."""
    result = api.verify(capture_id, gate, request)
    return render(request, "fragments/verified.html", result=result)
