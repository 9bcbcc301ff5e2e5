"""The composition root: one archive = settings + database + ledger + stores + key.

Everything that wires ``storage`` and ``chain_of_custody`` together lives here; the CLI
(and later the daemon and the HTTP API) only call :class:`Archive` methods.

The flow of one capture (see the design): request → recorder writes one WARC → seal
(provenance, manifest, signature) → store every artifact on every store, verified →
one database transaction inserts the capture, its artifacts and the ``capture.completed``
ledger entry → checkpoint. A crash before that transaction leaves at most unreferenced
content-addressed blobs, never a ledger entry pointing at something half-written.
"""

from __future__ import annotations

import json
import platform
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa

from archiver import models, schema
from archiver.capture.browser import BrowserFetcher, BrowserOptions
from archiver.capture.fetcher import Fetcher, FetcherReport
from archiver.capture.media import MediaFetcher, MediaOptions
from archiver.capture.media import similar as media_similar
from archiver.clock import Clock, IdFactory, new_capture_id, rfc3339, utc_now
from archiver.db import make_engine
from archiver.errors import ArchiverError, CaptureError, NotFoundError, NotInitialisedError
from archiver.recorder import (
    ExchangeSummary,
    PageCapture,
    RecorderOptions,
    capture_page,
    open_session,
)
from archiver.recorder.guard import AddressPolicy, non_global_reason
from archiver.settings import LocalStoreSettings, Settings
from archiver.timestamps import StampResult, Timestamper
from archiver.versions import software_versions
from chain_of_custody import merkle
from chain_of_custody.checkpoint import verify_note
from chain_of_custody.digest import Digest, Hasher, digest_bytes
from chain_of_custody.errors import CustodyError, LedgerIntegrityError, VerificationError
from chain_of_custody.keys import PublicKey, SigningKey
from chain_of_custody.ledger import (
    Checkpoint,
    Ledger,
    LedgerEntry,
    LedgerReport,
    checkpoints_table,
)
from chain_of_custody.manifest import Artifact, build_manifest, canonical_json, sign_manifest
from chain_of_custody.manifest import verify_manifest as check_manifest
from chain_of_custody.timestamp import StoredToken, TimestampLog, tokens_table, verify_token
from storage.base import BlobStore
from storage.errors import StorageError
from storage.local import LocalBlobStore
from storage.replicated import ReplicatedBlobStore
from storage.s3 import S3BlobStore

SERVICE_ACTOR = "service:archiver"
KEY_ACTIONS = ("key.created", "key.rotated")
WARC_NAME = "capture.warc.gz"
PROVENANCE_NAME = "provenance.json"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # manifests and signatures are small; never read more


@dataclass(frozen=True)
class ArtifactView:
    name: str
    role: str
    media_type: str
    size: int
    sha256: str
    sha512: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "media_type": self.media_type,
            "size": self.size,
            "sha256": self.sha256,
            "sha512": self.sha512,
        }


@dataclass(frozen=True)
class CaptureView:
    """A capture as the database records it (completed or failed)."""

    id: str
    url: str
    case: str | None
    note: str | None
    requested_by: str
    requested_via: str
    requested_at: str
    status: str
    reason: str | None
    message: str | None
    started: str | None
    ended: str | None
    final_url: str | None
    http_status: int | None
    manifest_sha256: str | None
    key_id: str | None
    ledger_seq: int | None
    artifacts: tuple[ArtifactView, ...] = ()
    outcomes: Mapping[str, Any] = field(default_factory=dict)
    """Each fetcher's outcome (``media``, ``browser``): status, reason, message."""

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def artifact(self, name: str) -> ArtifactView:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        names = ", ".join(a.name for a in self.artifacts) or "none"
        raise NotFoundError(f"capture {self.id} has no artifact {name!r} (it has: {names})")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "case": self.case,
            "note": self.note,
            "requested_by": self.requested_by,
            "requested_via": self.requested_via,
            "requested_at": self.requested_at,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "started": self.started,
            "ended": self.ended,
            "final_url": self.final_url,
            "http_status": self.http_status,
            "manifest_sha256": self.manifest_sha256,
            "key_id": self.key_id,
            "ledger_seq": self.ledger_seq,
            "artifacts": [a.as_json() for a in self.artifacts],
            "outcomes": dict(self.outcomes),
        }


@dataclass(frozen=True)
class Check:
    """One named verification step and its outcome (``problem`` is None when it passed)."""

    name: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class CaptureVerification:
    capture_id: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> list[str]:
        return [c.problem for c in self.checks if c.problem is not None]


@dataclass(frozen=True)
class InitReport:
    home: Path
    database_url: str
    key_id: str
    created_key: bool
    origin: str


@dataclass(frozen=True)
class Proof:
    entry: LedgerEntry
    tree_size: int
    root_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class CaptureRecording:
    """What one capture recorded into its WARC: the page, then every fetcher's report."""

    page: PageCapture
    exchanges: tuple[ExchangeSummary, ...]
    warnings: tuple[str, ...]
    started: datetime
    ended: datetime
    warc_digest: Digest
    reports: tuple[FetcherReport, ...]

    @property
    def outcomes(self) -> dict[str, dict[str, Any]]:
        return {report.name: report.outcome.as_json() for report in self.reports}


