"""Polling schedules: APScheduler 3 with its SQLAlchemy job store in the archive's database.

Each active watch is one APScheduler job, ``watch:<id>``, on an ``IntervalTrigger`` of
the watch's ``every`` anchored at the watch's ``anchor``. The job store is the
``apscheduler_jobs`` table (created by migration 0002), so schedules survive restarts.
Job defaults: ``coalesce=True`` (runs missed while the daemon was down, or while a poll
was slow, become one run), ``misfire_grace_time=None`` (that one run happens however late
it is, rather than being dropped), ``max_instances=1`` (a watch never has two polls at
once). The poll itself runs in a thread pool of ``daemon.poll_threads``.

One active scheduler per database (:class:`SchedulerLock`): PostgreSQL, a session-level
advisory lock held on a dedicated connection for as long as the scheduler runs (the
server drops it when the process dies); SQLite, an exclusive ``flock`` on a file next to
the database (the kernel drops it when the process dies). A daemon that cannot take it
runs its workers only and tries again periodically: a standby.

The watch table is the source of truth; this module only mirrors it. Every change to a
watch bumps its ``version``; :meth:`WatchScheduler.sync` applies rows whose
``synced_version`` lags and records what it applied, so a change made from any machine
reaches the scheduler within ``daemon.sync_seconds``.

APScheduler stores jobs by reference to a module-level function (:func:`run_poll`); that
function reaches the scheduler running in this process through :data:`_active`, the one
piece of global state here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import make_url

from archiver import models
from archiver.clock import Clock, utc_now
from archiver.db import make_engine
from archiver.logs import event
from archiver.watch.poller import Poller
from archiver.watch.watches import ACTIVE

log = logging.getLogger("archiver.scheduler")

JOBSTORE = "watches"
# pg_try_advisory_lock(int4, int4): this namespace (the first 4 bytes, signed, of
# SHA-256("evidence-archiver/scheduler")) and a hash of the archive's schema, so two
# archives in two schemas of one database each get their own scheduler.
_PG_SCHEDULER_LOCK = 1259188573

_active: WatchScheduler | None = None
_active_lock = threading.Lock()


def run_poll(watch_id: int) -> None:
    """The APScheduler job of every watch (stored by reference, so module level)."""
    scheduler = _active
    if scheduler is not None:
        scheduler.poller.poll(watch_id)


def job_id(watch_id: int) -> str:
    return f"watch:{watch_id}"


def _schema_key() -> Any:
    return sa.func.hashtext(sa.func.current_schema())


class SchedulerLock:
    """"At most one active scheduler per database", held until :meth:`release`."""

    def __init__(self, database_url: str, engine: sa.Engine) -> None:
        self._url = make_url(database_url)
        self._engine = engine
        self._connection: sa.Connection | None = None
        self._file: IO[bytes] | None = None

    @property
    def path(self) -> Path | None:
        """The lock file (SQLite), next to the database file."""
        if self._url.get_backend_name() != "sqlite" or not self._url.database:
            return None
        return Path(self._url.database + ".scheduler-lock")

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits). True when held."""
        if self.held:
            return True
        if self._url.get_backend_name() == "postgresql":
            conn = self._engine.connect()
            got = conn.execute(
                sa.select(sa.func.pg_try_advisory_lock(_PG_SCHEDULER_LOCK, _schema_key()))
            ).scalar_one()
            conn.commit()
            if got:
                self._connection = conn
                return True
            conn.close()
            return False
        path = self.path
        if path is None:
            return True  # an in-memory database has one process by definition
        handle = path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def alive(self) -> bool:
        """Whether a held lock is still held (PostgreSQL: the connection still answers)."""
        if self._connection is None:
            return self._file is not None
        try:
            self._connection.execute(sa.select(1)).scalar_one()
            self._connection.commit()
        except sa.exc.SQLAlchemyError:
            self._drop_connection()
            return False
        return True

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(
                    sa.select(sa.func.pg_advisory_unlock(_PG_SCHEDULER_LOCK, _schema_key())))
                self._connection.commit()
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone, and its lock with it
            self._drop_connection()
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # already broken
                self._connection.close()
            self._connection = None


