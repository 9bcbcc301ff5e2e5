"""Capture jobs in the database: submit, claim, heartbeat, finish, retry, recover.

A job asks for one capture of one URL. Investigators submit them (``archiver capture
--queue``), watch polls submit one per new post, the revisit schedule submits revisits.
Workers anywhere claim them; the database is the only coordinator.

States::

    queued ──claim──> running ──finish──> done      (a capture was recorded)
       ^                 │   └──────────> failed    (gave up: refused, or attempts spent)
       └── retry/recover ┘

Claiming is safe with any number of processes:

* PostgreSQL: the next job is chosen with ``SELECT … FOR UPDATE SKIP LOCKED`` (a row
  another worker is claiming is skipped, never waited for or taken twice); then a
  transaction-scoped advisory lock on the job's host serialises the per-host checks,
  so "at most N running per host" and "one start per 1/rate seconds per host" hold
  exactly, not approximately.
* SQLite: every transaction begins ``IMMEDIATE`` (see :mod:`archiver.db`), so claims
  are serialised by the database write lock: one claim at a time, same checks.

A job carries the id of the capture its current attempt will produce (``capture_id``,
handed to ``Archive.capture``). Each attempt gets a fresh id, because a recorded capture
(completed or failed) is a fact that is never overwritten; ``job_attempts`` links them.

A running job holds a lease that its worker renews (:meth:`JobQueue.heartbeat`). When the
lease runs out, or the worker is known dead, :meth:`JobQueue.recover` puts the job back:
if its capture was already recorded the next claim only finishes the bookkeeping; if not,
a ``capture.interrupted`` entry closes the attempt on the ledger (so every
``capture.requested`` is followed by exactly one of completed, failed or interrupted) and
the job runs again under a new capture id. Nothing half-sealed is ever referenced: an
interrupted capture never reached the transaction that records it.

The capture itself holds a lease of its own (:mod:`archiver.capture.leases`), and any
command may close it when its process is gone. Both paths close through
:func:`~archiver.capture.leases.close_interrupted`, which appends at most once per
capture; a job whose capture was closed by the other path is recovered as interrupted.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from archiver import models
from archiver.capture import leases
from archiver.capture.parallel import host_of
from archiver.clock import Clock, IdFactory, new_capture_id, rfc3339, utc_now
from archiver.errors import NotFoundError
from archiver.settings import Settings
from chain_of_custody.ledger import Ledger

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)

PRIORITY_INVESTIGATOR = 0
"""Investigators' submissions run before scheduled work …"""
PRIORITY_WATCH = 10
"""… new posts found by watches next …"""
PRIORITY_REVISIT = 20
"""… and takedown revisits last."""

KIND_CAPTURE = "capture"
KIND_REVISIT = "revisit"

RETRY_REASONS = frozenset({"timeout", "network", "storage", "error"})
"""Capture failure reasons that may pass (``capture.failed`` reason codes)."""
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses of a *completed* capture that say "not now" rather than "this is it"."""

_CLAIM_TRIES = 8
# pg_advisory_xact_lock(int4, int4) namespaces: the first 4 bytes (signed) of
# SHA-256("evidence-archiver/job-host") and SHA-256("evidence-archiver/job-url").
_PG_HOST_LOCK = -1756712772
_PG_URL_LOCK = -1513554595



@dataclass(frozen=True, slots=True, kw_only=True)
class JobLimits:
    """The queue's knobs (``daemon.*`` in the configuration)."""

    per_host_concurrency: int = 2
    per_host_rate: float = 1.0
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        d = settings.daemon
        return cls(
            per_host_concurrency=d.per_host_concurrency,
            per_host_rate=d.per_host_rate,
            max_attempts=d.max_attempts,
            retry_base_seconds=d.retry_base_seconds,
            retry_max_seconds=d.retry_max_seconds,
            lease_seconds=d.lease_seconds,
        )


