"""Exports asked for through the API: queued, run by a few background threads of the
server, the bundle kept in the blob store until someone downloads it.

The flow of one request:

1. :meth:`ExportWorker.submit` refuses (:class:`ExportQueueFull`) when ``workers``
   exports run and ``queue_size`` more wait; otherwise it writes an ``exports`` row
   (state ``queued``) and ``export.requested`` on the ledger (actor: the person, payload:
   the captures asked for and the context they asked through) in one transaction;
2. a worker thread takes it (``running``) and calls
   :func:`~archiver.export.case.export_case` with the person as the actor, so that
   ``bundle.exported`` names them; the ZIP is written under ``work_dir`` (0600), then put
   into the blob store (one store or several: every API server of the archive can serve
   it), then its file is removed;
3. the row becomes ``done`` (digest, size, the ``bundle.exported`` seq), or ``failed``
   with a stable reason and a plain sentence (:func:`public_failure`), and
   ``export.failed`` on the ledger with the same two; the full error goes to the
   server's log only.

Threat model, next to the code that defends against it:

- *A server that dies mid-export* must not leave an export "running" forever: every row
  a server holds carries its process identity (``worker``) and a lease it renews every
  ``lease_seconds / 4``. At start-up, and at every renewal, a server marks failed the
  exports whose process is gone (seen at once on the same machine) or whose lease ran
  out (seen from any machine), saying so in the error.
- *A flood of export requests* (each one reads a whole case) is bounded: at most
  ``workers`` run at once and ``queue_size`` wait; beyond that the request is refused,
  not queued without end.
- *A bundle that changed in the store* is detected on download: the bytes are hashed as
  they stream and compared with the recorded digest (see the API's download route).
- *Server paths in error messages*: an export's error (a blob store's name, a work
  directory) is read by the person who asked and by the ledger's readers; they get a
  reason code and a sentence written here, never the text of the exception.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, Final

import sqlalchemy as sa

from archiver import models
from archiver.archive import Archive
from archiver.capture.leases import ProcessIdentity, process_running
from archiver.capture.values import SERVICE_ACTOR
from archiver.clock import rfc3339
from archiver.errors import ArchiverError, NotFoundError
from chain_of_custody.errors import CustodyError
from storage.errors import StorageError

log = logging.getLogger("archiver.export.requests")

QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
FAILED: Final = "failed"
STATES: Final = (QUEUED, RUNNING, DONE, FAILED)

DEFAULT_WORKERS = 1
DEFAULT_QUEUE_SIZE = 4
DEFAULT_LEASE_SECONDS = 120.0
MAX_ERROR = 2000

# export failure reasons (``exports.reason``, ``export.failed`` payload ``reason``)
NOT_FOUND: Final = "not-found"
EVIDENCE_DAMAGED: Final = "evidence-damaged"
STORE_UNREADABLE: Final = "store-unreadable"
LEDGER_FAILED: Final = "ledger-failed"
WRITE_FAILED: Final = "write-failed"
EXPORT_FAILED: Final = "export-failed"
NOT_STORED: Final = "bundle-not-stored"
SERVER_STOPPED: Final = "server-stopped"
INTERNAL_ERROR: Final = "internal-error"


class ExportQueueFull(ArchiverError):
    """Too many exports run or wait already; ask again later."""


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """How far a running export is (known only to the server running it)."""

    captures: int
    captures_done: int
    bytes_total: int
    bytes_done: int

    def as_json(self) -> dict[str, int]:
        return {"captures": self.captures, "captures_done": self.captures_done,
                "bytes_total": self.bytes_total, "bytes_done": self.bytes_done}


@dataclass(frozen=True, slots=True)
class ExportView:
    """One export as recorded (never the context it was asked through: that is on the
    ledger, for the ledger's readers)."""

    id: str
    case_id: int
    case: str
    capture_ids: tuple[str, ...] | None
    requested_by: str
    created: str
    state: str
    started: str | None
    finished: str | None
    sha256: str | None
    size: int | None
    file_name: str | None
    reason: str | None
    """Why it failed: one of the reason codes of this module."""
    error: str | None
    """Why it failed, as a sentence for the person who asked (never a server path)."""
    ledger_seq: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "export_id": self.id, "case": self.case,
            "captures": None if self.capture_ids is None else list(self.capture_ids),
            "requested_by": self.requested_by, "created": self.created,
            "state": self.state, "started": self.started, "finished": self.finished,
            "sha256": self.sha256, "size": self.size, "file_name": self.file_name,
            "reason": self.reason, "error": self.error, "ledger_seq": self.ledger_seq,
        }


