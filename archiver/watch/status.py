"""Who is running and how the queue stands: the process registry (daemon and worker
processes with their heartbeats) and ``archiver status``.

Kept apart from :mod:`archiver.watch.daemon` so that ``archiver status`` answers without
loading the scheduler, the poller or the sources.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from archiver import models, privacy
from archiver.archive import Archive
from archiver.audit import audit_status
from archiver.audit import status_lines as audit_lines
from archiver.capture.leases import in_flight
from archiver.clock import Clock, rfc3339, utc_now
from archiver.timestamp_status import status_lines as timestamp_lines
from archiver.timestamp_status import timestamp_status
from archiver.watch.jobs import DONE, FAILED, QUEUED, RUNNING, JobLimits, JobQueue
from archiver.watch.revisit import Revisits


def new_process_id(role: str) -> str:
    return f"{socket.gethostname()}/{role}-{uuid.uuid4().hex[:12]}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


# -- the process registry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessView:
    id: str
    role: str
    host: str
    pid: int
    parent_id: str | None
    started: str
    heartbeat_at: str
    state: str
    job_id: int | None
    scheduler: bool

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "host": self.host, "pid": self.pid,
                "parent_id": self.parent_id, "started": self.started,
                "heartbeat_at": self.heartbeat_at, "state": self.state,
                "job_id": self.job_id, "scheduler": self.scheduler}


def _process(row: Any) -> ProcessView:
    return ProcessView(row.id, row.role, row.host, row.pid, row.parent_id, row.started,
                       row.heartbeat_at, row.state, row.job_id, bool(row.scheduler))


_KEEP: Any = object()


class ProcessRegistry:
    """Daemon and worker processes, with heartbeats (``daemon_processes``)."""

    def __init__(self, engine: sa.Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def register(self, process_id: str, role: str, *, parent_id: str | None = None) -> None:
        now = rfc3339(self.clock())
        p = models.daemon_processes
        with self.engine.begin() as conn:
            conn.execute(sa.delete(p).where(p.c.id == process_id))
            conn.execute(sa.insert(p).values(
                id=process_id, role=role, host=socket.gethostname(), pid=os.getpid(),
                parent_id=parent_id, started=now, heartbeat_at=now, state="running",
                job_id=None, scheduler=False,
            ))

    def beat(self, process_id: str, *, job_id: Any = _KEEP, state: str | None = None,
             scheduler: bool | None = None) -> None:
        p = models.daemon_processes
        values: dict[str, Any] = {"heartbeat_at": rfc3339(self.clock())}
        if job_id is not _KEEP:
            values["job_id"] = job_id
        if state is not None:
            values["state"] = state
        if scheduler is not None:
            values["scheduler"] = scheduler
        with self.engine.begin() as conn:
            conn.execute(sa.update(p).where(p.c.id == process_id).values(**values))

    def stopped(self, process_ids: Collection[str]) -> None:
        if not process_ids:
            return
        p = models.daemon_processes
        with self.engine.begin() as conn:
            conn.execute(sa.update(p).where(p.c.id.in_(list(process_ids))).values(
                state="stopped", job_id=None, scheduler=False,
                heartbeat_at=rfc3339(self.clock())))

    def dead_here(self, *, stale_after: float) -> list[ProcessView]:
        """Processes of this host that are not stopped but whose pid is gone (or whose
        heartbeat is older than ``stale_after`` seconds: the pid was reused)."""
        p = models.daemon_processes
        stale = rfc3339(self.clock() - timedelta(seconds=stale_after))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(p).where(
                p.c.host == socket.gethostname(), p.c.state != "stopped")).all()
        return [_process(r) for r in rows
                if r.pid != os.getpid() and (not pid_alive(r.pid) or r.heartbeat_at < stale)]

    def live(self, *, stale_after: float) -> list[ProcessView]:
        p = models.daemon_processes
        fresh = rfc3339(self.clock() - timedelta(seconds=stale_after))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(p).where(
                p.c.state != "stopped", p.c.heartbeat_at >= fresh).order_by(p.c.started)).all()
        return [_process(r) for r in rows]

    def prune(self, *, older_than: float) -> None:
        p = models.daemon_processes
        old = rfc3339(self.clock() - timedelta(seconds=older_than))
        with self.engine.begin() as conn:
            conn.execute(sa.delete(p).where(p.c.state == "stopped", p.c.heartbeat_at < old))


# -- archiver status ---------------------------------------------------------------------


def status_report(archive: Archive, *, recent: int = 10) -> dict[str, Any]:
    """Queue depth, processes, watches and their last polls, recent failures."""
    settings = archive.settings
    queue = JobQueue(archive.engine, ledger=archive.ledger,
                     limits=JobLimits.from_settings(settings), clock=archive.clock)
    registry = ProcessRegistry(archive.engine, clock=archive.clock)
    revisits = Revisits(archive, queue, settings=settings)
    processes = registry.live(stale_after=2 * settings.daemon.lease_seconds)
    w, j = models.watches, models.jobs
    with archive.engine.connect() as conn:
        watch_states = {s: int(n) for s, n in conn.execute(
            sa.select(w.c.status, sa.func.count()).group_by(w.c.status))}
        polls = conn.execute(
            sa.select(w).where(w.c.last_poll_at.is_not(None))
            .order_by(w.c.last_poll_at.desc()).limit(recent)).all()
        failing = conn.execute(
            sa.select(w).where(w.c.failures > 0, w.c.status == "active")
            .order_by(w.c.failures.desc(), w.c.id).limit(recent)).all()
        failed_jobs = conn.execute(
            sa.select(j).where(sa.or_(j.c.state == FAILED,
                                      sa.and_(j.c.state == QUEUED, j.c.last_error.is_not(None))))
            .order_by(j.c.finished.desc(), j.c.id.desc()).limit(recent)).all()
        running = conn.execute(
            sa.select(j.c.id, j.c.url, j.c.worker, j.c.started, j.c.capture_id)
            .where(j.c.state == RUNNING).order_by(j.c.started)).all()
        done = int(conn.execute(sa.select(sa.func.count()).select_from(j)
                                .where(j.c.state == DONE)).scalar_one())
        flying, flights = in_flight(conn)
    counts = queue.counts()
    counts[DONE] = done
    return {
        "queue": counts,
        "running": [{"job_id": r.id, "url": r.url, "worker": r.worker, "started": r.started,
                     "capture_id": r.capture_id} for r in running],
        "in_flight": {"count": flying, "captures": [f.as_json() for f in flights]},
        "processes": [p.as_json() for p in processes],
        "scheduler": next((p.id for p in processes if p.scheduler), None),
        "watches": {"active": watch_states.get("active", 0),
                    "paused": watch_states.get("paused", 0),
                    "failing": len(failing)},
        "last_polls": [_poll_json(r) for r in polls],
        "failing_watches": [_poll_json(r) for r in failing],
        "failures": [{"job_id": r.id, "url": r.url, "state": r.state,
                      "attempts": r.attempts, "finished": r.finished,
                      "error": r.last_error} for r in failed_jobs],
        "revisits": revisits.counts(),
        "gone": len(list(archive.ledger.entries(actions=["target.gone"]))),
        "audit": audit_status(archive.engine, settings.audit, archive.clock()),
        "privacy": privacy.scan(settings).as_json(),
        "timestamps": timestamp_status(archive.engine, settings.timestamp, archive.clock()),
    }


def _poll_json(row: Any) -> dict[str, Any]:
    return {"watch_id": row.id, "url": row.url, "kind": row.kind,
            "last_poll_at": row.last_poll_at, "last_ok_at": row.last_ok_at,
            "failures": row.failures, "error": row.last_error,
            "new_posts": row.last_new_posts}


def iter_lines(report: dict[str, Any]) -> Iterator[str]:
    """``archiver status`` for a person."""
    q = report["queue"]
    yield (f"queue:     {q['queued']} queued ({q['due']} due now), {q['running']} running, "
           f"{q['done']} done, {q['failed']} failed")
    yield f"scheduler: {report['scheduler'] or 'none running'}"
    processes = report["processes"]
    yield f"processes: {len(processes)}"
    for p in processes:
        job = f"  job {p['job_id']}" if p["job_id"] else ""
        yield (f"  {p['role']:7} {p['id']}  pid {p['pid']}  {p['state']}  "
               f"heartbeat {p['heartbeat_at']}{job}")
    for r in report["running"]:
        yield f"  running job {r['job_id']} since {r['started']}: {r['url']}"
    flying = report["in_flight"]
    yield f"capturing: {flying['count']}"
    for f in flying["captures"]:
        yield (f"  capture {f['capture_id']}  {f['host']} pid {f['pid']}  since {f['since']}"
               f"  lease until {f['lease_until']}  {f['url'] or '(URL not on the ledger)'}")
    if flying["count"] > len(flying["captures"]):
        yield f"  … and {flying['count'] - len(flying['captures'])} more"
    wt = report["watches"]
    yield f"watches:   {wt['active']} active, {wt['paused']} paused, {wt['failing']} failing"
    if report["last_polls"]:
        yield "last polls:"
        for p in report["last_polls"]:
            outcome = f"error: {p['error']}" if p["error"] else f"{p['new_posts']} new"
            yield f"  watch {p['watch_id']:<5} {p['last_poll_at']}  {outcome}  {p['url']}"
    if report["failures"]:
        yield "recent failures:"
        for f in report["failures"]:
            yield (f"  job {f['job_id']:<6} {f['state']:7} attempts {f['attempts']}  "
                   f"{f['error']}  {f['url']}")
    rv = report["revisits"]
    yield (f"revisits:  {rv['waiting']} waiting, {rv['queued']} queued, {rv['done']} done; "
           f"{report['gone']} takedowns recorded")
    yield from audit_lines(report["audit"])
    yield from privacy.status_lines(report["privacy"])
    yield from timestamp_lines(report["timestamps"])