def build_fetchers(settings: Settings) -> list[Fetcher]:
    """The fetchers that run after the page, in order, as the settings ask for them."""
    fetchers: list[Fetcher] = []
    # The browser first: the media fetcher picks up the media URLs it saw. Present even
    # when turned off, so every capture says why it has no browser view.
    fetchers.append(BrowserFetcher(BrowserOptions.from_settings(settings.browser)))
    # Media always runs: with media.enabled = false it still downloads a URL that is
    # itself a video or image (the page fetcher leaves such bodies to it).
    fetchers.append(MediaFetcher(MediaOptions.from_settings(settings.media)))
    return fetchers


def build_store(settings: Settings) -> ReplicatedBlobStore:
    """Every configured store, behind one replicated store (a write counts when all hold it)."""
    stores: list[BlobStore] = []
    for spec in settings.storage.stores:
        if isinstance(spec, LocalStoreSettings):
            stores.append(LocalBlobStore(settings.local_store_path(spec)))
        else:
            stores.append(
                S3BlobStore.from_settings(
                    endpoint_url=spec.endpoint_url,
                    region=spec.region,
                    bucket=spec.bucket,
                    prefix=spec.prefix,
                    object_lock_days=spec.object_lock_days,
                    multipart_threshold=spec.multipart_threshold,
                    multipart_chunksize=spec.multipart_chunksize,
                )
            )
    return ReplicatedBlobStore(stores)


def recorder_options(settings: Settings) -> RecorderOptions:
    c = settings.capture
    return RecorderOptions(
        allow_private_networks=c.allow_private_networks,
        timeout_seconds=c.timeout_seconds,
        max_redirects=c.max_redirects,
        max_response_bytes=c.max_response_bytes,
        fetch_subresources=c.fetch_subresources,
        max_subresources=c.max_subresources,
        max_subresource_bytes=c.max_subresource_bytes,
        max_total_bytes=c.max_total_bytes,
        max_media_bytes=c.max_media_bytes,
        verify_tls=c.verify_tls,
        ca_bundle=c.ca_bundle,
        user_agent=c.user_agent,
    )


def initialise(settings: Settings, *, clock: Clock = utc_now) -> InitReport:
    """Create the data directory, the schema and the signing key. Safe to run again.

    Raises :class:`ArchiverError` subclasses (wrong passphrase, unreachable database,
    a registered key whose file is missing).
    """
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    passphrase = settings.passphrase()
    engine = make_engine(settings.database_url)
    try:
        schema.upgrade(engine)
        ledger = Ledger(engine, clock=clock)
        with engine.begin() as conn:
            origin = _meta(conn, "origin")
            if origin is None:
                origin = settings.ledger.origin or f"{socket.gethostname()}/evidence-archiver"
                conn.execute(sa.insert(models.archive_meta).values(key="origin", value=origin))
                conn.execute(
                    sa.insert(models.archive_meta).values(key="created", value=rfc3339(clock()))
                )
            registered = conn.execute(
                sa.select(models.signing_keys.c.key_id).where(
                    models.signing_keys.c.retired.is_(None)
                )
            ).scalar_one_or_none()
        key_file = settings.key_file
        created = False
        if key_file.exists():
            key = _load_key(key_file, passphrase)
        elif registered is not None:
            raise NotInitialisedError(
                f"the archive's signing key {registered[:16]}… is registered but its file "
                f"{key_file} is missing; restore it from backup or set signing.key_file"
            )
        else:
            key = SigningKey.generate()
            try:
                key.write_encrypted(key_file, passphrase)
            except CustodyError as exc:
                raise ArchiverError(str(exc)) from exc
            created = True
        if registered is None:
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(models.signing_keys).values(
                        key_id=key.key_id,
                        algorithm=key.algorithm,
                        public_pem=key.public.pem().decode("ascii"),
                        created=rfc3339(clock()),
                    )
                )
                ledger.append(
                    actor=settings.operator,
                    action="key.created",
                    subject=f"key:{key.key_id}",
                    payload={
                        "key_id": key.key_id,
                        "algorithm": key.algorithm,
                        "public_key_pem": key.public.pem().decode("ascii"),
                    },
                    connection=conn,
                )
            ledger.create_checkpoint(key, origin)
        elif registered != key.key_id:
            raise NotInitialisedError(
                f"signing key file {key_file} holds key {key.key_id[:16]}…, but the archive's "
                f"key is {registered[:16]}…; point signing.key_file at the right key"
            )
        return InitReport(home, settings.database_url, key.key_id, created, origin)
    finally:
        engine.dispose()


def _meta(conn: sa.Connection, key: str) -> str | None:
    return conn.execute(
        sa.select(models.archive_meta.c.value).where(models.archive_meta.c.key == key)
    ).scalar_one_or_none()


def _load_key(path: Path, passphrase: bytes) -> SigningKey:
    try:
        return SigningKey.load_encrypted(path, passphrase)
    except CustodyError as exc:
        raise ArchiverError(str(exc)) from exc


