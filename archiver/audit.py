"""Fixity audits: every stored copy re-read and re-hashed against the signed manifests.

For each capture audited:

1. the ``capture.completed`` ledger entry names the manifest's and the signature's
   SHA-256 (the database row is not trusted for that);
2. every store's copy of the manifest and of the signature is re-hashed against those
   digests, and the manifest's signature is verified against the key history on the
   ledger;
3. every artifact the signed manifest lists is re-read from every store and checked
   against its SHA-256, SHA-512 and length.

A copy that is missing or altered is repaired from a store whose copy was found whole
(the damaged store checks the bytes against the signed digests while it copies them, so
bad bytes are never installed); a copy that cannot be read (a store unreachable) is
reported, not repaired. Every damaged or unreadable copy is a ``fixity.failed`` ledger
entry, every repair a ``fixity.repaired`` entry, and every audit ends with one
``fixity.checked`` entry holding its counts. Blobs are streamed, never held whole.

Which captures: all of them, the ones named, or a sample (a fraction of the completed
captures, those audited longest ago first; never audited counts as longest ago). When
each capture was last audited is kept in ``fixity_captures`` (migration 0007); each run
in ``fixity_audits``.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import sqlalchemy as sa

from archiver import models
from archiver.clock import rfc3339
from archiver.errors import ArchiverError
from chain_of_custody.errors import CustodyError, VerificationError
from chain_of_custody.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest, verify_manifest
from storage.base import BlobStore
from storage.errors import StorageError
from storage.fixity import CopyCheck, check_copy, repair_copy

if TYPE_CHECKING:
    from archiver.archive import Archive
    from archiver.capture.values import Capture
    from archiver.settings import AuditSettings

__all__ = [
    "AuditReport",
    "Auditor",
    "Finding",
    "Progress",
    "audit_due",
    "audit_status",
    "fixity_audits",
    "fixity_captures",
]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # manifests and signatures are small; never read more
_BATCH = 500

Kind = Literal["manual", "scheduled"]

fixity_audits = sa.Table(
    "fixity_audits",
    sa.MetaData(),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("started", sa.Text, nullable=False),
    sa.Column("finished", sa.Text, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("ledger_seq", sa.BigInteger, nullable=True),
)

fixity_captures = sa.Table(
    "fixity_captures",
    sa.MetaData(),
    sa.Column("capture_id", sa.String(36), primary_key=True),
    sa.Column("audited_at", sa.Text, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("audit_id", sa.String(36), nullable=False),
)


class Progress(Protocol):
    """What an audit tells a progress display (the CLI's, on a terminal)."""

    def start(self, captures: int, total_bytes: int) -> None:
        """The audit will read about ``total_bytes`` (an estimate) of ``captures``."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more were read."""

    def capture_done(self) -> None:
        """One more capture was audited."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One copy (or one capture's manifest) found not whole, and what was done about it.

    ``problem``: ``missing``, ``altered``, ``unreadable`` (a copy), or ``manifest`` (the
    signed manifest cannot be established: ledger entry, signature, no whole copy);
    ``store`` is None for a ``manifest`` finding. ``repaired_from`` names the store
    whose copy replaced it; ``repair`` says what happened otherwise.
    """

    capture_id: str
    artifact: str
    sha256: str | None
    store: str | None
    problem: str
    detail: str
    repaired_from: str | None = None
    repair: str = ""
    note: str | None = None

    @property
    def repaired(self) -> bool:
        return self.repaired_from is not None

    def as_json(self) -> dict[str, Any]:
        return {"capture": self.capture_id, "artifact": self.artifact, "sha256": self.sha256,
                "store": self.store, "problem": self.problem, "detail": self.detail,
                "repaired": self.repaired, "repaired_from": self.repaired_from,
                "repair": self.repair, "note": self.note}


@dataclass(frozen=True)
class AuditReport:
    """What one audit did. ``remaining`` counts the problems it leaves: copies damaged
    and not repaired, copies it could not read, captures whose signed manifest could
    not be established; ``ok`` is ``remaining == 0``."""

    audit_id: str
    kind: str
    started: str
    finished: str
    captures: int
    blobs: int
    copies: int
    bytes: int
    stores: tuple[str, ...]
    damaged: int
    repaired: int
    unreadable: int
    manifests: int
    duration_seconds: float
    interrupted: bool
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    ledger_seq: int | None = None

    @property
    def remaining(self) -> int:
        return self.damaged - self.repaired + self.unreadable + self.manifests

    @property
    def ok(self) -> bool:
        return self.remaining == 0

    def counts(self) -> dict[str, Any]:
        """The counts, as recorded in ``fixity.checked``."""
        return {"audit": self.audit_id, "kind": self.kind, "started": self.started,
                "captures": self.captures, "blobs": self.blobs, "copies": self.copies,
                "bytes": self.bytes, "stores": len(self.stores),
                "store_names": list(self.stores), "damaged": self.damaged,
                "repaired": self.repaired, "unreadable": self.unreadable,
                "manifests": self.manifests, "remaining": self.remaining, "ok": self.ok,
                "duration_seconds": self.duration_seconds, "interrupted": self.interrupted}

    def as_json(self) -> dict[str, Any]:
        return {**self.counts(), "finished": self.finished, "ledger_seq": self.ledger_seq,
                "findings": [f.as_json() for f in self.findings]}


@dataclass
class _Tally:
    captures: int = 0
    blobs: int = 0
    copies: int = 0
    bytes: int = 0
    damaged: int = 0
    repaired: int = 0
    unreadable: int = 0
    manifests: int = 0
    findings: list[Finding] = field(default_factory=list)


class _NoProgress:
    def start(self, captures: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def capture_done(self) -> None:
        pass


class _Stopped(Exception):
    """The audit was asked to stop (the daemon is draining)."""


class Auditor:
    """Runs fixity audits on an open archive.

    ``actor`` is who the ledger entries name; ``repair`` turns repairs off when False;
    ``progress`` is told how far the audit is; ``stop`` (an event) ends it early between
    two copies, and the audit is then recorded as interrupted (so is one cut short by
    Ctrl-C, before the KeyboardInterrupt goes on). The ledger entries are signed with
    the archive's key, so an audit needs the passphrase.
    """

    def __init__(self, archive: Archive, *, actor: str, repair: bool = True,
                 progress: Progress | None = None,
                 stop: threading.Event | None = None) -> None:
        self.archive = archive
        self.actor = actor
        self.repair = repair
        self.progress: Progress = progress or _NoProgress()
        self.stop = stop or threading.Event()
        self.stores: tuple[BlobStore, ...] = tuple(archive.store.stores)
        self._seen: dict[tuple[str, int | None, str | None],
                         tuple[list[BlobStore], bool]] = {}
        self._whole = True
        self._tally = _Tally()

    # -- which captures ------------------------------------------------------------------

    def run(self, capture_ids: Sequence[str] = (), *, sample: float | None = None,
            cover_within: float | None = None, kind: Kind = "manual") -> AuditReport:
        """Audit the captures named (ids or unique prefixes), else a ``sample`` fraction
        of the completed captures (None: all), those audited longest ago first. With
        ``cover_within`` (seconds), every capture last audited longer ago than that is
        taken too, whatever the fraction (the daemon's guarantee that each capture is
        audited within ``audit.every``).

        Raises NotFoundError (a capture named does not exist), ArchiverError (a capture
        named is not completed, so nothing of it is stored), and database errors.
        """
        started_at = self.archive.clock()
        started = rfc3339(started_at)
        began = time.monotonic()
        audit_id = str(uuid.uuid4())
        named = [self._completed(cid) for cid in capture_ids]
        with self.archive.engine.begin() as conn:
            conn.execute(sa.insert(fixity_audits).values(id=audit_id, kind=kind,
                                                         started=started))
            if named:
                want = len(named)
                estimate = _bytes_of(conn, [c.id for c in named])
            else:
                want, estimate = self._plan(conn, started_at, sample, cover_within)
        self.progress.start(want, estimate * len(self.stores))
        interrupted = cancelled = False
        try:
            source = iter(named) if named else self._oldest_first(started, want)
            for capture in source:
                self._audit_capture(audit_id, capture)
                self.progress.capture_done()
        except _Stopped:
            interrupted = True
        except KeyboardInterrupt:
            # Ctrl-C: what was checked is still recorded (as interrupted), then it stops.
            interrupted = cancelled = True
        tally = self._tally
        report = AuditReport(
            audit_id=audit_id, kind=kind, started=started,
            finished=rfc3339(self.archive.clock()), captures=tally.captures,
            blobs=tally.blobs, copies=tally.copies, bytes=tally.bytes,
            stores=tuple(s.name for s in self.stores), damaged=tally.damaged,
            repaired=tally.repaired, unreadable=tally.unreadable, manifests=tally.manifests,
            duration_seconds=round(time.monotonic() - began, 3), interrupted=interrupted,
            findings=tuple(tally.findings),
        )
        with self.archive.engine.begin() as conn:
            entry = self.archive.ledger.append(
                actor=self.actor, action="fixity.checked", subject=f"audit:{audit_id}",
                payload=report.counts(), connection=conn)
            conn.execute(sa.update(fixity_audits).where(fixity_audits.c.id == audit_id).values(
                finished=report.finished, ok=report.ok, ledger_seq=entry.seq,
                summary=json.dumps(report.counts(), sort_keys=True)))
        self.archive.maybe_checkpoint()
        if cancelled:
            raise KeyboardInterrupt
        return replace(report, ledger_seq=entry.seq)

    def _completed(self, capture_id: str) -> Capture:
        capture = self.archive.get_capture(capture_id)
        if not capture.ok or capture.ledger_seq is None:
            raise ArchiverError(f"capture {capture.id} is {capture.status}: it has no stored "
                                "artifacts to audit")
        return capture

    def _plan(self, conn: sa.Connection, now: datetime, sample: float | None,
              cover_within: float | None) -> tuple[int, int]:
        """How many captures to take, and roughly how many bytes each store holds of
        them (for progress)."""
        c, f = models.captures, fixity_captures
        total = int(conn.execute(sa.select(sa.func.count()).select_from(c)
                                 .where(c.c.status == "completed")).scalar_one())
        want = total if sample is None else math.ceil(total * sample)
        if cover_within is not None:
            cutoff = rfc3339(now - timedelta(seconds=cover_within))
            due = int(conn.execute(
                sa.select(sa.func.count()).select_from(c.outerjoin(f, f.c.capture_id == c.c.id))
                .where(c.c.status == "completed",
                       sa.or_(f.c.audited_at.is_(None), f.c.audited_at <= cutoff))
            ).scalar_one())
            want = max(want, due)
        first = self._order(rfc3339(now)).limit(want).subquery()
        a = models.artifacts
        estimate = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(a.c.size), 0))
                                .where(a.c.capture_id.in_(sa.select(first.c.id)))).scalar_one()
        return want, int(estimate)

    @staticmethod
    def _order(started: str) -> sa.Select[Any]:
        """Completed captures not audited since ``started``, audited longest ago first."""
        c, f = models.captures, fixity_captures
        return (
            sa.select(c.c.id).select_from(c.outerjoin(f, f.c.capture_id == c.c.id))
            .where(c.c.status == "completed",
                   sa.or_(f.c.audited_at.is_(None), f.c.audited_at < started))
            .order_by(f.c.audited_at.asc().nulls_first(), c.c.requested_at, c.c.id)
        )

    def _oldest_first(self, started: str, want: int) -> Iterator[Capture]:
        # In batches: each audited capture is stamped with a time not before ``started``
        # and so leaves the query, and memory stays bounded whatever the archive's size.
        done = 0
        while done < want:
            with self.archive.engine.connect() as conn:
                ids = list(conn.execute(
                    self._order(started).limit(min(_BATCH, want - done))).scalars())
            if not ids:
                return
            for capture_id in ids:
                yield self.archive.get_capture(capture_id)
                done += 1

    # -- one capture -----------------------------------------------------------------------

    def _audit_capture(self, audit_id: str, capture: Capture) -> None:
        self._whole = True
        manifest = self._signed_manifest(audit_id, capture)
        if manifest is not None:
            for artifact in manifest.artifacts:
                self._check_blob(audit_id, capture, artifact.name, artifact.sha256,
                                 size=artifact.size, sha512=artifact.sha512)
        self._tally.captures += 1
        f = fixity_captures
        with self.archive.engine.begin() as conn:
            conn.execute(sa.delete(f).where(f.c.capture_id == capture.id))
            conn.execute(sa.insert(f).values(capture_id=capture.id, audit_id=audit_id,
                                             audited_at=rfc3339(self.archive.clock()),
                                             ok=self._whole))

    def _signed_manifest(self, audit_id: str, capture: Capture) -> Manifest | None:
        """The capture's manifest, once its copies are checked and its signature verified;
        None (recorded as a finding) when it cannot be established."""
        assert capture.ledger_seq is not None
        try:
            entry = self.archive.ledger.entry(capture.ledger_seq)
        except CustodyError as exc:
            self._manifest_problem(audit_id, capture, MANIFEST_FILE, str(exc))
            return None
        payload = entry.payload
        manifest_sha, signature_sha = payload.get("manifest_sha256"), payload.get(
            "signature_sha256")
        if (entry.action != "capture.completed" or entry.subject != f"capture:{capture.id}"
                or not isinstance(manifest_sha, str) or not isinstance(signature_sha, str)):
            self._manifest_problem(audit_id, capture, MANIFEST_FILE,
                                   f"ledger entry {entry.seq} does not record this capture's "
                                   "manifest and signature")
            return None
        sizes = {a.get("name"): a.get("size") for a in payload.get("artifacts", [])
                 if isinstance(a, dict)}
        texts: dict[str, bytes] = {}
        for name, sha256 in ((MANIFEST_FILE, manifest_sha), (SIGNATURE_FILE, signature_sha)):
            size = sizes.get(name)
            healthy = self._check_blob(audit_id, capture, name, sha256,
                                       size=size if isinstance(size, int) else None,
                                       sha512=None)
            data = self._read_small(sha256, healthy)
            if data is None:
                self._manifest_problem(audit_id, capture, name,
                                       "no store holds a whole copy", sha256)
                return None
            texts[name] = data
        try:
            manifest = verify_manifest(texts[MANIFEST_FILE], texts[SIGNATURE_FILE],
                                       self.archive.public_keys())
        except VerificationError as exc:
            self._manifest_problem(audit_id, capture, SIGNATURE_FILE, str(exc), signature_sha)
            return None
        if manifest.capture_id != capture.id:
            self._manifest_problem(audit_id, capture, MANIFEST_FILE,
                                   f"the signed manifest is of capture {manifest.capture_id}",
                                   manifest_sha)
            return None
        return manifest

    def _read_small(self, sha256: str, healthy: Sequence[BlobStore]) -> bytes | None:
        for store in healthy:
            try:
                with store.open(sha256) as stream:
                    data: bytes = stream.read(MAX_MANIFEST_BYTES)
            except StorageError:
                continue
            if hashlib.sha256(data).hexdigest() == sha256:
                return data
        return None

    def _manifest_problem(self, audit_id: str, capture: Capture, artifact: str,
                          detail: str, sha256: str | None = None) -> None:
        self._tally.manifests += 1
        finding = Finding(capture.id, artifact, sha256, None, "manifest", detail,
                          repair="not possible: the signed manifest cannot be established")
        self._record(audit_id, finding)

    # -- one blob in every store -------------------------------------------------------------

    def _check_blob(self, audit_id: str, capture: Capture, name: str, sha256: str, *,
                    size: int | None, sha512: str | None) -> list[BlobStore]:
        """Check (and repair) every store's copy of one blob; returns the stores whose
        copy is now whole. A blob already checked in this audit is not read again."""
        key = (sha256, size, sha512)
        if key in self._seen:
            # Shared with a capture audited before: its findings are recorded there once,
            # but this capture is no more whole than that one.
            healthy, whole_everywhere = self._seen[key]
            self._whole = self._whole and whole_everywhere
            return healthy
        tally = self._tally
        tally.blobs += 1
        checks: list[tuple[BlobStore, CopyCheck]] = []
        for store in self.stores:
            if self.stop.is_set():
                raise _Stopped
            result = check_copy(store, sha256, size=size, sha512=sha512,
                                on_bytes=self.progress.advance)
            tally.copies += 1
            tally.bytes += result.bytes_read
            checks.append((store, result))
        healthy = [store for store, result in checks if result.ok]
        whole = next((r.measured for _s, r in checks if r.ok), None)
        for store, result in checks:
            if result.ok:
                continue
            if result.state == "unreadable":
                tally.unreadable += 1
                self._record(audit_id, Finding(
                    capture.id, name, sha256, store.name, "unreadable", result.detail,
                    repair="not attempted: the store could not be read"))
                continue
            tally.damaged += 1
            finding = Finding(capture.id, name, sha256, store.name, result.state,
                              result.detail)
            if not self.repair:
                finding = _replace(finding, repair="not attempted (repairs are off)")
            elif whole is None:
                finding = _replace(finding, repair="not possible: no store holds a whole copy")
            else:
                finding = self._repair(finding, store, healthy, sha256=sha256,
                                       size=whole.size, sha512=sha512 or whole.sha512 or "")
                if finding.repaired:
                    tally.repaired += 1
                    healthy.append(store)
            self._record(audit_id, finding)
        self._seen[key] = (healthy, len(healthy) == len(self.stores))
        return healthy

    def _repair(self, finding: Finding, target: BlobStore, sources: Sequence[BlobStore], *,
                sha256: str, size: int, sha512: str) -> Finding:
        errors = []
        for source in sources:
            if self.stop.is_set():
                raise _Stopped
            try:
                repair_copy(target, source, sha256=sha256, size=size, sha512=sha512)
            except StorageError as exc:
                errors.append(f"from {source.name}: {exc}")
                continue
            return _replace(finding, repaired_from=source.name,
                            repair=f"repaired from {source.name}", note=_kept_note(target))
        detail = "; ".join(errors)
        if getattr(target, "object_lock_days", None):
            detail = (f"{target.name} refused the repaired copy (Object Lock retention or the "
                      f"bucket policy may forbid writing it): {detail}")
        return _replace(finding, repair=f"failed: {detail}")

    def _record(self, audit_id: str, finding: Finding) -> None:
        """``fixity.failed`` (and ``fixity.repaired`` after it when repaired), together."""
        self._tally.findings.append(finding)
        if not finding.repaired:
            self._whole = False
        subject = f"capture:{finding.capture_id}"
        base = {"audit": audit_id, "capture": finding.capture_id,
                "artifact": finding.artifact, "sha256": finding.sha256}
        with self.archive.engine.begin() as conn:
            self.archive.ledger.append(
                actor=self.actor, action="fixity.failed", subject=subject, connection=conn,
                payload={**base, "store": finding.store, "problem": finding.problem,
                         "detail": finding.detail[:500], "repair": finding.repair[:500]})
            if finding.repaired_from is not None:
                payload = {**base, "store": finding.store, "from": finding.repaired_from}
                if finding.note:
                    payload["note"] = finding.note
                self.archive.ledger.append(actor=self.actor, action="fixity.repaired",
                                           subject=subject, payload=payload, connection=conn)


