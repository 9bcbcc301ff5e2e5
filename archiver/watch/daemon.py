"""The daemon: a scheduler and N worker processes; and the worker itself.

::

    archiver daemon ─┬─ WatchScheduler (APScheduler, poll threads)   if it holds the lock
                     ├─ maintenance: watch sync, due revisits, expired leases
                     └─ N x ``archiver worker`` child processes ── claim → capture → finish

Workers are processes, not threads, for two reasons. A capture cannot be cancelled
half-way (it is one call into the recorder, yt-dlp or a browser), so a drain deadline can
only be enforced by killing the process that runs it; and a capture that crashes or
exhausts memory must take down one worker, not the scheduler. The same ``archiver
worker`` runs on its own on other machines sharing a PostgreSQL database.

Crash safety rests on three facts. A capture is recorded in one database transaction
(``capture.completed`` and its rows together), after its blobs are stored and verified;
a process killed earlier leaves at most an unreferenced scratch directory and unreferenced
content-addressed blobs. Jobs carry leases that workers renew every ``lease_seconds / 4``:
a job whose worker died is found (at once when the dead worker was this daemon's child or
ran on this host; otherwise when its lease runs out) and run again, its interrupted
attempt closed on the ledger with ``capture.interrupted``. Scratch directories that no
running job owns are deleted when the daemon starts and whenever a worker dies.

Signals only set events. SIGTERM or SIGINT: stop polling, let workers finish their
current capture for up to ``daemon.drain_seconds``, then kill the rest (their jobs are put
back at once) and exit 0. A second signal skips the wait. A worker whose parent died
drains and exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa

from archiver import models
from archiver.archive import Archive, Capture
from archiver.clock import Clock, rfc3339, utc_now
from archiver.errors import NotFoundError
from archiver.logs import event
from archiver.settings import LocalStoreSettings, Settings
from archiver.watch.jobs import (
    DONE,
    FAILED,
    KIND_REVISIT,
    QUEUED,
    RUNNING,
    Job,
    JobLimits,
    JobQueue,
    Verdict,
    judge_capture,
)
from archiver.watch.poller import Poller
from archiver.watch.revisit import GoneVerdict, Revisits
from archiver.watch.scheduler import SchedulerLock, WatchScheduler
from archiver.watch.sources import GuardedFetcher, build_sources
from storage.errors import StorageError
from storage.local import LocalBlobStore

log = logging.getLogger("archiver.daemon")

TICK_SECONDS = 0.2
STANDBY_RETRY_SECONDS = 5.0


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


# -- scratch space ---------------------------------------------------------------------


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, (Path(root) / name).stat().st_mtime)
            except OSError:
                continue
    return newest


def clean_scratch(settings: Settings, engine: sa.Engine) -> list[str]:
    """Delete scratch directories (``<work_dir>/<capture id>``) no running job owns.

    A directory named after a job's capture (current or past attempt) that is not
    running is left over from an interrupted attempt: deleted. One no job knows may
    belong to a foreground ``archiver capture``: deleted only once untouched for longer
    than any capture may take. Partial blobs a killed writer left in a local store's
    ``tmp/`` go the same way. Returns the scratch directories deleted.
    """
    # Longer than any phase of a capture may run (the media fetcher has its own budget).
    quiet_for = 2 * max(settings.capture.timeout_seconds, settings.media.timeout_seconds,
                        settings.browser.timeout_seconds) + 300
    for spec in settings.storage.stores:
        if isinstance(spec, LocalStoreSettings):
            store = LocalBlobStore(settings.local_store_path(spec))
            try:
                removed = store.remove_stale_temporaries(older_than_seconds=quiet_for)
            except StorageError as exc:  # a cleanup, never a reason not to start
                event(log, "store.temporaries_not_removed", store=store.name, error=str(exc))
                continue
            if removed:
                event(log, "store.temporaries_removed", store=str(spec.path), files=removed)
    work = settings.work_dir
    if not work.is_dir():
        return []
    names = [d.name for d in work.iterdir() if d.is_dir()]
    if not names:
        return []
    j, a = models.jobs, models.job_attempts
    with engine.connect() as conn:
        running = set(conn.execute(sa.select(j.c.capture_id).where(
            j.c.state == RUNNING, j.c.capture_id.in_(names))).scalars())
        known = set(conn.execute(sa.select(j.c.capture_id).where(
            j.c.capture_id.in_(names))).scalars())
        known |= set(conn.execute(sa.select(a.c.capture_id).where(
            a.c.capture_id.in_(names))).scalars())
    deleted = []
    for name in names:
        if name in running:
            continue
        path = work / name
        try:
            stale = name in known or time.time() - _newest_mtime(path) > quiet_for
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(name)
    if deleted:
        event(log, "scratch.cleaned", directories=deleted)
    return deleted


# -- running one job -------------------------------------------------------------------


class JobRunner:
    """Runs a claimed job on an open archive and records how it ended."""

    def __init__(self, archive: Archive, queue: JobQueue, revisits: Revisits) -> None:
        self.archive = archive
        self.queue = queue
        self.revisits = revisits

    def run(self, job: Job, worker: str) -> Job | None:
        """Capture, then finish the job, its revisit plan and any takedown in the same
        transaction as the capture's outcome. Returns the job as it now is, or None when
        the worker no longer held it."""
        finish = _JobFinish(self, job, worker)
        view = self._recorded(job.capture_id)
        if view is not None:
            # This attempt's capture is recorded but its job was not finished with it
            # (an archive of an older version was stopped in between): finish it now.
            prepared = finish.prepare(view)
            with self.archive.engine.begin() as conn:
                finish.apply(conn, view, prepared)
            if finish.gone_seq is not None:
                self.archive.maybe_checkpoint()
        else:
            shutil.rmtree(self.archive.settings.work_dir / job.capture_id, ignore_errors=True)
            event(log, "capture.started", job=job.id, capture=job.capture_id, url=job.url,
                  attempt=job.attempts)
            try:
                view = self.archive.capture(
                    job.url, case=job.case, note=job.note, actor=job.requested_by,
                    via=job.via, source=job.capture_source, capture_id=job.capture_id,
                    hook=finish,
                )
            except Exception as exc:  # the job loop: record the failure, carry on
                log.exception("capture.crashed", extra={"fields": {"job": job.id}})
                return self._errored(job, worker, f"{type(exc).__name__}: {exc}")
        updated, gone = finish.updated, finish.gone
        event(log, "job.finished", job=job.id, capture=view.id, status=view.status,
              http_status=view.http_status, reason=view.reason,
              state=updated.state if updated else "lost",
              gone=gone.reason if gone else None)
        return updated

    def _recorded(self, capture_id: str) -> Capture | None:
        try:
            return self.archive.get_capture(capture_id)
        except NotFoundError:
            return None

    def _errored(self, job: Job, worker: str, detail: str) -> Job | None:
        with self.archive.engine.begin() as conn:
            self.queue.close_interrupted(conn, job, f"error: {detail}")
            updated = self.queue.finish(job, worker, Verdict("error", True, detail),
                                        connection=conn)
            if updated is not None and updated.state == FAILED and job.revisit_of:
                self.revisits.visited(conn, job.revisit_of, None, None)
        return updated


class _JobFinish:
    """The job's part of a capture's commit (a :class:`~archiver.capture.pipeline.
    CommitHook`): the job's new state, its revisit plan, and a takedown a revisit shows,
    written in the capture's own transaction."""

    def __init__(self, runner: JobRunner, job: Job, worker: str) -> None:
        self.runner = runner
        self.job = job
        self.worker = worker
        self.updated: Job | None = None
        self.gone: GoneVerdict | None = None
        self.gone_seq: int | None = None

    def prepare(self, capture: Capture) -> tuple[Verdict, GoneVerdict | None]:
        job = self.job
        verdict = judge_capture(capture.status, capture.reason, capture.http_status)
        final = not verdict.retry or job.attempts >= job.max_attempts
        gone = None
        if final and (job.kind == KIND_REVISIT or job.via == "watch"):
            # may read the stored WARC (removal markers): before the transaction
            gone = self.runner.revisits.judge(capture)
        return verdict, gone

    def apply(self, conn: sa.Connection, capture: Capture,
              prepared: tuple[Verdict, GoneVerdict | None]) -> None:
        verdict, gone = prepared
        job, revisits = self.job, self.runner.revisits
        updated = self.runner.queue.finish(job, self.worker, verdict, connection=conn)
        if updated is not None and updated.state != QUEUED:
            if gone is not None:
                self.gone = gone
                self.gone_seq = revisits.record_gone(
                    conn, capture, gone, revisit_of=job.revisit_of, watch_id=job.watch_id)
            if job.kind == KIND_REVISIT and job.revisit_of:
                revisits.visited(conn, job.revisit_of, capture, self.gone_seq)
            elif gone is None and capture.ok and revisits.wanted_for(job):
                revisits.plan(conn, capture, job)
        self.updated = updated


