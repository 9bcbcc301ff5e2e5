"""Takedown watch: revisit captured posts on a decaying schedule and record what is gone.

Each post a watch captured (and, with ``revisit.queued``, each queued capture) gets a
revisit plan: visits at ``captured + schedule[i]`` (default 1 h, 6 h, 1 d, 7 d, 30 d).
A visit is a full capture of the same URL (``via="revisit"``, ``source="revisit:<id>"``),
so whatever the platform answers is recorded, sealed and signed like any capture. A visit
that shows the post gone ends the plan and appends ``target.gone`` to the ledger:

* subject ``capture:<the visit's capture id>``, the capture whose WARC holds the exchange
  that showed the takedown (as for a fetcher's ``removed`` outcome);
* payload: the URL, why it counts as gone (``http-404``, ``http-410``, ``removal-page``
  with the marker's name, ``removed``), the HTTP status and final URL, the visit's
  manifest digest and ``capture.completed`` entry, and ``revisit_of``: the capture of the
  post while it was still up.

"Gone" means: HTTP 404 or 410; a page matching one of ``revisit.removal_markers`` (a
platform's "this post was removed" page, which often answers 200); or a capture whose
reason, or one of whose fetchers' reasons, is ``removed`` (yt-dlp says the platform took
the video down). A visit that fails for another reason (the host is down, the request
timed out) is not a takedown: the next step of the plan tries again.

When a step's time has passed while the daemon was stopped, the next visit happens once
and the plan moves on to the first step still in the future (missed visits coalesce).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from archiver import models
from archiver.archive import Archive, Capture
from archiver.capture.values import SERVICE_ACTOR
from archiver.clock import Clock, rfc3339
from archiver.logs import event
from archiver.settings import RemovalMarker, Settings
from archiver.watch.jobs import (
    KIND_REVISIT,
    PRIORITY_REVISIT,
    Job,
    JobQueue,
    JobRequest,
)
from chain_of_custody.ledger import entries_table
from storage.errors import StorageError

log = logging.getLogger("archiver.revisit")

WAITING, QUEUED, GONE, DONE = "waiting", "queued", "gone", "done"
GONE_STATUSES = {404: "http-404", 410: "http-410"}
REMOVED = "removed"
BODY_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GoneVerdict:
    reason: str
    marker: str | None = None


@dataclass(frozen=True, slots=True)
class GoneRecord:
    """One ``target.gone`` entry, with the capture it names."""

    seq: int
    time: str
    url: str
    reason: str
    capture_id: str
    http_status: int | None
    revisit_of: str | None
    case: str | None
    manifest_sha256: str | None

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "url": self.url, "reason": self.reason,
                "capture_id": self.capture_id, "http_status": self.http_status,
                "revisit_of": self.revisit_of, "case": self.case,
                "manifest_sha256": self.manifest_sha256}


def next_step(captured: datetime, schedule: Sequence[float], after: int,
              now: datetime) -> int | None:
    """The first step after ``after`` whose time is still ahead, or None: plan done."""
    for step in range(after + 1, len(schedule)):
        if captured + timedelta(seconds=schedule[step]) > now:
            return step
    return None


def gone_by_status(view: Capture) -> GoneVerdict | None:
    """The verdict the capture's own fields give (no WARC reading)."""
    outcomes = getattr(view, "outcomes", None) or {}
    reasons = {view.reason} | {
        o.get("reason") for o in outcomes.values() if isinstance(o, dict)
    }
    if REMOVED in reasons:
        return GoneVerdict(REMOVED)
    if view.ok and view.http_status in GONE_STATUSES:
        return GoneVerdict(GONE_STATUSES[view.http_status])
    return None


def match_marker(markers: Sequence[RemovalMarker], final_url: str | None,
                 text: str | None) -> RemovalMarker | None:
    for marker in markers:
        if marker.final_url and final_url and re.search(marker.final_url, final_url):
            return marker
        if marker.body and text is not None and re.search(marker.body, text):
            return marker
    return None


