"""Capture leases: which process runs which capture, and closing those nobody runs.

Every capture, from ``archiver capture`` or a daemon worker, takes a lease in the
transaction that appends its ``capture.requested``: a row naming the process that runs
it (host name, boot id, PID namespace, pid, and the process's start time from
``/proc/<pid>/stat``, so a reused pid is told apart), its scratch directory, and when
the lease runs out. One thread per process renews its leases every
``capture.lease_seconds / 4``. The transaction that records the capture (completed or
failed) gives the lease back, and is refused (:class:`LeaseLost`) when the lease is
gone: someone closed the capture meanwhile, and a capture is closed exactly once.

A capture is *abandoned* when its process is gone (seen at once on the process's own
machine: same host, boot and PID namespace, and the pid is not running with the
recorded start time) or when its lease ran out (seen from any machine). The next command
that opens the archive closes it (:func:`sweep`): one ``capture.interrupted`` entry on the
ledger naming why (``process-gone``, ``lease-expired``; ``error`` when the capturing
process itself gave up on an error of the archive), an ``interrupted`` row in the
captures table (``archiver list`` and ``show`` show it), and its scratch directory
removed. Appending needs the signing key: a command that runs without the passphrase
leaves the closing to a later one that has it.

Threat model notes:

* Exactly once: every closer takes a closing lock first (PostgreSQL: a transaction-scoped
  advisory lock; SQLite: every transaction holds the database write lock from its
  start), deletes the lease row (whose row lock also orders it against the capture's own
  commit), and appends only when the ledger holds ``capture.requested`` and none of
  completed, failed or interrupted for the capture.
* The database names the scratch directory, but a database row never chooses what is
  deleted: only ``<work_dir>/<capture id>`` of the running process's own configuration is
  ever removed, and only for an id of the form the archive makes (a UUID).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from archiver import models
from archiver.capture.values import SERVICE_ACTOR
from archiver.clock import Clock, rfc3339
from archiver.errors import ArchiverError
from archiver.logs import event
from chain_of_custody.errors import LedgerError
from chain_of_custody.ledger import Ledger, LedgerEntry, entries_table

log = logging.getLogger("archiver.leases")

INTERRUPTED = "interrupted"
"""The status of a capture closed by :func:`close_interrupted`."""
PROCESS_GONE = "process-gone"
LEASE_EXPIRED = "lease-expired"
ERROR = "error"
"""Reason codes of ``capture.interrupted``."""

REQUESTED = "capture.requested"
CLOSING_ACTIONS = ("capture.completed", "capture.failed", "capture.interrupted")
"""Every ``capture.requested`` is followed by exactly one of these."""

# pg_advisory_xact_lock key: the first 8 bytes (signed) of
# SHA-256("evidence-archiver/capture-close").
_PG_CLOSE_LOCK = 0x1F0B_55E2_6C3A_9D47
MAX_MESSAGE = 500


class LeaseLost(ArchiverError):
    """The capture's lease was taken while it ran (it was closed as interrupted): its
    outcome is not recorded."""


# -- who runs a capture --------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3… of ``/proc/<pid>/stat`` (state first), or None if unreadable."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and ")"
    return fields if len(fields) > 19 else None


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks after boot, ``/proc/<pid>/stat``
    field 22), or None where ``/proc`` does not tell."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None and fields[19].isdigit() else None


def process_running(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` of this machine still runs and is the one that started at
    ``started``. When that cannot be told (no ``/proc``, another user's process hidden),
    a process that exists counts as running: closing a live capture is the worse error."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    fields = _stat_fields(pid)
    if fields is None:
        return True
    if fields[0] in ("Z", "X"):
        return False  # a zombie: dead, only not reaped yet
    return started is None or not fields[19].isdigit() or int(fields[19]) == started


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """A process, as precisely as the machine lets us name it."""

    host: str
    boot_id: str | None
    """``/proc/sys/kernel/random/boot_id``: changes at every boot."""
    pid_namespace: str | None
    """``/proc/self/ns/pid``: containers sharing a host name still differ here."""
    pid: int
    started: int | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        try:
            namespace: str | None = os.readlink("/proc/self/ns/pid")[:64]
        except OSError:
            namespace = None
        pid = os.getpid()
        return cls(host=socket.gethostname()[:255],
                   boot_id=(_read("/proc/sys/kernel/random/boot_id") or "")[:64] or None,
                   pid_namespace=namespace, pid=pid, started=process_start(pid))

    def shares_pids_with(self, row: Any) -> bool:
        """Whether ``row``'s pid means a process of our machine and PID namespace (only
        then can its liveness be checked from here)."""
        return (self.started is not None and self.boot_id is not None
                and self.pid_namespace is not None and row.host == self.host
                and row.boot_id == self.boot_id and row.pid_namespace == self.pid_namespace)


# -- holding leases ------------------------------------------------------------------------


class LeaseKeeper:
    """This process's capture leases: taken with ``capture.requested``, renewed by one
    thread, given back with the capture's outcome. Thread-safe."""

    def __init__(self, engine: sa.Engine, *, lease_seconds: float, clock: Clock,
                 identity: ProcessIdentity | None = None) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.identity = identity or ProcessIdentity.current()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _until(self) -> str:
        return rfc3339(self.clock() + timedelta(seconds=self.lease_seconds))

    def take(self, conn: sa.Connection, capture_id: str, scratch: Path) -> None:
        """Take the lease of a new capture, in the caller's transaction (the one that
        appends its ``capture.requested``); :meth:`hold` it once that committed."""
        me = self.identity
        conn.execute(sa.insert(models.capture_leases).values(
            capture_id=capture_id, host=me.host, boot_id=me.boot_id,
            pid_namespace=me.pid_namespace, pid=me.pid, pid_started=me.started,
            scratch=str(scratch), taken=rfc3339(self.clock()), lease_until=self._until(),
        ))

    def hold(self, capture_id: str) -> None:
        """Renew the lease of ``capture_id`` from now on (until :meth:`forget` or
        :meth:`give_back`)."""
        with self._lock:
            self._held.add(capture_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew_loop,
                                                name="capture-leases", daemon=True)
                self._thread.start()

    def give_back(self, conn: sa.Connection, capture_id: str) -> None:
        """Give the lease back in the transaction that records the capture's outcome.
        Raises :class:`LeaseLost` if it is no longer ours (the transaction must roll
        back: the capture was closed as interrupted)."""
        with self._lock:
            self._held.discard(capture_id)
        deleted = conn.execute(sa.delete(models.capture_leases).where(
            models.capture_leases.c.capture_id == capture_id)).rowcount
        if not deleted:
            raise LeaseLost(
                f"capture {capture_id} was closed as interrupted while it ran (its lease "
                f"was not renewed within capture.lease_seconds = {self.lease_seconds:g} s); "
                "nothing of it was recorded")

    def forget(self, capture_id: str) -> None:
        """Stop renewing ``capture_id`` (its capture ended, recorded or not)."""
        with self._lock:
            self._held.discard(capture_id)

    def renew(self) -> list[str]:
        """Extend every lease held; returns those found taken (no longer ours)."""
        with self._lock:
            held = sorted(self._held)
        if not held:
            return []
        leases = models.capture_leases
        with self.engine.begin() as conn:
            conn.execute(sa.update(leases).where(leases.c.capture_id.in_(held))
                         .values(lease_until=self._until()))
            present = set(conn.execute(sa.select(leases.c.capture_id)
                                       .where(leases.c.capture_id.in_(held))).scalars())
        lost = [c for c in held if c not in present]
        if lost:
            with self._lock:
                self._held.difference_update(lost)
            event(log, "capture.lease_lost", level=logging.WARNING, captures=lost)
        return lost

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(0.05, self.lease_seconds / 4)):
            try:
                self.renew()
            except sa.exc.SQLAlchemyError as exc:  # the database may come back in time
                event(log, "capture.lease_renewal_failed", level=logging.WARNING,
                      error=str(exc))

    def close(self) -> None:
        """Stop the renewing thread (leases still held then run out and are closed)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


# -- closing -------------------------------------------------------------------------------


def _text(value: str) -> str:
    """``value`` as text the ledger can hold (no lone surrogates), of bounded length."""
    return value.encode("utf-8", "replace").decode("utf-8")[:MAX_MESSAGE]


def close_interrupted(
    conn: sa.Connection, ledger: Ledger, capture_id: str, *, reason: str, message: str,
    details: Mapping[str, Any] | None = None, lease_expired_before: str | None = None,
) -> LedgerEntry | None:
    """Close ``capture_id`` as interrupted, in the caller's transaction: its lease
    removed, ``capture.interrupted`` appended, an ``interrupted`` capture row inserted.

    Does nothing (returns None) when the ledger has no ``capture.requested`` for it, or
    already closes it; and, with ``lease_expired_before``, when its lease is still held
    and was renewed to that time or later. Returns the appended entry otherwise.
    """
    leases = models.capture_leases
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_CLOSE_LOCK)))
    take = sa.delete(leases).where(leases.c.capture_id == capture_id)
    if lease_expired_before is not None:
        take = take.where(leases.c.lease_until < lease_expired_before)
    if not conn.execute(take).rowcount and lease_expired_before is not None and \
            conn.execute(sa.select(leases.c.capture_id)
                         .where(leases.c.capture_id == capture_id)).first() is not None:
        return None  # renewed meanwhile: its process is alive after all
    e = entries_table.c
    subject = f"capture:{capture_id}"
    rows = conn.execute(
        sa.select(e.action, e.actor, e.time, e.payload)
        .where(e.subject == subject, e.action.in_([REQUESTED, *CLOSING_ACTIONS]))
        .order_by(e.seq)
    ).all()
    requested = next((r for r in rows if r.action == REQUESTED), None)
    if requested is None or any(r.action in CLOSING_ACTIONS for r in rows):
        return None
    c = models.captures
    if conn.execute(sa.select(c.c.id).where(c.c.id == capture_id)).first() is not None:
        return None  # recorded by a version that wrote no closing entry: leave it
    asked = json.loads(requested.payload)
    url = asked.get("url") if isinstance(asked.get("url"), str) else ""
    message = _text(message)
    entry = ledger.append(
        actor=SERVICE_ACTOR, action="capture.interrupted", subject=subject,
        payload={"url": url, "reason": reason, "message": message, **(details or {})},
        connection=conn,
    )
    from archiver.capture.commit import case_id_for

    case = asked.get("case")
    case_id = case_id_for(conn, case, now=ledger.clock()) if isinstance(case, str) else None
    note = asked.get("note")
    via = asked.get("via")
    conn.execute(sa.insert(c).values(
        id=capture_id, url=url, case_id=case_id, note=note if isinstance(note, str) else None,
        requested_by=requested.actor, requested_via=via if isinstance(via, str) else "cli",
        requested_at=requested.time, status=INTERRUPTED, reason=reason, message=message,
        ended=entry.time, ledger_seq=entry.seq,
    ))
    return entry


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A lease nobody holds any more, and why."""

    capture_id: str
    reason: str
    message: str
    lease_until: str
    details: Mapping[str, Any]