# -- a worker ---------------------------------------------------------------------------


def _install_signals(stop: threading.Event, hurry: threading.Event | None = None) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and hurry is not None:
            hurry.set()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _every(interval: float, stop: threading.Event, action: Callable[[], None],
           name: str) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(interval):
            try:
                action()
            except sa.exc.SQLAlchemyError as exc:
                event(log, f"{name}.failed", level=logging.WARNING, error=str(exc))

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


class Worker:
    """Claims and runs jobs until told to stop; finishes the current one first."""

    def __init__(self, archive: Archive, *, worker_id: str, parent_pid: int | None,
                 drain: threading.Event) -> None:
        self.archive = archive
        settings = archive.settings
        self.settings = settings
        self.worker_id = worker_id
        self.parent_pid = parent_pid
        self.drain = drain
        self.queue = JobQueue(archive.engine, ledger=archive.ledger,
                              limits=JobLimits.from_settings(settings), clock=archive.clock)
        self.revisits = Revisits(archive, self.queue, settings=settings)
        self.runner = JobRunner(archive, self.queue, self.revisits)
        self.registry = ProcessRegistry(archive.engine, clock=archive.clock)
        self._current: Job | None = None

    def _heartbeat(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid \
                and not self.drain.is_set():
            event(log, "worker.orphaned", level=logging.WARNING, worker=self.worker_id)
            self.drain.set()
        current = self._current
        if current is not None and not self.queue.heartbeat(current.id, self.worker_id) \
                and self.queue.attempt_outcome(current) in (None, "interrupted"):
            # Neither finished by us (the heartbeat raced the finish) nor still ours:
            # our lease ran out and the job was recovered; our capture, if it completes,
            # is recorded all the same, and the job's next claim sees it.
            event(log, "job.lease_lost", level=logging.WARNING, job=current.id)
        self.registry.beat(self.worker_id,
                           state="draining" if self.drain.is_set() else "running")

    def run(self) -> int:
        self.registry.register(self.worker_id, "worker")
        beating = threading.Event()
        _every(max(0.2, self.settings.daemon.lease_seconds / 4), beating, self._heartbeat,
               "worker.heartbeat")
        event(log, "worker.started", worker=self.worker_id, pid=os.getpid())
        idle = self.settings.daemon.idle_poll_seconds
        try:
            while not self.drain.is_set():
                try:
                    job = self.queue.claim(self.worker_id)
                except sa.exc.SQLAlchemyError as exc:
                    event(log, "job.claim_failed", level=logging.WARNING, error=str(exc))
                    self.drain.wait(max(idle, 1.0))
                    continue
                if job is None:
                    self.drain.wait(idle)
                    continue
                self._current = job
                self.registry.beat(self.worker_id, job_id=job.id)
                try:
                    self.runner.run(job, self.worker_id)
                except Exception:  # the job loop: log it, let the lease run out, go on
                    # The job stays ours without a heartbeat; when its lease runs out it
                    # is recovered (and, if this keeps happening, ends after max_attempts).
                    log.exception("job.crashed", extra={"fields": {"job": job.id}})
                finally:
                    self._current = None
                    self.registry.beat(self.worker_id, job_id=None)
        finally:
            beating.set()
            self.registry.stopped([self.worker_id])
            event(log, "worker.stopped", worker=self.worker_id)
        return 0


def run_worker(settings: Settings, *, worker_id: str | None = None,
               parent_pid: int | None = None) -> int:
    """``archiver worker``: run jobs until SIGTERM/SIGINT. Raises ArchiverError when the
    archive cannot be opened or its key cannot be decrypted."""
    drain = threading.Event()
    _install_signals(drain)
    with Archive.open(settings) as archive:
        archive.signing_key  # noqa: B018 - a wrong passphrase must stop us before any job
        return Worker(archive, worker_id=worker_id or new_process_id("worker"),
                      parent_pid=parent_pid, drain=drain).run()


# -- the daemon -------------------------------------------------------------------------


@dataclass
class _Child:
    worker_id: str
    process: subprocess.Popen[bytes]
    started: float


class Daemon:
    def __init__(self, archive: Archive, *, workers: int, config_path: Path | None) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.workers = workers
        self.config_path = config_path
        self.id = new_process_id("daemon")
        self.stop = threading.Event()
        self.hurry = threading.Event()
        clock = archive.clock
        self.queue = JobQueue(archive.engine, ledger=archive.ledger,
                              limits=JobLimits.from_settings(self.settings), clock=clock)
        self.revisits = Revisits(archive, self.queue, settings=self.settings)
        self.registry = ProcessRegistry(archive.engine, clock=clock)
        self.lock = SchedulerLock(self.settings.database_url, archive.engine)
        self.fetcher = GuardedFetcher.from_settings(self.settings)
        self.poller = Poller(archive.engine, self.queue,
                             build_sources(self.settings, self.fetcher),
                             settings=self.settings, clock=clock)
        self.scheduler: WatchScheduler | None = None
        self.children: list[_Child] = []
        self._respawn_at: list[float] = []
        self._crashes = 0
        self._due: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        d = self.settings.daemon
        self.registry.register(self.id, "daemon")
        event(log, "daemon.started", daemon=self.id, pid=os.getpid(), workers=self.workers,
              poll_threads=d.poll_threads)
        self.recover_at_start()
        for _ in range(self.workers):
            self._spawn()
        try:
            while not self.stop.is_set():
                try:
                    self._tick()
                except sa.exc.SQLAlchemyError as exc:
                    # The database may come back (a restart, a fail-over): keep going.
                    event(log, "daemon.database_error", level=logging.ERROR, error=str(exc))
                    self.stop.wait(1.0)
                self.stop.wait(TICK_SECONDS)
        finally:
            self._drain()
        return 0

    def recover_at_start(self) -> None:
        """Put back the jobs of processes of this host that died, clean scratch space."""
        dead = self.registry.dead_here(stale_after=self.settings.daemon.lease_seconds)
        ids = [p.id for p in dead]
        recovered = self.queue.recover(workers=ids, expired=True,
                                       why="its worker process is gone")
        self.registry.stopped(ids)
        self.registry.prune(older_than=7 * 86400)
        if recovered or dead:
            event(log, "daemon.recovered", processes=ids, jobs=[j.id for j in recovered])
        clean_scratch(self.settings, self.archive.engine)

    def _tick(self) -> None:
        now = time.monotonic()
        d = self.settings.daemon
        self._supervise(respawn=True)
        if self._due_now("heartbeat", max(0.2, d.lease_seconds / 4), now):
            self.registry.beat(self.id, scheduler=self.scheduler is not None)
        if self.scheduler is None:
            if self._due_now("standby", STANDBY_RETRY_SECONDS, now, first=True):
                self._try_to_schedule()
            return
        if self._due_now("sync", d.sync_seconds, now):
            if not self.lock.alive():
                event(log, "scheduler.lock_lost", level=logging.WARNING)
                self.scheduler.shutdown(wait=False)
                self.scheduler = None
                return
            self.scheduler.sync()
        if self.settings.revisit.enabled and self._due_now(
                "revisits", self.settings.revisit.check_seconds, now):
            self.revisits.submit_due()
        if self._due_now("recover", max(0.5, d.lease_seconds / 2), now):
            recovered = self.queue.recover(expired=True, why="its lease ran out")
            if recovered:
                event(log, "jobs.recovered", jobs=[j.id for j in recovered])
                clean_scratch(self.settings, self.archive.engine)

    def _due_now(self, name: str, interval: float, now: float, *, first: bool = False) -> bool:
        due = self._due.get(name)
        if due is None:
            self._due[name] = now + interval
            return first
        if now >= due:
            self._due[name] = now + interval
            return True
        return False

    def _try_to_schedule(self) -> None:
        if not self.lock.acquire():
            event(log, "scheduler.standby", level=logging.DEBUG)
            return
        scheduler = WatchScheduler(
            database_url=self.settings.database_url, engine=self.archive.engine,
            poller=self.poller, poll_threads=self.settings.daemon.poll_threads,
            clock=self.archive.clock,
        )
        scheduler.start()
        self.scheduler = scheduler
        self.registry.beat(self.id, scheduler=True)

    # -- workers -----------------------------------------------------------------------

    def _spawn(self) -> None:
        worker_id = new_process_id("worker")
        command = [sys.executable, "-m", "archiver.cli"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        command += ["worker", "--worker-id", worker_id, "--parent-pid", str(os.getpid())]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.children.append(_Child(worker_id, process, time.monotonic()))
        event(log, "worker.spawned", worker=worker_id, pid=process.pid)

    def _supervise(self, *, respawn: bool) -> None:
        for child in list(self.children):
            code = child.process.poll()
            if code is None:
                continue
            self.children.remove(child)
            lived = time.monotonic() - child.started
            event(log, "worker.exited", level=logging.WARNING if code else logging.INFO,
                  worker=child.worker_id, pid=child.process.pid, code=code,
                  lived_seconds=round(lived, 3))
            self._put_back([child.worker_id], f"its worker process exited with {code}")
            if respawn and not self.stop.is_set():
                self._crashes = self._crashes + 1 if lived < 10 else 0
                delay = min(60.0, 0.5 * 2 ** (self._crashes - 1)) if self._crashes else 0.0
                self._respawn_at.append(time.monotonic() + delay)
        if respawn and not self.stop.is_set():
            now = time.monotonic()
            for when in [t for t in self._respawn_at if t <= now]:
                self._respawn_at.remove(when)
                self._spawn()

    def _put_back(self, worker_ids: Sequence[str], why: str) -> None:
        recovered = self.queue.recover(workers=worker_ids, expired=False, why=why)
        self.registry.stopped(worker_ids)
        if recovered:
            event(log, "jobs.recovered", jobs=[j.id for j in recovered], why=why)
        clean_scratch(self.settings, self.archive.engine)

    # -- stopping ----------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.settings.daemon.drain_seconds
        event(log, "daemon.draining", workers=len(self.children),
              drain_seconds=self.settings.daemon.drain_seconds)
        polls: threading.Thread | None = None
        if self.scheduler is not None:
            scheduler = self.scheduler
            polls = threading.Thread(target=scheduler.shutdown, kwargs={"wait": True},
                                     name="scheduler-shutdown", daemon=True)
            polls.start()
        for child in self.children:
            _signal(child.process, signal.SIGTERM)
        while self.children and time.monotonic() < deadline and not self.hurry.is_set():
            self._supervise(respawn=False)
            time.sleep(0.05)
        late = [c for c in self.children if c.process.poll() is None]
        for child in late:
            _signal(child.process, signal.SIGKILL)
            child.process.wait()
        if late:
            event(log, "daemon.drain_deadline", level=logging.WARNING,
                  killed=[c.worker_id for c in late])
            self._put_back([c.worker_id for c in late],
                           "stopped at the drain deadline")
        self._supervise(respawn=False)
        unfinished = False
        if polls is not None:
            polls.join(max(0.0, deadline - time.monotonic()))
            unfinished = polls.is_alive()
        self.lock.release()
        self.registry.stopped([self.id])
        self.fetcher.close()
        event(log, "daemon.stopped", daemon=self.id, polls_unfinished=unfinished)
        if unfinished:
            # A poll is one transaction: cutting it short loses nothing but that poll.
            logging.shutdown()
            sys.stdout.flush()
            os._exit(0)


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        process.send_signal(signum)


def run_daemon(settings: Settings, *, workers: int | None = None,
               config_path: Path | None = None) -> int:
    """``archiver daemon``: until SIGTERM/SIGINT. Raises ArchiverError when the archive
    cannot be opened or its signing key cannot be decrypted."""
    with Archive.open(settings) as archive:
        archive.signing_key  # noqa: B018 - fail at start, not at the first capture
        daemon = Daemon(archive,
                        workers=settings.daemon.workers if workers is None else workers,
                        config_path=config_path)
        _install_signals(daemon.stop, daemon.hurry)
        return daemon.run()


# -- status ----------------------------------------------------------------------------


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
    counts = queue.counts()
    counts[DONE] = done
    return {
        "queue": counts,
        "running": [{"job_id": r.id, "url": r.url, "worker": r.worker, "started": r.started,
                     "capture_id": r.capture_id} for r in running],
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