class Revisits:
    def __init__(self, archive: Archive, queue: JobQueue, *, settings: Settings,
                 clock: Clock | None = None) -> None:
        self.archive = archive
        self.queue = queue
        self.settings = settings
        self.clock = clock or archive.clock

    @property
    def schedule(self) -> tuple[float, ...]:
        return tuple(self.settings.revisit.schedule)

    # -- planning ----------------------------------------------------------------------

    def wanted_for(self, job: Job) -> bool:
        """Whether a completed capture of this job gets a revisit plan."""
        if not self.settings.revisit.enabled or not self.schedule or job.kind == KIND_REVISIT:
            return False
        # An investigator's submission, queued from the command line or through the API.
        return job.via == "watch" or (job.via in ("queue", "api")
                                      and self.settings.revisit.queued)

    def plan(self, conn: sa.Connection, view: Capture, job: Job) -> None:
        captured = datetime.fromisoformat(view.ended or view.requested_at)
        conn.execute(sa.insert(models.revisits).values(
            capture_id=view.id, url=view.url, watch_id=job.watch_id, case_name=view.case,
            captured_at=rfc3339(captured), step=0,
            due_at=rfc3339(captured + timedelta(seconds=self.schedule[0])),
            state=WAITING, visits=0,
        ))

    def submit_due(self, *, limit: int = 200) -> int:
        """Queue a revisit job for every plan whose step is due. Returns how many."""
        r = models.revisits
        now_s = rfc3339(self.clock())
        with self.archive.engine.begin() as conn:
            rows = conn.execute(
                sa.select(r).where(r.c.state == WAITING, r.c.due_at <= now_s)
                .order_by(r.c.due_at).limit(limit).with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                self.queue.submit(JobRequest(
                    url=row.url, requested_by=SERVICE_ACTOR, via="revisit",
                    kind=KIND_REVISIT, priority=PRIORITY_REVISIT,
                    source=f"revisit:{row.capture_id}", case=row.case_name,
                    watch_id=row.watch_id, revisit_of=row.capture_id, again=True,
                ), connection=conn)
                conn.execute(sa.update(r).where(r.c.capture_id == row.capture_id)
                             .values(state=QUEUED))
        if rows:
            event(log, "revisit.queued", count=len(rows))
        return len(rows)

    def visited(self, conn: sa.Connection, original: str, visit: Capture | None,
                gone_seq: int | None) -> None:
        """Move a plan on after a visit (``visit`` None: the visit gave up)."""
        r = models.revisits
        row = conn.execute(sa.select(r).where(r.c.capture_id == original)).first()
        if row is None:
            return
        now = self.clock()
        values: dict[str, Any] = {"visits": row.visits + 1, "last_visit_at": rfc3339(now)}
        if visit is not None:
            values["last_capture_id"] = visit.id
        if gone_seq is not None:
            values |= {"state": GONE, "gone_seq": gone_seq}
        else:
            step = next_step(datetime.fromisoformat(row.captured_at), self.schedule,
                             row.step, now)
            if step is None:
                values["state"] = DONE
            else:
                due = datetime.fromisoformat(row.captured_at) + timedelta(
                    seconds=self.schedule[step])
                values |= {"state": WAITING, "step": step, "due_at": rfc3339(due)}
        conn.execute(sa.update(r).where(r.c.capture_id == original).values(**values))

    # -- judging -----------------------------------------------------------------------

    def judge(self, view: Capture) -> GoneVerdict | None:
        """Whether this capture shows its target gone (reads the WARC only when body
        markers are configured)."""
        verdict = gone_by_status(view)
        if verdict is not None or not view.ok:
            return verdict
        markers = self.settings.revisit.removal_markers
        if not markers:
            return None
        needs_body = any(m.body for m in markers)
        text = self._final_page_text(view) if needs_body else None
        marker = match_marker(markers, view.final_url, text)
        return GoneVerdict("removal-page", marker.name) if marker is not None else None

    def _final_page_text(self, view: Capture) -> str | None:
        from warcio.archiveiterator import ArchiveIterator
        from warcio.bufferedreaders import ChunkedDataException
        from warcio.exceptions import ArchiveLoadFailed
        from warcio.statusandheaders import StatusAndHeadersParserException

        warc = next((a for a in view.artifacts if a.role == "warc"), None)
        if warc is None or view.final_url is None:
            return None
        try:
            with self.archive.store.open(warc.sha256) as stream:
                for record in ArchiveIterator(stream):
                    if record.rec_type == "response" and record.rec_headers.get_header(
                        "WARC-Target-URI"
                    ) == view.final_url:
                        data: bytes = record.content_stream().read(BODY_LIMIT)
                        return data.decode("utf-8", errors="replace")
        except (StorageError, OSError, ValueError, ArchiveLoadFailed, ChunkedDataException,
                StatusAndHeadersParserException) as exc:
            # Unreadable evidence is for `archiver verify` to report; here it only means
            # no marker can be matched.
            event(log, "revisit.unreadable", level=logging.WARNING, capture=view.id,
                  error=str(exc))
        return None

    def record_gone(
        self, conn: sa.Connection, view: Capture, verdict: GoneVerdict, *,
        revisit_of: str | None, watch_id: int | None,
    ) -> int:
        """Append ``target.gone`` for ``view`` (unless its capture already did, for a
        fetcher's ``removed``). Returns the entry's seq."""
        e = entries_table.c
        existing = conn.execute(
            sa.select(e.seq).where(e.subject == f"capture:{view.id}", e.action == "target.gone")
            .order_by(e.seq).limit(1)
        ).scalar_one_or_none()
        if existing is not None:
            return int(existing)
        entry = self.archive.ledger.append(
            actor=SERVICE_ACTOR,
            action="target.gone",
            subject=f"capture:{view.id}",
            payload={
                "url": view.url, "reason": verdict.reason, "marker": verdict.marker,
                "http_status": view.http_status, "final_url": view.final_url,
                "capture_status": view.status, "manifest_sha256": view.manifest_sha256,
                "capture_seq": view.ledger_seq, "revisit_of": revisit_of,
                "watch_id": watch_id,
            },
            connection=conn,
        )
        return entry.seq

    # -- reading -----------------------------------------------------------------------

    def gone(self, *, case: str | None = None) -> list[GoneRecord]:
        """Every ``target.gone`` on the ledger, oldest first, optionally of one case."""
        entries = list(self.archive.ledger.entries(actions=["target.gone"]))
        ids = {e.subject.removeprefix("capture:") for e in entries}
        c = models.captures
        cases: dict[str, str | None] = {}
        with self.archive.engine.connect() as conn:
            for chunk in _chunks(sorted(ids), 500):
                for row in conn.execute(
                    sa.select(c.c.id, models.cases.c.name)
                    .outerjoin(models.cases, models.cases.c.id == c.c.case_id)
                    .where(c.c.id.in_(chunk))
                ):
                    cases[row.id] = row.name
        records = []
        for entry in entries:
            capture_id = entry.subject.removeprefix("capture:")
            record_case = cases.get(capture_id)
            if case is not None and record_case != case:
                continue
            p = entry.payload
            status = p.get("http_status")
            records.append(GoneRecord(
                seq=entry.seq, time=entry.time, url=str(p.get("url", "")),
                reason=str(p.get("reason", "")), capture_id=capture_id,
                http_status=status if isinstance(status, int) else None,
                revisit_of=p.get("revisit_of") if isinstance(p.get("revisit_of"), str) else None,
                case=record_case,
                manifest_sha256=p.get("manifest_sha256")
                if isinstance(p.get("manifest_sha256"), str) else None,
            ))
        return records

    def counts(self) -> dict[str, int]:
        r = models.revisits
        with self.archive.engine.connect() as conn:
            found = {state: int(n) for state, n in conn.execute(
                sa.select(r.c.state, sa.func.count()).group_by(r.c.state))}
        return {state: found.get(state, 0) for state in (WAITING, QUEUED, GONE, DONE)}


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