def backoff_delay(failures: int, *, base: float, cap: float) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: ``base x 2^(failures-1)``,
    at most ``cap``. Deterministic: per-host rate limits already spread retries out."""
    if failures < 1:
        return 0.0
    # 2**64 is far past any cap; avoid float overflow for absurd attempt counts.
    return float(min(cap, base * 2 ** min(failures - 1, 64)))


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _pg_key(text: str) -> int:
    value = zlib.crc32(text.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


PERSON_PREFIX = "user:"
"""How the ledger names a person (:func:`archiver.people.access.actor_for`)."""


def _same_owner(request: JobRequest) -> list[sa.ColumnElement[bool]]:
    """The jobs that may answer ``request`` for the URL it names: of the same case only
    (no case: no case), and an unfiled job of a person (``user:<login>``) only that
    person's, while the operator's and the watches' unfiled jobs answer each other.

    Threat model: once several people use the archive, an answer with another case's
    job (its id, its capture) would tell bob that carol's case holds that URL, and hand
    him a capture he has no role on."""
    j = models.jobs
    if request.case is not None:
        return [j.c.case_name == request.case]
    if request.requested_by.startswith(PERSON_PREFIX):
        return [j.c.case_name.is_(None), j.c.requested_by == request.requested_by]
    return [j.c.case_name.is_(None),
            sa.not_(j.c.requested_by.startswith(PERSON_PREFIX, autoescape=True))]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """What to capture, for whom, and how urgently."""

    url: str
    requested_by: str
    via: str
    kind: str = KIND_CAPTURE
    priority: int = PRIORITY_INVESTIGATOR
    source: str | None = None
    case: str | None = None
    note: str | None = None
    watch_id: int | None = None
    revisit_of: str | None = None
    again: bool = False
    """Capture even when the URL was captured (or is queued) already."""
    context: Mapping[str, str] | None = None
    """How the requester reached the archive (token or session id, client address:
    :meth:`~archiver.people.access.Principal.context`), recorded with ``capture.queued``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: int
    kind: str
    url: str
    host: str
    priority: int
    state: str
    attempts: int
    max_attempts: int
    not_before: str
    created: str
    requested_by: str
    via: str
    source: str | None
    case: str | None
    note: str | None
    watch_id: int | None
    revisit_of: str | None
    capture_id: str
    worker: str | None
    lease_until: str | None
    started: str | None
    finished: str | None
    result: str | None
    last_error: str | None

    @property
    def capture_source(self) -> str:
        """What made the capture, as the manifest and ledger name it."""
        return self.source or f"job:{self.id}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "url": self.url, "host": self.host,
            "priority": self.priority, "state": self.state, "attempts": self.attempts,
            "max_attempts": self.max_attempts, "not_before": self.not_before,
            "created": self.created, "requested_by": self.requested_by, "via": self.via,
            "source": self.capture_source, "case": self.case, "note": self.note,
            "watch_id": self.watch_id, "revisit_of": self.revisit_of,
            "capture_id": self.capture_id, "worker": self.worker,
            "lease_until": self.lease_until, "started": self.started,
            "finished": self.finished, "result": self.result, "last_error": self.last_error,
        }


def _job(row: Any) -> Job:
    return Job(
        id=int(row.id), kind=row.kind, url=row.url, host=row.host, priority=row.priority,
        state=row.state, attempts=row.attempts, max_attempts=row.max_attempts,
        not_before=row.not_before, created=row.created, requested_by=row.requested_by,
        via=row.via, source=row.source, case=row.case_name, note=row.note,
        watch_id=row.watch_id, revisit_of=row.revisit_of, capture_id=row.capture_id,
        worker=row.worker, lease_until=row.lease_until, started=row.started,
        finished=row.finished, result=row.result, last_error=row.last_error,
    )