def export_view(row: Any) -> ExportView:
    """An :class:`ExportView` from a row of ``exports`` joined with the case's name
    (``case_name``)."""
    return ExportView(
        id=row.id, case_id=row.case_id, case=row.case_name,
        capture_ids=None if row.capture_ids is None else tuple(json.loads(row.capture_ids)),
        requested_by=row.requested_by, created=row.created, state=row.state,
        started=row.started, finished=row.finished, sha256=row.sha256,
        size=None if row.size is None else int(row.size), file_name=row.file_name,
        reason=row.reason, error=row.error,
        ledger_seq=None if row.ledger_seq is None else int(row.ledger_seq),
    )


def select_exports() -> sa.Select[Any]:
    """``exports`` rows with their case's name, for :func:`export_view`."""
    e, c = models.exports, models.cases
    return sa.select(e, c.c.name.label("case_name")).join(c, c.c.id == e.c.case_id)


def public_failure(exc: Exception) -> tuple[str, str]:
    """The reason code and the sentence an export that raised ``exc`` (from
    :func:`~archiver.export.case.export_case`) is shown with. Written here, not taken
    from ``exc``, whose text may name the blob store's or the work directory's paths."""
    from archiver.export.case import DamagedEvidence

    cause = exc.__cause__
    if isinstance(exc, NotFoundError):
        return NOT_FOUND, ("a capture asked for is no longer in the case, or the case has "
                           "nothing to export")
    if isinstance(exc, DamagedEvidence):
        return EVIDENCE_DAMAGED, (f"the stored evidence of capture {exc.capture_id} does "
                                  "not match its signed record; an auditor should verify "
                                  "that capture")
    if isinstance(cause, StorageError):
        return STORE_UNREADABLE, ("a stored copy of the case's evidence could not be read; "
                                  "an auditor should verify the case's captures")
    if isinstance(cause, CustodyError):
        return LEDGER_FAILED, ("the bundle could not be recorded on the ledger, so it was "
                               "not kept; ask for the export again later")
    if isinstance(cause, OSError):
        return WRITE_FAILED, ("the server could not write the bundle; ask for the export "
                              "again later")
    return EXPORT_FAILED, "the bundle could not be made; the server's log says why"


def _worker_name(identity: ProcessIdentity) -> str:
    # pid, start time, boot, namespace first: the host name may be long and is cut
    parts = [str(identity.pid), str(identity.started or ""), identity.boot_id or "",
             identity.pid_namespace or "", identity.host]
    return "|".join(parts)[:160]


def _left_by(worker: str | None, here: ProcessIdentity) -> str | None:
    """Why the process named ``worker`` can no longer run an export, judged from
    ``here``: ``None`` when it may still (another machine, or alive)."""
    if not worker:
        return None
    parts = worker.split("|", 4)
    if len(parts) != 5 or not parts[0].isdigit():
        return None
    pid, started, boot, namespace, host = parts
    same_machine = (here.boot_id is not None and here.pid_namespace is not None
                    and boot == here.boot_id and namespace == here.pid_namespace
                    and host == here.host[:len(host)])
    if not same_machine:
        return None
    if int(pid) == here.pid and started == str(here.started or ""):
        return None  # ourselves
    if process_running(int(pid), int(started) if started.isdigit() else None):
        return None
    return "its server process is gone"


