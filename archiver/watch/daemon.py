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
attempt closed on the ledger with ``capture.interrupted``. Every capture also holds a
lease of its own (:mod:`archiver.capture.leases`): the daemon closes abandoned captures of
any process (``archiver capture`` included) at start and every ``capture.lease_seconds /
2``, and deletes scratch directories whose capture holds no lease at start and whenever a
worker dies.

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
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import sqlalchemy as sa

from archiver.archive import Archive, Capture
from archiver.capture.leases import ERROR, INTERRUPTED, is_capture_id, orphan_scratch
from archiver.capture.parallel import auto_concurrency
from archiver.errors import NotFoundError
from archiver.logs import event
from archiver.settings import LocalStoreSettings, Settings
from archiver.watch.jobs import (
    FAILED,
    KIND_REVISIT,
    QUEUED,
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
from archiver.watch.status import ProcessRegistry, new_process_id
from storage.errors import StorageError
from storage.local import LocalBlobStore

log = logging.getLogger("archiver.daemon")

TICK_SECONDS = 0.2
STANDBY_RETRY_SECONDS = 5.0
AUDIT_CHECK_SECONDS = 60.0


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
    """Delete scratch directories no capture in flight owns.

    A directory named after a capture (``<work_dir>/<capture id>``) whose capture holds
    no lease has ended or was closed as interrupted: deleted at once (whoever runs it,
    daemon worker or ``archiver capture``). Any other directory (an export's staging) is
    deleted only once untouched for longer than any capture may take. Partial blobs a
    killed writer left in a local store's ``tmp/`` go the same way. Returns the scratch
    directories deleted.
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
    deleted = orphan_scratch(engine, work)
    others = []
    for path in work.iterdir():
        if not path.is_dir() or is_capture_id(path.name):
            continue
        try:
            stale = time.time() - _newest_mtime(path) > quiet_for
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            others.append(path.name)
    if others:
        event(log, "scratch.cleaned", directories=others)
    return deleted + others


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
        if view is not None and view.status == INTERRUPTED:
            # Closed by another command (its process was found gone) but the job was not
            # recovered with it: this attempt is over, the next one gets a new id.
            return self._errored(job, worker, f"its capture was interrupted: {view.message}")
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
            self.queue.close_interrupted(conn, job, f"error: {detail}", reason=ERROR)
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
    """Claims and runs jobs until told to stop: ``capture.concurrency`` at once, each on
    a thread of its own (sharing the process's one Chromium); finishes them first."""

    def __init__(self, archive: Archive, *, worker_id: str, parent_pid: int | None,
                 drain: threading.Event, concurrency: int = 1) -> None:
        self.archive = archive
        settings = archive.settings
        self.settings = settings
        self.worker_id = worker_id
        self.parent_pid = parent_pid
        self.drain = drain
        self.concurrency = max(1, concurrency)
        self.queue = JobQueue(archive.engine, ledger=archive.ledger,
                              limits=JobLimits.from_settings(settings), clock=archive.clock)
        self.revisits = Revisits(archive, self.queue, settings=settings)
        self.runner = JobRunner(archive, self.queue, self.revisits)
        self.registry = ProcessRegistry(archive.engine, clock=archive.clock)
        self._lock = threading.Lock()
        self._current: dict[int, Job] = {}

    def _heartbeat(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid \
                and not self.drain.is_set():
            event(log, "worker.orphaned", level=logging.WARNING, worker=self.worker_id)
            self.drain.set()
        with self._lock:
            current = list(self._current.values())
        for job in current:
            if not self.queue.heartbeat(job.id, self.worker_id) \
                    and self.queue.attempt_outcome(job) in (None, "interrupted"):
                # Neither finished by us (the heartbeat raced the finish) nor still ours:
                # our lease ran out and the job was recovered; our capture, if it
                # completes, is recorded all the same, and the job's next claim sees it.
                event(log, "job.lease_lost", level=logging.WARNING, job=job.id)
        self.registry.beat(self.worker_id,
                           state="draining" if self.drain.is_set() else "running")

    def run(self) -> int:
        self.registry.register(self.worker_id, "worker")
        beating = threading.Event()
        _every(max(0.2, self.settings.daemon.lease_seconds / 4), beating, self._heartbeat,
               "worker.heartbeat")
        event(log, "worker.started", worker=self.worker_id, pid=os.getpid(),
              concurrency=self.concurrency)
        threads = [threading.Thread(target=self._loop, name=f"capture-{i}")
                   for i in range(self.concurrency)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            beating.set()
            self.registry.stopped([self.worker_id])
            event(log, "worker.stopped", worker=self.worker_id)
        return 0

    def _loop(self) -> None:
        idle = self.settings.daemon.idle_poll_seconds
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
            self._started(job)
            try:
                self.runner.run(job, self.worker_id)
            except Exception:  # the job loop: log it, let the lease run out, go on
                # The job stays ours without a heartbeat; when its lease runs out it is
                # recovered (and, if this keeps happening, ends after max_attempts).
                log.exception("job.crashed", extra={"fields": {"job": job.id}})
            finally:
                self._ended(job)

    def _started(self, job: Job) -> None:
        with self._lock:
            self._current[job.id] = job
        self.registry.beat(self.worker_id, job_id=job.id)

    def _ended(self, job: Job) -> None:
        with self._lock:
            self._current.pop(job.id, None)
            still = min(self._current, default=None)
        self.registry.beat(self.worker_id, job_id=still)


def run_worker(settings: Settings, *, worker_id: str | None = None,
               parent_pid: int | None = None) -> int:
    """``archiver worker``: run jobs until SIGTERM/SIGINT. Raises ArchiverError when the
    archive cannot be opened or its key cannot be decrypted."""
    drain = threading.Event()
    _install_signals(drain)
    with Archive.open(settings) as archive:
        archive.signing_key  # noqa: B018 - a wrong passphrase must stop us before any job
        concurrency = settings.capture.concurrency or auto_concurrency()
        return Worker(archive, worker_id=worker_id or new_process_id("worker"),
                      parent_pid=parent_pid, drain=drain, concurrency=concurrency).run()


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
        self._audit: threading.Thread | None = None

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
        audit = self.settings.audit
        if self._due_now("audit", min(AUDIT_CHECK_SECONDS, audit.every * audit.sample / 2),
                         now, first=True):
            self._maybe_audit()
        if self._due_now("recover", max(0.5, d.lease_seconds / 2), now):
            recovered = self.queue.recover(expired=True, why="its lease ran out")
            if recovered:
                event(log, "jobs.recovered", jobs=[j.id for j in recovered])
                clean_scratch(self.settings, self.archive.engine)
        if self._due_now("abandoned", max(0.5, self.settings.capture.lease_seconds / 2), now):
            # Captures of processes that died elsewhere (``archiver capture`` on this or
            # another machine, a worker on another machine): closed here too.
            self.archive.close_abandoned()

    def _due_now(self, name: str, interval: float, now: float, *, first: bool = False) -> bool:
        due = self._due.get(name)
        if due is None:
            self._due[name] = now + interval
            return first
        if now >= due:
            self._due[name] = now + interval
            return True
        return False

    def _maybe_audit(self) -> None:
        """Start the scheduled fixity audit in a thread of its own when it is due (and
        none is running): it may read the whole archive, and polls go on meanwhile."""
        from archiver.audit import audit_due

        if self._audit is not None and self._audit.is_alive():
            return
        if not audit_due(self.archive.engine, self.settings.audit, self.archive.clock()):
            return
        self._audit = threading.Thread(target=self._run_audit, name="audit", daemon=True)
        self._audit.start()

    def _run_audit(self) -> None:
        from archiver.audit import run_scheduled
        from archiver.capture.values import SERVICE_ACTOR

        event(log, "audit.started")
        try:
            report = run_scheduled(self.archive, actor=SERVICE_ACTOR, stop=self.stop)
        except Exception:  # the audit loop: log it; the next one is due after the interval
            log.exception("audit.crashed")
            return
        counts = report.counts()
        event(log, "audit.finished", level=logging.INFO if report.ok else logging.WARNING,
              **{k: counts[k] for k in ("audit", "captures", "copies", "bytes", "damaged",
                                        "repaired", "unreadable", "remaining",
                                        "interrupted")},
              ledger_seq=report.ledger_seq)

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
        if self._audit is not None:
            # Told to stop by the same event: it ends after the copy it is reading.
            self._audit.join(max(0.0, deadline - time.monotonic()))
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
    # Opening the archive (migrations checked, abandoned captures closed, the key
    # decrypted) takes a while: a stop asked for meanwhile is kept and honoured at once,
    # so a daemon stopped while it starts still ends cleanly (exit 0), not by the signal.
    early_stop, early_hurry = threading.Event(), threading.Event()
    _install_signals(early_stop, early_hurry)
    with Archive.open(settings) as archive:
        archive.signing_key  # noqa: B018 - fail at start, not at the first capture
        daemon = Daemon(archive,
                        workers=settings.daemon.workers if workers is None else workers,
                        config_path=config_path)
        _install_signals(daemon.stop, daemon.hurry)
        if early_stop.is_set():
            daemon.stop.set()
        if early_hurry.is_set():
            daemon.hurry.set()
        return daemon.run()


# -- status ----------------------------------------------------------------------------