def abandoned(conn: sa.Connection, *, now: datetime, here: ProcessIdentity) -> list[Abandoned]:
    """The leases whose process is gone (checked where ``here`` can see it) or whose
    lease ran out before ``now``."""
    now_s = rfc3339(now)
    found = []
    for row in conn.execute(sa.select(models.capture_leases)
                            .order_by(models.capture_leases.c.taken)):
        details = {"host": row.host, "pid": row.pid}
        if here.shares_pids_with(row) and not process_running(row.pid, row.pid_started):
            found.append(Abandoned(row.capture_id, PROCESS_GONE,
                                   f"its process (pid {row.pid} on {row.host}) is gone",
                                   row.lease_until, details))
        elif row.lease_until < now_s:
            found.append(Abandoned(row.capture_id, LEASE_EXPIRED,
                                   f"its lease ran out at {row.lease_until} (process pid "
                                   f"{row.pid} on {row.host} stopped renewing it)",
                                   row.lease_until, details))
    return found


IN_FLIGHT_SHOWN = 100
"""At most this many captures in flight are listed (``archiver status``); the count is
always whole."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """A capture some process holds a lease on: running now, or about to be closed."""

    capture_id: str
    url: str
    """The URL as requested (``capture.requested``); empty when the ledger does not say."""
    host: str
    pid: int
    since: str
    lease_until: str

    def as_json(self) -> dict[str, Any]:
        return {"capture_id": self.capture_id, "url": self.url, "host": self.host,
                "pid": self.pid, "since": self.since, "lease_until": self.lease_until}


def in_flight(conn: sa.Connection, *, limit: int = IN_FLIGHT_SHOWN) -> tuple[int, list[InFlight]]:
    """How many captures hold a lease, and the ``limit`` oldest of them, with the URL
    their ``capture.requested`` names."""
    leases = models.capture_leases
    total = int(conn.execute(sa.select(sa.func.count()).select_from(leases)).scalar_one())
    rows = conn.execute(sa.select(leases).order_by(leases.c.taken, leases.c.capture_id)
                        .limit(limit)).all()
    urls: dict[str, str] = {}
    if rows:
        e = entries_table.c
        for subject, payload in conn.execute(
            sa.select(e.subject, e.payload).where(
                e.action == REQUESTED,
                e.subject.in_([f"capture:{row.capture_id}" for row in rows]))
        ):
            asked = json.loads(payload)
            url = asked.get("url") if isinstance(asked, dict) else None
            if isinstance(url, str):
                urls[subject.removeprefix("capture:")] = url
    return total, [InFlight(row.capture_id, urls.get(row.capture_id, ""), row.host, row.pid,
                            row.taken, row.lease_until) for row in rows]


def is_capture_id(name: str) -> bool:
    """Whether ``name`` has the form of the archive's capture ids (a UUID)."""
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def remove_scratch(work_dir: Path, capture_id: str) -> bool:
    """Remove ``<work_dir>/<capture_id>`` (only that); True if there was one."""
    if not is_capture_id(capture_id):
        return False
    path = work_dir / capture_id
    if not path.is_dir() or path.is_symlink():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def orphan_scratch(engine: sa.Engine, work_dir: Path) -> list[str]:
    """Remove the scratch directories of ``work_dir`` named after a capture that holds
    no lease (its capture ended, or was closed); returns their names."""
    try:
        names = [d.name for d in work_dir.iterdir() if is_capture_id(d.name) and d.is_dir()]
    except OSError:
        return []
    if not names:
        return []
    # Listed before the leases are read: a capture takes its lease before it makes its
    # directory, so a directory seen here whose lease is absent below has ended.
    leases = models.capture_leases
    with engine.connect() as conn:
        held = set(conn.execute(sa.select(leases.c.capture_id)
                                .where(leases.c.capture_id.in_(names))).scalars())
    removed = [name for name in names if name not in held and remove_scratch(work_dir, name)]
    if removed:
        event(log, "scratch.cleaned", directories=removed)
    return removed