class _Tracker:
    """The :class:`~archiver.export.case.Progress` of one running export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._captures = 0
        self._captures_done = 0
        self._total = 0
        self._done = 0

    def start(self, captures: int, total_bytes: int) -> None:
        with self._lock:
            self._captures, self._total = captures, total_bytes

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes

    def capture_done(self) -> None:
        with self._lock:
            self._captures_done += 1

    def snapshot(self) -> ExportProgress:
        with self._lock:
            return ExportProgress(self._captures, self._captures_done, self._total,
                                  self._done)


class ExportWorker:
    """Runs the exports asked for through one API server, ``workers`` at a time.

    :meth:`start` before use (it marks failed the exports a dead server left, then starts
    the threads); :meth:`stop` at shutdown. Thread-safe.
    """

    def __init__(self, archive: Archive, *, workers: int = DEFAULT_WORKERS,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        if workers < 1 or queue_size < 0 or lease_seconds <= 0:
            raise ValueError("an export worker needs workers >= 1, queue_size >= 0 and "
                             "a positive lease")
        self.archive = archive
        self.workers = workers
        self.queue_size = queue_size
        self.lease_seconds = lease_seconds
        self.here = ProcessIdentity.current()
        self.name = _worker_name(self.here)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._outstanding = 0  # queued or running here
        self._progress: dict[str, _Tracker] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        """Mark failed what dead servers left, then start the worker and lease threads."""
        if self._threads:
            return
        try:
            self.sweep()
        except (ArchiverError, sa.exc.SQLAlchemyError) as exc:
            # the server still starts; the lease thread sweeps again in a while
            log.warning("cannot close the exports a stopped server left: %s", exc)
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"export-worker-{number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        keeper = threading.Thread(target=self._keep_leases, name="export-leases",
                                  daemon=True)
        keeper.start()
        self._threads.append(keeper)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop taking exports; wait up to ``timeout`` seconds for the running ones. The
        exports still queued here are marked failed (nobody would run them)."""
        self._stopping.set()
        for _ in range(self.workers):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        while True:
            try:
                export_id = self._queue.get_nowait()
            except queue.Empty:
                break
            if export_id is not None:
                self._fail(export_id, SERVER_STOPPED, "the server stopped before this "
                           "export started; ask for it again", states=(QUEUED,),
                           held_by=self.name)

    # -- asking ---------------------------------------------------------------------------

    def submit(self, *, case_id: int, capture_ids: Sequence[str] | None, actor: str,
               context: Mapping[str, str] | None) -> ExportView:
        """Queue an export of case ``case_id`` (all its captures, or ``capture_ids``) for
        ``actor``. Raises :class:`ExportQueueFull`, :class:`NotFoundError` (no such case),
        :class:`ArchiverError` (the server is stopping); ledger ``export.requested``."""
        if self._stopping.is_set():
            raise ArchiverError("the server is stopping; ask for the export again later")
        with self._lock:
            if self._outstanding >= self.workers + self.queue_size:
                raise ExportQueueFull(
                    f"{self._outstanding} exports are running or waiting on this server "
                    "already; ask again when one has finished")
            self._outstanding += 1
        try:
            view = self._insert(case_id, capture_ids, actor, context)
        except BaseException:
            with self._lock:
                self._outstanding -= 1
            raise
        self._queue.put(view.id)
        return view

    def _insert(self, case_id: int, capture_ids: Sequence[str] | None, actor: str,
                context: Mapping[str, str] | None) -> ExportView:
        self.archive.ledger.signing_key()  # the request must be recorded: fail first
        export_id = "exp_" + secrets.token_hex(8)
        now = self.archive.clock()
        ids = None if capture_ids is None else list(dict.fromkeys(capture_ids))
        with self.archive.engine.begin() as conn:
            name = conn.execute(sa.select(models.cases.c.name)
                                .where(models.cases.c.id == case_id)).scalar_one_or_none()
            if name is None:
                raise NotFoundError(f"no case with id {case_id}")
            conn.execute(sa.insert(models.exports).values(
                id=export_id, case_id=case_id,
                capture_ids=None if ids is None else json.dumps(ids),
                requested_by=actor, context=json.dumps(dict(context)) if context else None,
                created=rfc3339(now), state=QUEUED, worker=self.name,
                lease_until=self._lease_until()))
            payload: dict[str, Any] = {"export_id": export_id, "case": name, "captures": ids}
            if context:
                payload["context"] = dict(context)
            self.archive.ledger.append(actor=actor, action="export.requested",
                                       subject=f"case:{name}", payload=payload,
                                       connection=conn)
            row = conn.execute(select_exports()
                               .where(models.exports.c.id == export_id)).one()
        return export_view(row)

    # -- reading --------------------------------------------------------------------------

    def get(self, export_id: str) -> ExportView:
        """Raises :class:`NotFoundError`."""
        with self.archive.engine.connect() as conn:
            row = conn.execute(select_exports()
                               .where(models.exports.c.id == export_id)).first()
        if row is None:
            raise NotFoundError(f"no export {export_id!r}")
        return export_view(row)

    def progress(self, export_id: str) -> ExportProgress | None:
        """How far export ``export_id`` is, if it runs on this server."""
        with self._lock:
            tracker = self._progress.get(export_id)
        return None if tracker is None else tracker.snapshot()

    def open_bundle(self, view: ExportView) -> AbstractContextManager[BinaryIO]:
        """The bundle of a done export, from the blob store. Raises
        :class:`ArchiverError` (not done, or the store cannot give it)."""
        if view.state != DONE or view.sha256 is None:
            raise ArchiverError(f"export {view.id} is {view.state}; its bundle can be "
                                "downloaded once it is done")
        try:
            return self.archive.store.open(view.sha256)
        except StorageError as exc:
            raise ArchiverError(f"cannot read the bundle of export {view.id}: {exc}") \
                from exc

    # -- leases ---------------------------------------------------------------------------

    def _lease_until(self) -> str:
        return rfc3339(self.archive.clock() + timedelta(seconds=self.lease_seconds))

    def sweep(self) -> list[str]:
        """Mark failed every queued or running export whose server is gone or whose
        lease ran out; returns their ids."""
        e = models.exports
        now = rfc3339(self.archive.clock())
        with self.archive.engine.connect() as conn:
            rows = conn.execute(sa.select(e.c.id, e.c.worker, e.c.lease_until, e.c.state)
                                .where(e.c.state.in_((QUEUED, RUNNING)))).all()
        closed = []
        for row in rows:
            if row.worker == self.name:
                continue
            why = _left_by(row.worker, self.here)
            if why is None and row.lease_until is not None and row.lease_until < now:
                why = f"its server stopped renewing its lease (it ran out at {row.lease_until})"
            if why is None:
                continue
            verb = "running" if row.state == RUNNING else "waiting"
            if self._fail(row.id, SERVER_STOPPED, f"the server {verb} this export stopped "
                          f"before it finished ({why}); ask for the export again",
                          states=(row.state,), held_by=row.worker):
                closed.append(row.id)
        return closed

    def _renew(self) -> None:
        e = models.exports
        with self.archive.engine.begin() as conn:
            conn.execute(sa.update(e).where(e.c.worker == self.name,
                                            e.c.state.in_((QUEUED, RUNNING)))
                         .values(lease_until=self._lease_until()))

    def _keep_leases(self) -> None:
        while not self._stopping.wait(self.lease_seconds / 4):
            try:
                self._renew()
                self.sweep()
            except (sa.exc.SQLAlchemyError, ArchiverError) as exc:
                # the next round tries again; a lease lost meanwhile fails the export
                log.warning("cannot renew export leases: %s", exc)

    # -- running --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            export_id = self._queue.get()
            if export_id is None:
                return
            try:
                self._run(export_id)
            except Exception as exc:  # the job loop: record it, carry on
                log.exception("export %s failed unexpectedly", export_id)
                try:
                    self._fail(export_id, INTERNAL_ERROR, f"the export failed on an "
                               f"unexpected error ({type(exc).__name__}); the server's log "
                               "has the details", states=(QUEUED, RUNNING),
                               held_by=self.name)
                except (ArchiverError, sa.exc.SQLAlchemyError):
                    # the lease runs out, and a sweep records the failure later
                    log.exception("cannot record the failure of export %s", export_id)
            finally:
                with self._lock:
                    self._outstanding -= 1
                    self._progress.pop(export_id, None)

    def _take(self, export_id: str) -> Any:
        e = models.exports
        with self.archive.engine.begin() as conn:
            taken = conn.execute(
                sa.update(e).where(e.c.id == export_id, e.c.state == QUEUED,
                                   e.c.worker == self.name)
                .values(state=RUNNING, started=rfc3339(self.archive.clock()),
                        lease_until=self._lease_until()))
            if taken.rowcount != 1:
                return None  # failed meanwhile (a sweep from another server)
            return conn.execute(select_exports().where(e.c.id == export_id)).one()

    def _run(self, export_id: str) -> None:
        from archiver.export.case import export_case

        row = self._take(export_id)
        if row is None:
            return
        view = export_view(row)
        tracker = _Tracker()
        with self._lock:
            self._progress[export_id] = tracker
        context = json.loads(row.context) if row.context else None
        target_dir = self.archive.settings.work_dir / "exports"
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = target_dir / f"{export_id}.zip"
        out.unlink(missing_ok=True)  # a leftover of a server that died writing it
        try:
            try:
                report = export_case(self.archive, case=view.case, out=out,
                                     capture_ids=view.capture_ids or (),
                                     actor=view.requested_by, context=context,
                                     progress=tracker)
            except ArchiverError as exc:
                reason, sentence = public_failure(exc)
                # the whole text, paths and all, for the operator; the person gets the
                # sentence
                log.warning("export %s failed (%s): %s", export_id, reason, exc)
                self._fail(export_id, reason, sentence, states=(RUNNING,), held_by=self.name)
                return
            try:
                self.archive.store.put_file(out, sha256=report.digest.sha256,
                                            size=report.digest.size,
                                            sha512=report.digest.sha512)
            except StorageError as exc:
                log.warning("export %s failed (%s): %s", export_id, NOT_STORED, exc)
                self._fail(export_id, NOT_STORED, f"the bundle was written and recorded "
                           f"(ledger entry {report.ledger_seq}) but could not be put into "
                           "the blob store; ask for the export again later",
                           states=(RUNNING,), held_by=self.name)
                return
        finally:
            out.unlink(missing_ok=True)
        e = models.exports
        with self.archive.engine.begin() as conn:
            conn.execute(sa.update(e).where(e.c.id == export_id).values(
                state=DONE, finished=rfc3339(self.archive.clock()),
                sha256=report.digest.sha256, size=report.digest.size,
                file_name=f"{report.bag_name}.zip", ledger_seq=report.ledger_seq,
                lease_until=None))

    def _fail(self, export_id: str, reason: str, error: str, *, states: Sequence[str],
              held_by: str | None) -> bool:
        """Mark an export failed (if it is still in one of ``states`` and held by
        ``held_by``: a check that two servers sweeping at once record it once) and record
        ``export.failed`` {reason, error}. ``error`` is shown to the person who asked and
        to the ledger's readers: a sentence of ours, never an exception's text. Returns
        whether it did."""
        e = models.exports
        error = error[:MAX_ERROR]
        self.archive.ledger.signing_key()
        holder = e.c.worker.is_(None) if held_by is None else e.c.worker == held_by
        with self.archive.engine.begin() as conn:
            changed = conn.execute(
                sa.update(e).where(e.c.id == export_id, e.c.state.in_(list(states)), holder)
                .values(state=FAILED, finished=rfc3339(self.archive.clock()),
                        reason=reason, error=error, lease_until=None))
            if changed.rowcount != 1:
                return False
            row = conn.execute(select_exports().where(e.c.id == export_id)).one()
            self.archive.ledger.append(
                actor=SERVICE_ACTOR, action="export.failed", subject=f"case:{row.case_name}",
                payload={"export_id": export_id, "requested_by": row.requested_by,
                         "reason": reason, "error": error},
                connection=conn)
        return True


__all__ = [
    "DONE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "STATES",
    "ExportProgress",
    "ExportQueueFull",
    "ExportView",
    "ExportWorker",
    "export_view",
    "public_failure",
    "select_exports",
]