class Archive:
    """An opened, initialised archive. Use :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: sa.Engine,
        store: ReplicatedBlobStore,
        clock: Clock = utc_now,
        new_id: IdFactory = new_capture_id,
        fetchers: Sequence[Fetcher] = (),
        address_policy: AddressPolicy = non_global_reason,
    ) -> None:
        self.settings = settings
        # Which peer addresses the SSRF guard refuses when private networks are not
        # allowed; tests inject a narrower policy, everything else keeps the default.
        self.address_policy = address_policy
        self.engine = engine
        self.store = store
        self.fetchers = tuple(fetchers)
        self.clock = clock
        self.new_id = new_id
        self.ledger = Ledger(engine, clock=clock)
        self._key: SigningKey | None = None
        with engine.connect() as conn:
            origin = _meta(conn, "origin")
        assert origin is not None
        self.origin = origin

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        new_id: IdFactory = new_capture_id,
        address_policy: AddressPolicy = non_global_reason,
    ) -> Archive:
        """Open an initialised archive. Raises :class:`NotInitialisedError` if it is not."""
        hint = "run 'archiver init' first"
        if settings.database.url is None and not (settings.home_dir / "archive.db").exists():
            raise NotInitialisedError(f"no archive at {settings.home_dir}: {hint}")
        engine = make_engine(settings.database_url)
        try:
            revision = schema.current_revision(engine)
            if revision is None:
                raise NotInitialisedError(f"the database has no archive schema: {hint}")
            if revision != schema.head_revision():
                raise NotInitialisedError(
                    f"the database schema is at revision {revision}, this version needs "
                    f"{schema.head_revision()}: run 'archiver init' to upgrade it"
                )
            with engine.connect() as conn:
                if _meta(conn, "origin") is None:
                    raise NotInitialisedError(f"the archive was never initialised: {hint}")
            return cls(settings, engine=engine, store=build_store(settings), clock=clock,
                       new_id=new_id, fetchers=build_fetchers(settings),
                       address_policy=address_policy)
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- keys ---------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        """The archive's key, decrypted on first use. Raises on a wrong passphrase."""
        if self._key is None:
            self._key = _load_key(self.settings.key_file, self.settings.passphrase())
        return self._key

    def key_history(self) -> list[dict[str, Any]]:
        """Every signing key of the archive, oldest first, with its public PEM."""
        k = models.signing_keys
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(k).order_by(k.c.created, k.c.key_id)).all()
        return [
            {"key_id": r.key_id, "algorithm": r.algorithm, "public_pem": r.public_pem,
             "created": r.created, "retired": r.retired}
            for r in rows
        ]

    def public_keys(self) -> dict[str, PublicKey]:
        """Every key the archive ever signed with, by key id.

        Read from the key history *on the ledger* (``key.created`` / ``key.rotated``
        entries), not from the ``signing_keys`` table: the table is mutable, the ledger
        is append-only and verified, so a key swapped into the table is never trusted.
        """
        keys: dict[str, PublicKey] = {}
        for entry in self.ledger.entries(actions=KEY_ACTIONS):
            pem = entry.payload.get("public_key_pem")
            try:
                key = PublicKey.from_pem(str(pem).encode("ascii"))
            except (CustodyError, UnicodeEncodeError) as exc:
                raise LedgerIntegrityError(
                    f"ledger entry {entry.seq} ({entry.action}) holds no valid public key",
                    seq=entry.seq,
                ) from exc
            if key.key_id != entry.payload.get("key_id"):
                raise LedgerIntegrityError(
                    f"ledger entry {entry.seq} ({entry.action}) names key "
                    f"{entry.payload.get('key_id')} but holds key {key.key_id}",
                    seq=entry.seq,
                )
            keys[key.key_id] = key
        return keys

    # -- capture ------------------------------------------------------------------------

    def capture(
        self,
        url: str,
        *,
        case: str | None = None,
        note: str | None = None,
        actor: str | None = None,
        via: str = "cli",
        source: str | None = None,
        capture_id: str | None = None,
    ) -> CaptureView:
        """Capture one URL, seal, store and record it. A failed capture is recorded too.

        ``via`` says through what the request came (``cli``, ``api``, ``watch``);
        ``source`` optionally names what made it (``watch:<id>``, ``job:<id>``) and is
        recorded in the manifest and the ledger; ``capture_id`` lets a caller that
        tracks the capture (a job queue) choose its id, else a new one is made.

        Returns the capture as recorded (``status`` ``completed`` or ``failed``); raises
        only for problems of the archive itself (key, database), not of the target.
        """
        key = self.signing_key  # a wrong passphrase must stop us before any fetch
        actor = actor or self.settings.operator
        capture_id = capture_id or self.new_id()
        requested_at = rfc3339(self.clock())
        requested = {
            "url": url,
            "by": actor,
            "at": requested_at,
            "via": via,
            "source": source,
            "case": case,
            "note": note,
        }
        with self.engine.begin() as conn:
            case_id = self._case_id(conn, case) if case else None
            self.ledger.append(
                actor=actor,
                action="capture.requested",
                subject=f"capture:{capture_id}",
                payload={"url": url, "case": case, "note": note, "via": via,
                         "source": source},
                connection=conn,
            )
        work = self.settings.work_dir / capture_id
        work.mkdir(parents=True, mode=0o700)
        try:
            try:
                result = self._record(url, work, capture_id)
                artifacts = self._seal(work, capture_id, requested, result, key)
                self._store(work, artifacts)
            except (CaptureError, StorageError) as exc:
                reason = exc.reason if isinstance(exc, CaptureError) else "storage"
                return self._record_failure(
                    capture_id, url, case_id, note, actor, via, requested_at, reason, str(exc)
                )
            return self._record_completion(
                capture_id, url, case_id, note, actor, via, requested_at, result, artifacts, key
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _record(self, url: str, work: Path, capture_id: str) -> CaptureRecording:
        """The page, then each fetcher, into one WARC, published when all are done."""
        with open_session(
            work / WARC_NAME,
            options=recorder_options(self.settings),
            warcinfo=self._warcinfo(capture_id),
            clock=self.clock,
            address_policy=self.address_policy,
        ) as session:
            page = capture_page(session, url)
            reports = tuple(fetcher.run(session, page, work) for fetcher in self.fetchers)
            ended = self.clock()
            digest = session.publish()
        return CaptureRecording(
            page=page, exchanges=tuple(session.exchanges), warnings=tuple(session.warnings),
            started=session.started, ended=ended, warc_digest=digest, reports=reports,
        )

    def _warcinfo(self, capture_id: str) -> dict[str, str]:
        versions = software_versions()
        return {
            "software": " ".join(f"{name}/{v}" for name, v in versions.items()),
            "format": "WARC File Format 1.1",
            "conformsTo": "https://iipc.github.io/warc-specifications/specifications/"
            "warc-format/warc-1.1/",
            "hostname": socket.gethostname(),
            "operator": self.settings.operator,
            "capture-id": capture_id,
            "config-sha256": self.settings.digest(),
            "robots": "ignore",
        }

    def _seal(
        self,
        work: Path,
        capture_id: str,
        requested: Mapping[str, Any],
        result: CaptureRecording,
        key: SigningKey,
    ) -> list[tuple[Artifact, Path]]:
        page = result.page
        files = [(Artifact(WARC_NAME, "warc", "application/warc", result.warc_digest),
                  work / WARC_NAME)]
        for report in result.reports:
            files += [(Artifact(d.name, d.role, d.media_type, d.digest), d.path)
                      for d in report.artifacts]
        provenance_bytes = canonical_json(self._provenance(capture_id, result))
        provenance_path = work / PROVENANCE_NAME
        provenance_path.write_bytes(provenance_bytes)
        files.append((Artifact(PROVENANCE_NAME, "provenance", "application/json",
                               digest_bytes(provenance_bytes)), provenance_path))
        software = dict(software_versions())
        for report in result.reports:
            software.update(report.software)
        manifest = build_manifest(
            capture_id=capture_id,
            requested=requested,
            happened={
                "started": rfc3339(result.started),
                "ended": rfc3339(result.ended),
                "host": socket.gethostname(),
                "software": software,
                "fetchers": {
                    report.name: {"outcome": report.outcome.as_json(), **report.summary}
                    for report in result.reports
                },
            },
            target={
                "final_url": page.final_url,
                "http_status": page.status,
                "peer_ip": page.peer_ip,
                "tls_certificate_sha256": page.tls_certificate_sha256,
                "redirects": [{"url": u, "status": s} for u, s in page.redirects],
                "content_type": page.content_type,
            },
            artifacts=[artifact for artifact, _ in files],
            key_id=key.key_id,
        )
        signed = sign_manifest(manifest, key)
        (work / MANIFEST_NAME).write_bytes(signed.canonical)
        (work / SIGNATURE_NAME).write_bytes(signed.signature)
        # Manifest and signature are stored and listed like artifacts, but the manifest
        # cannot list itself: roles "manifest"/"signature" exist only outside it.
        return [
            *files,
            (Artifact(MANIFEST_NAME, "manifest", "application/json", signed.digest),
             work / MANIFEST_NAME),
            (Artifact(SIGNATURE_NAME, "signature", "application/octet-stream",
                      digest_bytes(signed.signature)), work / SIGNATURE_NAME),
        ]

    def _provenance(self, capture_id: str, result: CaptureRecording) -> dict[str, Any]:
        duration = (result.ended - result.started).total_seconds()
        page = result.page
        return {
            "type": "evidence-archiver/provenance/v1",
            "capture_id": capture_id,
            "software": software_versions(),
            "host": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "operator": self.settings.operator,
            },
            "options": self.settings.capture.model_dump(mode="json"),
            "config_sha256": self.settings.digest(),
            "timings": {
                "started": rfc3339(result.started),
                "ended": rfc3339(result.ended),
                "duration_ms": round(duration * 1000, 3),
            },
            "network": {
                "requested_url": page.requested_url,
                "final_url": page.final_url,
                "peer_ip": page.peer_ip,
                "peer_port": page.peer_port,
                "tls_certificate_sha256": page.tls_certificate_sha256,
                "redirects": [{"url": u, "status": s} for u, s in page.redirects],
                "exchanges": [
                    {
                        "url": x.url,
                        "method": x.method,
                        "role": x.role,
                        "status": x.status,
                        "peer_ip": x.peer_ip,
                        "started": rfc3339(x.started),
                        "ended": rfc3339(x.ended),
                        "response_bytes": x.response_bytes,
                        "truncated": x.truncated,
                        "revisit_of": x.revisit_of,
                    }
                    for x in result.exchanges
                ],
            },
            "subresources_fetched": page.subresources_fetched,
            "fetchers": {
                report.name: {"outcome": report.outcome.as_json(), **report.provenance}
                for report in result.reports
            },
            "warnings": list(result.warnings),
        }

    def _store(self, work: Path, artifacts: Sequence[tuple[Artifact, Path]]) -> None:
        for artifact, path in artifacts:
            # The store re-hashes what it wrote and refuses a copy that differs from the
            # digest we computed while writing: the second half of "verify twice".
            self.store.put_file(path, sha256=artifact.digest.sha256, size=artifact.digest.size)

    def _record_failure(
        self,
        capture_id: str,
        url: str,
        case_id: int | None,
        note: str | None,
        actor: str,
        via: str,
        requested_at: str,
        reason: str,
        message: str,
    ) -> CaptureView:
        with self.engine.begin() as conn:
            entry = self.ledger.append(
                actor=SERVICE_ACTOR,
                action="capture.failed",
                subject=f"capture:{capture_id}",
                payload={"url": url, "reason": reason, "message": message},
                connection=conn,
            )
            conn.execute(
                sa.insert(models.captures).values(
                    id=capture_id, url=url, case_id=case_id, note=note, requested_by=actor,
                    requested_via=via, requested_at=requested_at, status="failed",
                    reason=reason, message=message, ended=entry.time, ledger_seq=entry.seq,
                )
            )
        self._maybe_checkpoint()
        return self.get_capture(capture_id)

    def _record_completion(
        self,
        capture_id: str,
        url: str,
        case_id: int | None,
        note: str | None,
        actor: str,
        via: str,
        requested_at: str,
        result: CaptureRecording,
        artifacts: Sequence[tuple[Artifact, Path]],
        key: SigningKey,
    ) -> CaptureView:
        by_name = {a.name: a for a, _ in artifacts}
        manifest = by_name[MANIFEST_NAME]
        with self.engine.begin() as conn:
            entry = self.ledger.append(
                actor=SERVICE_ACTOR,
                action="capture.completed",
                subject=f"capture:{capture_id}",
                payload={
                    "url": url,
                    "final_url": result.page.final_url,
                    "http_status": result.page.status,
                    "fetchers": result.outcomes,
                    "manifest_sha256": manifest.digest.sha256,
                    "signature_sha256": by_name[SIGNATURE_NAME].digest.sha256,
                    "key_id": key.key_id,
                    "artifacts": [
                        {"name": a.name, "sha256": a.digest.sha256, "size": a.digest.size}
                        for a, _ in artifacts
                    ],
                    "stores": [s.name for s in self.store.stores],
                },
                connection=conn,
            )
            conn.execute(
                sa.insert(models.captures).values(
                    id=capture_id, url=url, case_id=case_id, note=note, requested_by=actor,
                    requested_via=via, requested_at=requested_at, status="completed",
                    started=rfc3339(result.started), ended=rfc3339(result.ended),
                    final_url=result.page.final_url, http_status=result.page.status,
                    manifest_sha256=manifest.digest.sha256, key_id=key.key_id,
                    ledger_seq=entry.seq, outcomes=json.dumps(result.outcomes, sort_keys=True),
                )
            )
            for report in result.reports:
                if report.outcome.reason == "removed":
                    # The platform's refusal is itself evidence, sealed in this capture.
                    self.ledger.append(
                        actor=SERVICE_ACTOR,
                        action="target.gone",
                        subject=f"capture:{capture_id}",
                        payload={
                            "url": url,
                            "fetcher": report.name,
                            "reason": report.outcome.reason,
                            "message": report.outcome.message,
                            "manifest_sha256": manifest.digest.sha256,
                        },
                        connection=conn,
                    )
            conn.execute(
                sa.insert(models.artifacts),
                [
                    {
                        "capture_id": capture_id, "name": a.name, "role": a.role,
                        "media_type": a.media_type, "size": a.digest.size,
                        "sha256": a.digest.sha256, "sha512": a.digest.sha512,
                    }
                    for a, _ in artifacts
                ],
            )
        self._maybe_checkpoint()
        return self.get_capture(capture_id)

    def _maybe_checkpoint(self) -> None:
        if self.settings.ledger.checkpoint_after_capture:
            self.checkpoint()

    def _case_id(self, conn: sa.Connection, name: str) -> int:
        found = conn.execute(
            sa.select(models.cases.c.id).where(models.cases.c.name == name)
        ).scalar_one_or_none()
        if found is not None:
            return int(found)
        inserted = conn.execute(
            sa.insert(models.cases).values(name=name, created=rfc3339(self.clock()))
        )
        primary_key = inserted.inserted_primary_key
        assert primary_key is not None
        return int(primary_key[0])

    # -- reading ------------------------------------------------------------------------

    def get_capture(self, capture_id: str) -> CaptureView:
        """Find a capture by id or unique id prefix. Raises :class:`NotFoundError`."""
        c = models.captures
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c, models.cases.c.name.label("case_name"))
                .outerjoin(models.cases, models.cases.c.id == c.c.case_id)
                .where(c.c.id.startswith(capture_id, autoescape=True))
                .limit(2)
            ).all()
            if not rows:
                raise NotFoundError(f"no capture with id {capture_id!r}")
            if len(rows) > 1:
                raise NotFoundError(f"capture id prefix {capture_id!r} is ambiguous")
            row = rows[0]
            artifact_rows = conn.execute(
                sa.select(models.artifacts)
                .where(models.artifacts.c.capture_id == row.id)
                .order_by(models.artifacts.c.name)
            ).all()
        return _capture_view(row, artifact_rows)

    def list_captures(self, *, case: str | None = None) -> list[CaptureView]:
        c = models.captures
        query = (
            sa.select(c, models.cases.c.name.label("case_name"))
            .outerjoin(models.cases, models.cases.c.id == c.c.case_id)
            .order_by(c.c.requested_at, c.c.id)
        )
        if case is not None:
            query = query.where(models.cases.c.name == case)
        a = models.artifacts
        artifacts_query = (
            sa.select(a).join(c, c.c.id == a.c.capture_id)
            .outerjoin(models.cases, models.cases.c.id == c.c.case_id)
            .order_by(a.c.name)
        )
        if case is not None:
            artifacts_query = artifacts_query.where(models.cases.c.name == case)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            artifact_rows = conn.execute(artifacts_query).all()
        by_capture: dict[str, list[Any]] = {}
        for artifact in artifact_rows:
            by_capture.setdefault(artifact.capture_id, []).append(artifact)
        return [_capture_view(row, by_capture.get(row.id, [])) for row in rows]

    def record_view(self, capture: CaptureView, *, actor: str | None = None) -> None:
        """Record that a person looked at a capture (``access.viewed``)."""
        self.ledger.append(
            actor=actor or self.settings.operator,
            action="access.viewed",
            subject=f"capture:{capture.id}",
            payload={"manifest_sha256": capture.manifest_sha256},
        )

    def export_artifact(
        self, capture_id: str, name: str, out: BinaryIO, *, actor: str | None = None
    ) -> ArtifactView:
        """Copy an artifact to ``out``, re-hashing as it streams; record
        ``access.downloaded``. Raises :class:`NotFoundError`, or :class:`ArchiverError`
        if the stored copy does not match its recorded digests (nothing is recorded
        then: the caller must discard what was written)."""
        capture = self.get_capture(capture_id)
        artifact = capture.artifact(name)
        hasher = Hasher()
        try:
            with self.store.open(artifact.sha256) as stream:
                while chunk := stream.read(1024 * 1024):
                    hasher.update(chunk)
                    out.write(chunk)
        except StorageError as exc:
            raise ArchiverError(f"cannot read {name} of capture {capture.id}: {exc}") from exc
        got = hasher.digest()
        if got != Digest(artifact.sha256, artifact.sha512, artifact.size):
            raise ArchiverError(
                f"stored copy of {name} of capture {capture.id} does not match its digests; "
                f"run 'archiver verify {capture.id}'"
            )
        self.ledger.append(
            actor=actor or self.settings.operator,
            action="access.downloaded",
            subject=f"capture:{capture.id}",
            payload={"artifact": name, "sha256": artifact.sha256, "size": artifact.size},
        )
        return artifact

    # -- verification -------------------------------------------------------------------

    def verify_capture(self, capture_id: str) -> CaptureVerification:
        """Re-read every blob from every store, check the signature and the ledger.

        The expected digests come from the *signed manifest* anchored in the ledger, not
        from the database rows, so an edited database row cannot make a swapped file pass.
        """
        capture = self.get_capture(capture_id)
        checks: list[Check] = []
        if not capture.ok or capture.manifest_sha256 is None or capture.ledger_seq is None:
            return CaptureVerification(
                capture.id, (Check("capture", f"capture {capture.id} is {capture.status}"),)
            )
        entry, anchor = self._check_ledger_anchor(capture, checks)
        manifest_sha = capture.manifest_sha256
        signature_sha = None
        if entry is not None:
            manifest_sha = str(entry.payload.get("manifest_sha256"))
            signature_sha = entry.payload.get("signature_sha256")
        checks.append(anchor)
        manifest_bytes = self._read_small_blob(manifest_sha, MANIFEST_NAME, checks)
        sig_artifact = next((a for a in capture.artifacts if a.name == SIGNATURE_NAME), None)
        sig_sha = signature_sha if isinstance(signature_sha, str) else (
            sig_artifact.sha256 if sig_artifact else None)
        signature = self._read_small_blob(sig_sha, SIGNATURE_NAME, checks) if sig_sha else None
        manifest: dict[str, Any] | None = None
        if manifest_bytes is not None and signature is not None:
            try:
                manifest = check_manifest(manifest_bytes, signature, self.public_keys())
                checks.append(Check("manifest signature"))
            except VerificationError as exc:
                checks.append(Check("manifest signature", str(exc)))
        if manifest is None:
            return CaptureVerification(capture.id, tuple(checks))
        if manifest.get("capture_id") != capture.id:
            checks.append(Check("manifest", "manifest belongs to another capture"))
        expected = {a["name"]: a for a in manifest.get("artifacts", [])}
        recorded = {a.name for a in capture.artifacts} - {MANIFEST_NAME, SIGNATURE_NAME}
        if recorded != set(expected):
            checks.append(Check(
                "artifact list",
                f"database lists {sorted(recorded)}, signed manifest lists {sorted(expected)}",
            ))
        for name, spec in expected.items():
            want = Digest(spec["sha256"], spec["sha512"], spec["size"])
            checks.extend(self._check_blob_copies(name, want))
        return CaptureVerification(capture.id, tuple(checks))

    def _check_ledger_anchor(
        self, capture: CaptureView, checks: list[Check]
    ) -> tuple[LedgerEntry | None, Check]:
        assert capture.ledger_seq is not None
        name = f"ledger entry {capture.ledger_seq}"
        try:
            entry = self.ledger.entry(capture.ledger_seq)
        except CustodyError as exc:
            return None, Check(name, str(exc))
        if (
            entry.action != "capture.completed"
            or entry.subject != f"capture:{capture.id}"
            or entry.payload.get("manifest_sha256") != capture.manifest_sha256
        ):
            return None, Check(name, f"{name} does not record this capture's manifest")
        checkpoint = self.ledger.latest_checkpoint()
        if checkpoint is None or checkpoint.tree_size <= entry.seq:
            return entry, Check(name, f"{name} is not yet covered by a signed checkpoint; "
                                      "run 'archiver ledger checkpoint'")
        try:
            keys = self.public_keys()
            if checkpoint.key_id not in keys:
                raise VerificationError(f"checkpoint signed by unknown key {checkpoint.key_id}")
            verify_note(checkpoint.note, checkpoint.origin, keys[checkpoint.key_id])
            proof = self.ledger.inclusion_proof(entry.seq, checkpoint.tree_size)
            merkle.verify_inclusion(
                entry.leaf_hash(), entry.seq, checkpoint.tree_size, proof, checkpoint.root_hash
            )
        except CustodyError as exc:
            return entry, Check(name, f"{name} is not proven by checkpoint "
                                      f"{checkpoint.id}: {exc}")
        return entry, Check(f"{name} included in signed checkpoint of size "
                            f"{checkpoint.tree_size}")

    def _read_small_blob(self, sha256: str, name: str, checks: list[Check]) -> bytes | None:
        try:
            with self.store.open(sha256) as stream:
                data: bytes = stream.read(MAX_MANIFEST_BYTES)
        except StorageError as exc:
            checks.append(Check(name, f"{name}: {exc}"))
            return None
        if digest_bytes(data).sha256 != sha256:
            checks.append(Check(name, f"{name}: stored copy does not match sha256 {sha256}"))
            return None
        return data

    def _check_blob_copies(self, name: str, want: Digest) -> Iterator[Check]:
        for store in self.store.stores:
            label = f"{name} in {store.name}"
            hasher = Hasher()
            try:
                with store.open(want.sha256) as stream:
                    while chunk := stream.read(1024 * 1024):
                        hasher.update(chunk)
            except StorageError as exc:
                yield Check(label, f"artifact {name}: {exc}")
                continue
            got = hasher.digest()
            if got == want:
                yield Check(label)
                continue
            what = [
                algorithm
                for algorithm, a, b in (
                    ("size", got.size, want.size),
                    ("sha256", got.sha256, want.sha256),
                    ("sha512", got.sha512, want.sha512),
                )
                if a != b
            ]
            yield Check(label, f"artifact {name} in {store.name} is altered: "
                               f"{', '.join(what)} differ from the signed manifest")

    # -- ledger -------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Sign the current ledger head as a checkpoint (unless the latest already does),
        then have it timestamped by the configured TSAs. A TSA that is down never makes
        this fail: the checkpoint stays unstamped by it, and a later one is stamped."""
        checkpoint, _results = self.stamped_checkpoint(force=False)
        return checkpoint

    def verify_ledger(self) -> LedgerReport:
        """Recompute the whole ledger. Raises :class:`LedgerIntegrityError` naming the
        first bad entry."""
        return self.ledger.verify(self.public_keys().values())

    def verify_timestamps(self) -> int:
        """Re-check every stored RFC 3161 token: it must stamp exactly its checkpoint's
        signed note and verify as of its own genTime against the TSA certificates kept
        with it. Returns how many were checked; raises :class:`LedgerIntegrityError`
        naming the first token that does not."""
        t, c = tokens_table.c, checkpoints_table.c
        query = (
            sa.select(tokens_table, c.note, c.tree_size.label("checkpoint_size"))
            .outerjoin(checkpoints_table, c.id == t.checkpoint_id)
            .order_by(t.id)
        )
        checked = 0
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            name = f"timestamp token #{row.id} (checkpoint #{row.checkpoint_id}, {row.tsa_url})"
            if row.note is None or row.checkpoint_size != row.tree_size:
                raise LedgerIntegrityError(f"{name} stamps no checkpoint the ledger holds")
            try:
                verify_token(bytes(row.response), row.note.encode("utf-8"),
                             ca_pem=row.ca_pem.encode("ascii"))
            except (VerificationError, UnicodeEncodeError) as exc:
                raise LedgerIntegrityError(f"{name} does not verify: {exc}") from exc
            checked += 1
        return checked

    def proof(self, seq: int) -> Proof:
        """Inclusion proof of entry ``seq`` in the newest checkpoint that covers it (or in
        the current tree if none does yet). Raises :class:`NotFoundError`."""
        size = self.ledger.size()
        if not 0 <= seq < size:
            raise NotFoundError(f"no ledger entry {seq} (the ledger has {size} entries)")
        entry = self.ledger.entry(seq)
        checkpoint = self.ledger.latest_checkpoint()
        if checkpoint is not None and checkpoint.tree_size > seq:
            tree_size, root = checkpoint.tree_size, checkpoint.root_hash
        else:
            checkpoint = None
            tree_size, root = size, self.ledger.root_hash(size)
        hashes = tuple(self.ledger.inclusion_proof(seq, tree_size))
        merkle.verify_inclusion(entry.leaf_hash(), seq, tree_size, list(hashes), root)
        return Proof(entry, tree_size, root, hashes, checkpoint)

    # -- trusted timestamps (RFC 3161) --------------------------------------------------

    @cached_property
    def timestamper(self) -> Timestamper:
        """Asks the configured TSAs for tokens; remembers which failed recently."""
        return Timestamper(self.settings.timestamp, TimestampLog(self.engine),
                           clock=self.clock)

    def stamped_checkpoint(self, *, force: bool) -> tuple[Checkpoint, list[StampResult]]:
        """The checkpoint of the current head (signed now unless the latest is of it), and
        what each configured TSA answered when asked for its token (``force``: ask a TSA
        that failed moments ago too). TSA failures are in the results, never raised."""
        latest = self.ledger.latest_checkpoint()
        if latest is None or latest.tree_size != self.ledger.size():
            latest = self.ledger.create_checkpoint(self.signing_key, self.origin)
        return latest, self.timestamper.stamp(latest, force=force)

    def timestamps(self, checkpoint: Checkpoint) -> list[StoredToken]:
        """The RFC 3161 tokens held for ``checkpoint``, oldest first."""
        return self.timestamper.log.for_checkpoint(checkpoint.id)

    # -- similar media (archiver similar) ------------------------------------------------

    def index_media_hashes(self) -> int:
        """Add the PDQ hashes of every completed capture not indexed yet, read from its
        signed manifest; returns how many captures were indexed."""
        def read_manifest(sha256: str) -> dict[str, Any]:
            checks: list[Check] = []
            data = self._read_small_blob(sha256, MANIFEST_NAME, checks)
            if data is None:
                raise ArchiverError(f"cannot index media hashes: {checks[0].problem}")
            manifest: dict[str, Any] = json.loads(data)
            return manifest

        return media_similar.index_pending(self.engine, read_manifest, now=rfc3339(self.clock()))

    def similar_to_capture(self, capture_id: str, *, max_distance: int) -> tuple[
            CaptureView, list[Any]]:
        """Captures whose media look like those of ``capture_id`` (itself excluded).
        Raises :class:`NotFoundError`."""
        capture = self.get_capture(capture_id)
        self.index_media_hashes()
        query = media_similar.capture_hashes(self.engine, capture.id)
        return capture, media_similar.search(self.engine, query, max_distance=max_distance,
                                       exclude=capture.id)

    def similar_to_hashes(self, query: Sequence[str], *, max_distance: int) -> list[Any]:
        """Captures with media within ``max_distance`` of any of the PDQ ``query`` hashes."""
        self.index_media_hashes()
        return media_similar.search(self.engine, list(query), max_distance=max_distance)


def _capture_view(row: Any, artifact_rows: Sequence[Any]) -> CaptureView:
    return CaptureView(
        id=row.id,
        url=row.url,
        case=row.case_name,
        note=row.note,
        requested_by=row.requested_by,
        requested_via=row.requested_via,
        requested_at=row.requested_at,
        status=row.status,
        reason=row.reason,
        message=row.message,
        started=row.started,
        ended=row.ended,
        final_url=row.final_url,
        http_status=row.http_status,
        manifest_sha256=row.manifest_sha256,
        key_id=row.key_id,
        ledger_seq=row.ledger_seq,
        artifacts=tuple(
            ArtifactView(a.name, a.role, a.media_type, a.size, a.sha256, a.sha512)
            for a in artifact_rows
        ),
        outcomes=json.loads(row.outcomes) if row.outcomes else {},
    )


__all__ = [
    "Archive",
    "ArtifactView",
    "CaptureVerification",
    "CaptureView",
    "Check",
    "InitReport",
    "LedgerIntegrityError",
    "Proof",
    "initialise",
]