def sweep(engine: sa.Engine, ledger: Ledger, *, work_dir: Path, clock: Clock,
          here: ProcessIdentity, key_ready: Callable[[], bool]) -> list[str]:
    """Close every abandoned capture and remove leftover scratch; returns the ids of the
    captures closed. ``key_ready()`` says whether appending is possible (the signing
    key could be loaded); when it is not, abandoned captures stay open for a later
    command, and only scratch of ended captures is removed."""
    started = time.monotonic()
    with engine.connect() as conn:
        candidates = abandoned(conn, now=clock(), here=here)
    closed: list[str] = []
    if candidates and key_ready():
        for lost in candidates:
            expired = None if lost.reason == PROCESS_GONE else rfc3339(clock())
            try:
                with engine.begin() as conn:
                    entry = close_interrupted(conn, ledger, lost.capture_id,
                                              reason=lost.reason, message=lost.message,
                                              details=lost.details,
                                              lease_expired_before=expired)
            except LedgerError as exc:
                event(log, "capture.close_failed", level=logging.WARNING,
                      capture=lost.capture_id, error=str(exc))
                continue
            if entry is not None:
                closed.append(lost.capture_id)
                event(log, "capture.interrupted", capture=lost.capture_id,
                      reason=lost.reason, seq=entry.seq)
    elif candidates:
        event(log, "capture.close_deferred", captures=[a.capture_id for a in candidates],
              why="no signing key")
    orphan_scratch(engine, work_dir)
    if closed:
        event(log, "captures.closed", captures=closed,
              ms=round((time.monotonic() - started) * 1000))
    return closed