def _relax_sqlite_sync(engine: sa.Engine) -> None:
    """``synchronous=NORMAL`` on the job store's own connections (WAL: a commit is not
    fsynced, a checkpoint is). Safe here because the job store is a cache of the watches
    table: a schedule lost to a power cut is re-created by the next full sync. Every
    poll updates its job's row; without this, each update waits for a disk flush."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


class WatchScheduler:
    """The polling schedule of every active watch, run by APScheduler in this process."""

    def __init__(
        self,
        *,
        database_url: str,
        engine: sa.Engine,
        poller: Poller,
        poll_threads: int,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.poller = poller
        self.clock = clock
        self._store_engine = make_engine(database_url)  # the job store disposes its own
        if self._store_engine.dialect.name == "sqlite":
            _relax_sqlite_sync(self._store_engine)
        self._scheduler = BackgroundScheduler(
            jobstores={JOBSTORE: SQLAlchemyJobStore(engine=self._store_engine,
                                                    tablename=models.APSCHEDULER_TABLE)},
            executors={"default": ThreadPoolExecutor(max_workers=poll_threads)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start polling; applies every pending watch change first."""
        global _active
        with _active_lock:
            if _active is not None and _active is not self:
                raise RuntimeError("another WatchScheduler runs in this process")
            _active = self
        self._scheduler.start(paused=True)
        applied = self.sync(full=True)
        self._scheduler.resume()
        event(log, "scheduler.started", watches=applied)

    def shutdown(self, *, wait: bool) -> None:
        """Stop starting polls; with ``wait``, also wait for running ones."""
        global _active
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            # The job store disposes its engine before APScheduler's loop thread has
            # stopped; a last pass of that loop may check a connection out of the new
            # pool. The thread is joined now: dispose again, closing that one too.
            self._store_engine.dispose()
        with _active_lock:
            if _active is self:
                _active = None

    def sync(self, *, full: bool = False) -> int:
        """Mirror watch changes into the schedule. ``full`` (at start) also adds missing
        and removes stray jobs. Returns how many watches were (re)applied."""
        w = models.watches
        now = self.clock()
        query = sa.select(w.c.id, w.c.status, w.c.every_seconds, w.c.anchor,
                          w.c.last_poll_at, w.c.version, w.c.synced_version)
        if not full:
            query = query.where(sa.or_(w.c.synced_version.is_(None),
                                       w.c.synced_version != w.c.version))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        existing = ({job.id for job in self._scheduler.get_jobs(jobstore=JOBSTORE)}
                    if full else None)
        applied: list[dict[str, int]] = []
        keep = set()
        for row in rows:
            name = job_id(row.id)
            if row.status == ACTIVE:
                keep.add(name)
            has_job = (name in existing) if existing is not None else (
                self._scheduler.get_job(name, jobstore=JOBSTORE) is not None)
            changed = row.synced_version != row.version
            if row.status == ACTIVE and (not has_job or changed):
                self._schedule(row, now, has_job=has_job)
            elif row.status != ACTIVE and has_job:
                self._scheduler.remove_job(name, jobstore=JOBSTORE)
                keep.add(name)  # handled: not a stray
            if changed:
                applied.append({"wid": row.id, "ver": row.version})
        if existing is not None:
            for stray in existing - keep:
                self._scheduler.remove_job(stray, jobstore=JOBSTORE)
        if applied:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.update(w)
                    .where(w.c.id == sa.bindparam("wid"), w.c.version == sa.bindparam("ver"))
                    .values(synced_version=sa.bindparam("ver")),
                    applied,
                )
        return len(applied)

    def _schedule(self, row: Any, now: datetime, *, has_job: bool) -> None:
        anchor = datetime.fromisoformat(row.anchor)
        trigger = IntervalTrigger(seconds=row.every_seconds, start_date=anchor, timezone=UTC)
        options: dict[str, Any] = {}
        if row.last_poll_at is None:
            options["next_run_time"] = max(now, anchor)  # a new watch: first poll now
        elif not has_job:
            options["next_run_time"] = now  # resumed: poll now, then on its schedule
        self._scheduler.add_job(
            run_poll, trigger, args=[row.id], id=job_id(row.id), name=job_id(row.id),
            jobstore=JOBSTORE, replace_existing=True, **options,
        )

    def next_runs(self) -> dict[int, datetime | None]:
        """Each scheduled watch's next poll time."""
        runs: dict[int, datetime | None] = {}
        for job in self._scheduler.get_jobs(jobstore=JOBSTORE):
            runs[int(str(job.id).split(":", 1)[1])] = job.next_run_time
        return runs