def _replace(finding: Finding, **changes: Any) -> Finding:
    return replace(finding, **changes)


def _kept_note(target: BlobStore) -> str | None:
    if getattr(target, "object_lock_days", None):
        return ("the damaged object version stays in the bucket under Object Lock until its "
                "retention ends; the repaired copy is the current version")
    return None


def _bytes_of(conn: sa.Connection, capture_ids: Sequence[str]) -> int:
    a = models.artifacts
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(a.c.size), 0))
                            .where(a.c.capture_id.in_(list(capture_ids)))).scalar_one())


# -- the schedule and the status -------------------------------------------------------------


def scheduled_interval(settings: AuditSettings) -> float:
    """Seconds between two scheduled audits: ``every * sample``."""
    return settings.every * settings.sample


def audit_due(engine: sa.Engine, settings: AuditSettings, now: datetime) -> bool:
    """Whether the daemon's next scheduled audit is due: none ran yet, or the last one
    started at least ``every * sample`` ago."""
    a = fixity_audits
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(a.c.started))
                            .where(a.c.kind == "scheduled")).scalar_one_or_none()
    if last is None:
        return True
    return bool(last <= rfc3339(now - timedelta(seconds=scheduled_interval(settings))))


def run_scheduled(archive: Archive, *, actor: str,
                  stop: threading.Event | None = None) -> AuditReport:
    """The daemon's audit: ``audit.sample`` of the captures, oldest-audited first, and
    every capture that would otherwise go unaudited for longer than ``audit.every``."""
    settings = archive.settings.audit
    cover = max(0.0, settings.every - scheduled_interval(settings))
    return Auditor(archive, actor=actor, repair=settings.repair, stop=stop).run(
        sample=settings.sample, cover_within=cover, kind="scheduled")