@dataclass(frozen=True, slots=True)
class Submitted:
    """The new job, or (``job`` None) the existing one that already covers the URL."""

    job: Job | None
    duplicate_of: Job | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one attempt ended, as the worker judged it."""

    outcome: str
    """``completed`` / ``failed`` (a capture was recorded with that status), ``error``
    (the attempt raised before recording anything), ``interrupted``."""
    retry: bool
    detail: str | None = None


def judge_capture(status: str, reason: str | None, http_status: int | None) -> Verdict:
    """Whether a recorded capture ends its job or is worth another attempt (pure)."""
    if status == "completed":
        if http_status in RETRY_STATUSES:
            return Verdict("completed", True, f"the server answered HTTP {http_status}")
        return Verdict("completed", False)
    return Verdict("failed", (reason or "error") in RETRY_REASONS, reason)


class JobQueue:
    """The job table of one archive database.

    Raises ``sqlalchemy`` errors only for database failures; lookups raise
    :class:`NotFoundError`.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        ledger: Ledger,
        limits: JobLimits = JobLimits(),
        clock: Clock = utc_now,
        new_id: IdFactory = new_capture_id,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.limits = limits
        self.clock = clock
        self.new_id = new_id

    # -- submitting --------------------------------------------------------------------

    def submit(
        self, request: JobRequest, *, connection: sa.Connection | None = None
    ) -> Submitted:
        """Queue a capture unless the URL is already captured or queued for the same case
        (and, unfiled, for the same person: see :func:`_same_owner`; ``again`` asks for
        it anyway). Appends ``capture.queued`` for a new capture job, in the same
        transaction (``connection``, if given, is the caller's)."""
        if connection is None:
            with self.engine.begin() as conn:
                return self._submit(conn, request)
        return self._submit(connection, request)

    def _submit(self, conn: sa.Connection, request: JobRequest) -> Submitted:
        j = models.jobs
        key = url_key(request.url)
        if conn.dialect.name == "postgresql":
            # Two pollers that find the same post at once must not both queue it.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_URL_LOCK, _pg_key(key))))
        if request.kind == KIND_CAPTURE and not request.again:
            covering = conn.execute(
                sa.select(j).where(
                    j.c.url_sha256 == key,
                    j.c.kind == KIND_CAPTURE,
                    sa.or_(
                        j.c.state.in_([QUEUED, RUNNING]),
                        sa.and_(j.c.state == DONE, j.c.result == "completed"),
                    ),
                    *_same_owner(request),
                ).order_by(j.c.id).limit(1)
            ).first()
            if covering is not None:
                return Submitted(None, _job(covering))
        now = rfc3339(self.clock())
        capture_id = self.new_id()
        inserted = conn.execute(
            sa.insert(j).values(
                kind=request.kind, url=request.url, url_sha256=key, host=host_of(request.url),
                priority=request.priority, state=QUEUED, attempts=0,
                max_attempts=self.limits.max_attempts, not_before=now, created=now,
                requested_by=request.requested_by, via=request.via, source=request.source,
                case_name=request.case, note=request.note, watch_id=request.watch_id,
                revisit_of=request.revisit_of, capture_id=capture_id,
            )
        )
        primary_key = inserted.inserted_primary_key
        assert primary_key is not None
        job_id = int(primary_key[0])
        if request.kind == KIND_CAPTURE:
            self.ledger.append(
                actor=request.requested_by,
                action="capture.queued",
                subject=f"capture:{capture_id}",
                payload={
                    "url": request.url, "job_id": job_id, "via": request.via,
                    "source": request.source or f"job:{job_id}", "case": request.case,
                    "note": request.note, "priority": request.priority,
                } | ({"context": dict(request.context)} if request.context else {}),
                connection=conn,
            )
        return Submitted(self._get(conn, job_id))

    # -- claiming ----------------------------------------------------------------------

    def claim(self, worker: str) -> Job | None:
        """Take the most urgent job that may start now, or None.

        Order: priority (investigators, then watches, then revisits), then how long it
        has been due, then age. A job is skipped while its host already runs
        ``per_host_concurrency`` captures or started one less than ``1/per_host_rate``
        seconds ago.
        """
        with self.engine.begin() as conn:
            return self._claim(conn, worker)

    def _claim(self, conn: sa.Connection, worker: str) -> Job | None:
        j = models.jobs
        running = models.jobs.alias("running_jobs")
        hosts = models.job_hosts
        now = self.clock()
        now_s = rfc3339(now)
        busy = (
            sa.select(sa.func.count())
            .select_from(running)
            .where(running.c.state == RUNNING, running.c.host == j.c.host)
            .scalar_subquery()
        )
        too_soon = sa.exists().where(hosts.c.host == j.c.host, hosts.c.next_start_at > now_s)
        skipped: set[str] = set()
        for _ in range(_CLAIM_TRIES):
            query = sa.select(j).where(
                j.c.state == QUEUED,
                j.c.not_before <= now_s,
                ~too_soon,
                busy < self.limits.per_host_concurrency,
            )
            if skipped:
                query = query.where(j.c.host.notin_(skipped))
            row = conn.execute(
                query.order_by(j.c.priority, j.c.not_before, j.c.id)
                .limit(1)
                .with_for_update(skip_locked=True, of=j)
            ).first()
            if row is None:
                return None
            if conn.dialect.name == "postgresql":
                # The query above read a snapshot; with the host's lock held, the count
                # and the last start time below include every claim committed before us.
                conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(_PG_HOST_LOCK, _pg_key(row.host)))
                )
                if not self._host_has_room(conn, row.host, now_s):
                    skipped.add(row.host)
                    continue
            return self._start(conn, _job(row), worker, now)
        return None

    def _host_has_room(self, conn: sa.Connection, host: str, now_s: str) -> bool:
        j, h = models.jobs, models.job_hosts
        busy = conn.execute(
            sa.select(sa.func.count()).select_from(j)
            .where(j.c.state == RUNNING, j.c.host == host)
        ).scalar_one()
        if busy >= self.limits.per_host_concurrency:
            return False
        next_start = conn.execute(
            sa.select(h.c.next_start_at).where(h.c.host == host)
        ).scalar_one_or_none()
        return next_start is None or next_start <= now_s

    def _start(self, conn: sa.Connection, job: Job, worker: str, now: Any) -> Job:
        j = models.jobs
        now_s = rfc3339(now)
        attempt = job.attempts + 1
        conn.execute(
            sa.update(j).where(j.c.id == job.id).values(
                state=RUNNING, attempts=attempt, worker=worker, started=now_s,
                lease_until=rfc3339(now + timedelta(seconds=self.limits.lease_seconds)),
                finished=None,
            )
        )
        conn.execute(
            sa.insert(models.job_attempts).values(
                job_id=job.id, attempt=attempt, capture_id=job.capture_id, worker=worker,
                started=now_s,
            )
        )
        if self.limits.per_host_rate > 0:
            next_start = rfc3339(now + timedelta(seconds=1 / self.limits.per_host_rate))
            _upsert_host(conn, job.host, next_start)
        return self._get(conn, job.id)

    def heartbeat(self, job_id: int, worker: str) -> bool:
        """Extend the lease of a job ``worker`` runs; False if it no longer holds it."""
        j = models.jobs
        until = rfc3339(self.clock() + timedelta(seconds=self.limits.lease_seconds))
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(j)
                .where(j.c.id == job_id, j.c.worker == worker, j.c.state == RUNNING)
                .values(lease_until=until)
            )
        return bool(result.rowcount)

    # -- finishing ---------------------------------------------------------------------

    def finish(
        self, job: Job, worker: str, verdict: Verdict, *, connection: sa.Connection
    ) -> Job | None:
        """Record how the attempt ended: done, failed, or queued again after a backoff
        (with a new capture id). Returns the job as updated, or None when ``worker`` no
        longer held it (its lease ran out and it was recovered elsewhere)."""
        j = models.jobs
        now = self.clock()
        now_s = rfc3339(now)
        values: dict[str, Any] = {"worker": None, "lease_until": None, "finished": now_s}
        if verdict.outcome in ("completed", "failed"):
            values["result"] = verdict.outcome
        if verdict.retry and job.attempts < job.max_attempts:
            delay = backoff_delay(
                job.attempts, base=self.limits.retry_base_seconds,
                cap=self.limits.retry_max_seconds,
            )
            values |= {
                "state": QUEUED, "capture_id": self.new_id(), "last_error": verdict.detail,
                "not_before": rfc3339(now + timedelta(seconds=delay)),
            }
        elif verdict.retry:
            values |= {
                "state": FAILED,
                "last_error": f"{verdict.detail} (gave up after {job.attempts} attempts)",
            }
        elif verdict.outcome == "completed":
            values |= {"state": DONE, "last_error": None}
        else:
            values |= {"state": FAILED, "last_error": verdict.detail}
        updated = connection.execute(
            sa.update(j)
            .where(j.c.id == job.id, j.c.worker == worker, j.c.state == RUNNING,
                   j.c.capture_id == job.capture_id)
            .values(**values)
        )
        self._close_attempt(connection, job, verdict.outcome, verdict.detail, now_s)
        if not updated.rowcount:
            return None
        return self._get(connection, job.id)

    def _close_attempt(
        self, conn: sa.Connection, job: Job, outcome: str, detail: str | None, now_s: str
    ) -> None:
        a = models.job_attempts
        conn.execute(
            sa.update(a)
            .where(a.c.job_id == job.id, a.c.capture_id == job.capture_id,
                   a.c.finished.is_(None))
            .values(finished=now_s, outcome=outcome, detail=detail)
        )

    # -- recovery ----------------------------------------------------------------------

    def recover(
        self, *, workers: Collection[str] = (), expired: bool = True, why: str
    ) -> list[Job]:
        """Put back running jobs whose lease ran out (``expired``) or whose worker is in
        ``workers`` (known dead). Returns the jobs as they now are."""
        j = models.jobs
        now = self.clock()
        now_s = rfc3339(now)
        conditions = []
        if expired:
            conditions.append(j.c.lease_until < now_s)
        if workers:
            conditions.append(j.c.worker.in_(list(workers)))
        if not conditions:
            return []
        recovered: list[Job] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(j).where(j.c.state == RUNNING, sa.or_(*conditions))
                .order_by(j.c.id).with_for_update(skip_locked=True, of=j)
            ).all()
            for row in rows:
                job = _job(row)
                reason = leases.PROCESS_GONE if job.worker in workers else leases.LEASE_EXPIRED
                recovered.append(self._recover_one(conn, job, why, reason, now_s))
        return recovered

    def _recover_one(self, conn: sa.Connection, job: Job, why: str, reason: str,
                     now_s: str) -> Job:
        j = models.jobs
        reset = {"worker": None, "lease_until": None}
        recorded = conn.execute(
            sa.select(models.captures.c.status).where(models.captures.c.id == job.capture_id)
        ).scalar_one_or_none()
        if recorded is not None and recorded != leases.INTERRUPTED:
            # The capture made it into the archive; only the job's bookkeeping did not.
            # The next claim sees the capture and finishes the job without fetching again
            # (unless finishing itself keeps failing: then the job ends here, as recorded).
            if job.attempts < job.max_attempts:
                conn.execute(sa.update(j).where(j.c.id == job.id)
                             .values(state=QUEUED, **reset))
            else:
                conn.execute(sa.update(j).where(j.c.id == job.id).values(
                    state=DONE if recorded == "completed" else FAILED, result=recorded,
                    finished=now_s, last_error="finished without its follow-ups (revisit "
                    "plan, takedown check) after repeated interruptions", **reset))
            return self._get(conn, job.id)
        detail = f"interrupted: {why}"
        self.close_interrupted(conn, job, why, reason=reason)
        self._close_attempt(conn, job, "interrupted", detail, now_s)
        if job.attempts >= job.max_attempts:
            values: dict[str, Any] = {
                "state": FAILED, "finished": now_s,
                "last_error": f"{detail} (gave up after {job.attempts} attempts)",
            }
        else:
            values = {"state": QUEUED, "capture_id": self.new_id(), "not_before": now_s,
                      "last_error": detail}
        conn.execute(sa.update(j).where(j.c.id == job.id).values(**reset, **values))
        return self._get(conn, job.id)

    def close_interrupted(self, conn: sa.Connection, job: Job, why: str, *,
                          reason: str) -> bool:
        """Close the job's current capture as interrupted (``reason`` a code of
        :mod:`archiver.capture.leases`, ``why`` the sentence) if the ledger has its
        ``capture.requested`` and nothing closes it yet. True if appended."""
        entry = leases.close_interrupted(
            conn, self.ledger, job.capture_id, reason=reason, message=why,
            details={"job_id": job.id, "attempt": job.attempts, "worker": job.worker})
        return entry is not None

    # -- reading -----------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """Raises :class:`NotFoundError`."""
        with self.engine.connect() as conn:
            return self._get(conn, job_id)

    @staticmethod
    def _get(conn: sa.Connection, job_id: int) -> Job:
        row = conn.execute(sa.select(models.jobs).where(models.jobs.c.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"no job {job_id}")
        return _job(row)

    def list(self, *, states: Sequence[str] = (), limit: int = 100) -> list[Job]:
        """Newest first."""
        j = models.jobs
        query = sa.select(j).order_by(j.c.id.desc()).limit(limit)
        if states:
            query = query.where(j.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

    def counts(self) -> dict[str, int]:
        """Jobs per state, and ``due``: queued jobs whose time has come."""
        j = models.jobs
        now_s = rfc3339(self.clock())
        with self.engine.connect() as conn:
            counts = {state: 0 for state in STATES}
            for state, count in conn.execute(
                sa.select(j.c.state, sa.func.count()).group_by(j.c.state)
            ):
                counts[state] = int(count)
            counts["due"] = int(conn.execute(
                sa.select(sa.func.count()).select_from(j)
                .where(j.c.state == QUEUED, j.c.not_before <= now_s)
            ).scalar_one())
        return counts

    def attempt_outcome(self, job: Job) -> str | None:
        """How the attempt ``job`` (as claimed) ended, or None while it has not."""
        a = models.job_attempts
        with self.engine.connect() as conn:
            outcome: str | None = conn.execute(
                sa.select(a.c.outcome).where(a.c.job_id == job.id,
                                             a.c.attempt == job.attempts)
            ).scalar_one_or_none()
        return outcome


def _upsert_host(conn: sa.Connection, host: str, next_start: str) -> None:
    table = models.job_hosts
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table).values(host=host, next_start_at=next_start)
        conn.execute(pg.on_conflict_do_update(
            index_elements=[table.c.host], set_={"next_start_at": next_start}))
    else:
        lite = sqlite.insert(table).values(host=host, next_start_at=next_start)
        conn.execute(lite.on_conflict_do_update(
            index_elements=[table.c.host], set_={"next_start_at": next_start}))