def audit_status(engine: sa.Engine, settings: AuditSettings, now: datetime) -> dict[str, Any]:
    """For ``archiver status``: the last finished audit (when, result, counts) and how
    many completed captures went unaudited for longer than ``audit.every`` (overdue)."""
    a, c, f = fixity_audits, models.captures, fixity_captures
    cutoff = rfc3339(now - timedelta(seconds=settings.every))
    with engine.connect() as conn:
        last = conn.execute(sa.select(a).where(a.c.finished.is_not(None))
                            .order_by(a.c.started.desc()).limit(1)).first()
        overdue = int(conn.execute(
            sa.select(sa.func.count()).select_from(c.outerjoin(f, f.c.capture_id == c.c.id))
            .where(c.c.status == "completed",
                   sa.or_(f.c.audited_at < cutoff,
                          sa.and_(f.c.audited_at.is_(None), c.c.requested_at < cutoff)))
        ).scalar_one())
        damaged = int(conn.execute(sa.select(sa.func.count()).select_from(f)
                                   .where(f.c.ok.is_(False))).scalar_one())
    last_json = None
    if last is not None:
        last_json = {"id": last.id, "kind": last.kind, "started": last.started,
                     "finished": last.finished, "ok": bool(last.ok),
                     "counts": json.loads(last.summary) if last.summary else {},
                     "ledger_seq": last.ledger_seq}
    return {"last": last_json, "overdue": overdue, "damaged_captures": damaged,
            "every_seconds": settings.every}


def status_lines(audit: dict[str, Any]) -> Iterator[str]:
    """The audit part of ``archiver status`` for a person."""
    last = audit["last"]
    if last is None:
        yield "audit:     never run"
    else:
        n = last["counts"]
        verdict = "ok" if last["ok"] else f"FAILED, {n.get('remaining', '?')} problems remain"
        yield (f"audit:     last {last['finished']} ({last['kind']}): {verdict}; "
               f"{n.get('captures', 0)} captures, {n.get('copies', 0)} copies, "
               f"{n.get('damaged', 0)} damaged, {n.get('repaired', 0)} repaired")
    if audit["damaged_captures"]:
        yield (f"  WARNING: {audit['damaged_captures']} captures were not whole at their "
               "last audit: run 'archiver audit' (see 'archiver ledger' fixity.failed)")
    if audit["overdue"]:
        yield (f"  WARNING: audit overdue: {audit['overdue']} captures not audited within "
               f"audit.every ({_days(audit['every_seconds'])}); run 'archiver audit' or "
               "the daemon")


def _days(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{seconds:g}s"

