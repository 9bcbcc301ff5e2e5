"""The composition root: one archive = settings + database + ledger + stores + key.

Everything that wires ``storage`` and ``chain_of_custody`` together lives here: opening
an archive builds the capture pipeline's collaborators (:mod:`archiver.capture.pipeline`
runs the stages record → seal → store → commit); :class:`Archive` itself keeps only that
wiring, the read views (show, list, download, each recorded on the ledger) and
verification (a capture, the ledger, its timestamps). The CLI, the daemon and the HTTP
API only call :class:`Archive` methods.

Start-up cost matters (``archiver list`` must answer in a blink): the capture stack
(httpx, yt-dlp, Playwright), the S3 store (boto3) and the similarity index (numpy) are
imported only when first used.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import sqlalchemy as sa

from archiver import models, schema
from archiver.capture.values import ArtifactView, Capture, CaptureRequest
from archiver.clock import Clock, IdFactory, new_capture_id, rfc3339, utc_now
from archiver.db import make_engine, reading
from archiver.errors import ArchiverError, ConfigError, NotFoundError, NotInitialisedError
from archiver.recorder.addresses import AddressPolicy, non_global_reason
from archiver.settings import LocalStoreSettings, Settings
from archiver.urls import check_text, submitted_url
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
from chain_of_custody.manifest import MANIFEST_FILE, SIGNATURE_FILE, Manifest
from chain_of_custody.manifest import verify_manifest as check_manifest
from storage.base import BlobStore
from storage.errors import StorageError
from storage.fixity import check_copy
from storage.local import LocalBlobStore
from storage.replicated import ReplicatedBlobStore

if TYPE_CHECKING:
    from archiver.capture.fetcher import Fetcher
    from archiver.capture.leases import LeaseKeeper
    from archiver.capture.pipeline import CapturePipeline, CommitHook
    from archiver.timestamps import StampResult, Timestamper
    from chain_of_custody.timestamp import StoredToken

MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # manifests and signatures are small; never read more


CAPTURE_ID_LENGTH = 36
"""A capture id's length (a UUID's text form)."""


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
class KeyRotation:
    """What :meth:`Archive.rotate_key` did: the key retired, the new one, the
    ``key.rotated`` entry (signed by the old key) and where the old private key now is."""

    old_key_id: str
    new_key_id: str
    ledger_seq: int
    retired_key_file: Path


@dataclass(frozen=True)
class Proof:
    entry: LedgerEntry
    tree_size: int
    root_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: Checkpoint | None


def build_fetchers(settings: Settings) -> list[Fetcher]:
    """The fetchers that run after the page, in order, as the settings ask for them."""
    from archiver.capture.browser import BrowserFetcher, BrowserOptions
    from archiver.capture.media import MediaFetcher, MediaOptions

    # The browser first: the media fetcher picks up the media URLs it saw. Present even
    # when turned off, so every capture says why it has no browser view.
    # Media always runs: with media.enabled = false it still downloads a URL that is
    # itself a video or image (the page fetcher leaves such bodies to it).
    return [BrowserFetcher(BrowserOptions.from_settings(
                settings.browser, defer_media=settings.media.enabled)),
            MediaFetcher(MediaOptions.from_settings(settings.media))]


def build_store(settings: Settings) -> ReplicatedBlobStore:
    """Every configured store, behind one replicated store (a write counts when all hold it)."""
    stores: list[BlobStore] = []
    for spec in settings.storage.stores:
        if isinstance(spec, LocalStoreSettings):
            stores.append(LocalBlobStore(settings.local_store_path(spec)))
        else:
            from storage.s3 import S3BlobStore  # boto3 takes longer to import than a list

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


def initialise(settings: Settings, *, clock: Clock = utc_now) -> InitReport:
    """Create the data directory, the schema and the signing key. Safe to run again.

    Raises :class:`ArchiverError` subclasses (wrong passphrase, unreachable database,
    a registered key whose file is missing, a home that belongs to another user or
    whose files cannot be made private).
    """
    from archiver import privacy

    home = settings.home_dir
    # Private on disk (archiver.privacy): an existing home is checked and tightened
    # before anything is written in it, and again (everything in it) at the end.
    privacy.prepare_home(home)
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=privacy.DIR_MODE)
    if settings.database.url is None:
        privacy.create_private_file(home / "archive.db")
    passphrase = settings.passphrase()
    engine = make_engine(settings.database_url)
    try:
        schema.upgrade(engine)
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
        ledger = Ledger(engine, clock=clock, origin=origin, signer=key)
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
        elif ledger.predating_tail():
            # Entries appended before entry authentication carry no signature; the tail no
            # checkpoint covers yet is signed in now, once, by the key holder upgrading
            # (also when an earlier init was stopped between the upgrade and this
            # checkpoint). Only unsigned entries older than every signed one: an unsigned
            # row after a signed one is refused by every checkpoint (chain_of_custody.ledger).
            ledger.create_checkpoint(key, origin, legacy=True)
        # The secret the web application derives its keys from (and that encrypts TOTP
        # secrets at rest): made now, 0600, so that serving never has to create it.
        from archiver.people.webkey import web_secret

        web_secret(settings)
        privacy.tighten(settings)
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
    """An opened, initialised archive. Use :meth:`open`; close with :meth:`close`.

    Thread-safe: several captures may run at once (``capture.concurrency``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: sa.Engine,
        store: ReplicatedBlobStore,
        clock: Clock = utc_now,
        new_id: IdFactory = new_capture_id,
        fetchers: Sequence[Fetcher] | None = None,
        address_policy: AddressPolicy = non_global_reason,
    ) -> None:
        self.settings = settings
        # Which peer addresses the SSRF guard refuses when private networks are not
        # allowed; tests inject a narrower policy, everything else keeps the default.
        self.address_policy = address_policy
        self.engine = engine
        # For code that only reads (the HTTP API's lists and pages): on SQLite its
        # transactions take no write lock (see archiver.db).
        self.reader = reading(engine)
        self.store = store
        self._fetchers = None if fetchers is None else tuple(fetchers)
        self.clock = clock
        self.new_id = new_id
        self._key: SigningKey | None = None
        self._key_lock = threading.Lock()
        with engine.connect() as conn:
            origin = _meta(conn, "origin")
        assert origin is not None
        self.origin = origin
        # Every entry is signed by the archive's key, loaded when the first one is
        # appended: commands that only read never need the passphrase.
        self.ledger = Ledger(engine, clock=clock, origin=origin, signer=self._ledger_key)

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
            archive = cls(settings, engine=engine, store=build_store(settings), clock=clock,
                          new_id=new_id, address_policy=address_policy)
            archive.close_abandoned()
            return archive
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        """Stop what the captures started (the shared browser) and release the database."""
        for fetcher in self._fetchers or ():
            close = getattr(fetcher, "close", None)
            if close is not None:
                close()
        if "leases" in self.__dict__:
            self.leases.close()
        self.engine.dispose()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- keys ---------------------------------------------------------------------------

    @property
    def signing_key(self) -> SigningKey:
        """The archive's key, decrypted on first use. Raises on a wrong passphrase."""
        with self._key_lock:
            if self._key is None:
                self._key = _load_key(self.settings.key_file, self.settings.passphrase())
            return self._key

    def _ledger_key(self) -> SigningKey:
        try:
            return self.signing_key
        except ConfigError as exc:
            raise ConfigError(
                f"this command records an event on the custody ledger, which the archive's "
                f"signing key must sign: {exc}"
            ) from exc

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

    def rotate_key(self, *, actor: str) -> KeyRotation:
        """Replace the archive's signing key by a new one, kept under the same passphrase.

        The ``key.rotated`` entry naming the new key is signed by the old key (so only
        its holder can hand authority on, see :class:`~chain_of_custody.ledger.KeyChain`),
        the old key is marked retired in ``signing_keys`` and its public key stays in the
        history: everything it signed still verifies. A checkpoint signed by the new key
        follows. The old private key file is kept (still encrypted) next to the new one
        as ``retired-<key id>.pem``; destroying it is the operator's decision.

        Run it while no other process of this archive (``serve``, the daemon) appends to
        the ledger: theirs still hold the old key, whose entries the ledger now refuses.
        Raises :class:`ArchiverError` subclasses (no or wrong passphrase, a leftover
        ``.new`` key file from an interrupted rotation).
        """
        old = self._ledger_key()
        key_file = self.settings.key_file
        fresh = key_file.with_name(f"{key_file.name}.new")
        retired = key_file.with_name(f"retired-{old.key_id}.pem")
        new = SigningKey.generate()
        try:
            # Written before the ledger names it, so the key the ledger trusts next is
            # never lost: an interrupted rotation leaves it here (init then says which
            # key file the archive expects).
            new.write_encrypted(fresh, self.settings.passphrase())
        except CustodyError as exc:
            raise ArchiverError(f"{exc} (left by an interrupted key rotation? the ledger "
                                f"names the archive's current key: see `archiver key show`)"
                                ) from exc
        now = rfc3339(self.clock())
        k = models.signing_keys
        try:
            with self.engine.begin() as conn:
                entry = self.ledger.append(
                    actor=actor, action="key.rotated", subject=f"key:{new.key_id}",
                    payload={"key_id": new.key_id, "algorithm": new.algorithm,
                             "public_key_pem": new.public.pem().decode("ascii"),
                             "replaces": old.key_id},
                    connection=conn)
                conn.execute(sa.update(k).where(k.c.key_id == old.key_id).values(retired=now))
                conn.execute(sa.insert(k).values(
                    key_id=new.key_id, algorithm=new.algorithm,
                    public_pem=new.public.pem().decode("ascii"), created=now))
        except BaseException:
            fresh.unlink(missing_ok=True)
            raise
        key_file.replace(retired)
        fresh.replace(key_file)
        with self._key_lock:
            self._key = new
        self.checkpoint()
        return KeyRotation(old.key_id, new.key_id, entry.seq, retired)

    def public_keys(self) -> dict[str, PublicKey]:
        """Every key the archive ever signed with, by key id.

        Read from the key history *on the ledger* (``key.created`` / ``key.rotated``
        entries), not from the ``signing_keys`` table: the table is mutable, the ledger
        is append-only and verified, so a key swapped into the table is never trusted.
        Each key entry must be signed by the key current before it
        (:meth:`Ledger.key_history`): a forged ``key.rotated`` row raises
        :class:`LedgerIntegrityError` instead of lending its key any trust.
        """
        return {key.key_id: key for key in self.ledger.key_history()}

    # -- capture ------------------------------------------------------------------------

    @property
    def fetchers(self) -> tuple[Fetcher, ...]:
        """The fetchers that follow the page (built on first use: they import yt-dlp and
        Playwright, which the reading commands never need)."""
        if self._fetchers is None:
            self._fetchers = tuple(build_fetchers(self.settings))
        return self._fetchers

    @cached_property
    def pipeline(self) -> CapturePipeline:
        """The capture stages, wired to this archive's collaborators."""
        from archiver.capture.page import PageFetcher
        from archiver.capture.pipeline import (
            CapturePipeline,
            Collaborators,
            host_facts,
            recorder_options,
        )

        return CapturePipeline(Collaborators(
            engine=self.engine, ledger=self.ledger, blobs=self.store,
            page=PageFetcher(defer_media=self.settings.media.enabled),
            fetchers=self.fetchers, options=recorder_options(self.settings),
            host=host_facts(self.settings), work_dir=self.settings.work_dir,
            clock=self.clock, address_policy=self.address_policy,
            key=lambda: self.signing_key, after_commit=self.maybe_checkpoint,
            leases=self.leases,
        ))

    @cached_property
    def leases(self) -> LeaseKeeper:
        """The leases of the captures this process runs (renewed by one thread)."""
        from archiver.capture.leases import LeaseKeeper

        return LeaseKeeper(self.engine, lease_seconds=self.settings.capture.lease_seconds,
                           clock=self.clock)

    def close_abandoned(self) -> list[str]:
        """Close the captures whose process is gone (seen on its own machine) or whose
        lease ran out: ``capture.interrupted`` on the ledger, an ``interrupted`` capture
        row, scratch removed. Runs whenever an archive is opened. Appending needs the
        signing key: without the passphrase (or with a wrong one) nothing is closed, and
        a later command that has it does the closing. Returns the ids closed."""
        from archiver.capture.leases import ProcessIdentity, sweep

        return sweep(self.engine, self.ledger, work_dir=self.settings.work_dir,
                     clock=self.clock, here=ProcessIdentity.current(),
                     key_ready=self._key_ready)

    def _key_ready(self) -> bool:
        try:
            self.signing_key  # noqa: B018 - loads and checks it
        except ArchiverError:  # no passphrase (ConfigError), a wrong one, no key file
            return False
        return True

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
        hook: CommitHook | None = None,
    ) -> Capture:
        """Capture one URL, seal, store and record it. A failed capture is recorded too.

        ``via`` says through what the request came (``cli``, ``api``, ``watch``);
        ``source`` optionally names what made it (``watch:<id>``, ``job:<id>``) and is
        recorded in the manifest and the ledger; ``capture_id`` lets a caller that
        tracks the capture (a job queue) choose its id, else a new one is made;
        ``hook`` writes the caller's own rows in the same transaction as the outcome.

        Returns the capture as recorded (``status`` ``completed`` or ``failed``); raises
        only for problems of the archive itself (key, database), not of the target, and
        :class:`~archiver.errors.BadInput` before anything is recorded for a URL that
        :func:`archiver.urls.check_url` refuses as submitted (a password in it too) or a
        case or note that is not text the archive can keep.
        """
        url = submitted_url(url)  # every caller's URL passes the one check, normalised
        for what, text in (("the case", case), ("the note", note)):
            if text is not None:
                check_text(text, what)
        request = CaptureRequest(
            capture_id=capture_id or self.new_id(), url=url,
            actor=actor or self.settings.operator, via=via, requested_at=self.clock(),
            case=case, note=note, source=source,
        )
        return self.pipeline.run(request, hook=hook)

    def maybe_checkpoint(self) -> None:
        """Checkpoint the ledger now if ``ledger.checkpoint_after_capture`` says so."""
        if self.settings.ledger.checkpoint_after_capture:
            self.checkpoint()

    # -- reading ------------------------------------------------------------------------

    def get_capture(self, capture_id: str) -> Capture:
        """Find a capture by id or unique id prefix. Raises :class:`NotFoundError`."""
        c = models.captures
        # A whole id is looked up by the primary key; only a prefix needs LIKE, which
        # SQLite answers by reading the whole table (an escaped LIKE uses no index).
        match = c.c.id == capture_id if len(capture_id) == CAPTURE_ID_LENGTH \
            else c.c.id.startswith(capture_id, autoescape=True)
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(c, models.cases.c.name.label("case_name"))
                .outerjoin(models.cases, models.cases.c.id == c.c.case_id)
                .where(match)
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

    def list_captures(self, *, case: str | None = None) -> list[Capture]:
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

    def record_view(self, capture: Capture, *, actor: str | None = None,
                    context: Mapping[str, str] | None = None,
                    mode: str | None = None) -> None:
        """Record that a person looked at a capture (``access.viewed``); ``context``:
        how they reached it (token or session id, client address), when not the CLI;
        ``mode``: how it was shown, when not as details (``replay``: replayed)."""
        payload: dict[str, Any] = {"manifest_sha256": capture.manifest_sha256}
        if mode is not None:
            payload["mode"] = mode
        if context:
            payload["context"] = dict(context)
        self.ledger.append(
            actor=actor or self.settings.operator,
            action="access.viewed",
            subject=f"capture:{capture.id}",
            payload=payload,
        )

    def record_download(
        self, capture: Capture, artifact: ArtifactView, *, actor: str,
        context: Mapping[str, str] | None = None, byte_range: tuple[int, int] | None = None,
    ) -> None:
        """Record ``access.downloaded`` for a download about to be served (the act is
        the access: callers record it before the first byte goes out). ``byte_range``:
        the first and last byte sent, for a partial download."""
        payload: dict[str, Any] = {"artifact": artifact.name, "sha256": artifact.sha256,
                                   "size": artifact.size}
        if byte_range is not None:
            payload["range"] = [byte_range[0], byte_range[1]]
        if context:
            payload["context"] = dict(context)
        self.ledger.append(actor=actor, action="access.downloaded",
                           subject=f"capture:{capture.id}", payload=payload)

    def open_artifact(self, artifact: ArtifactView) -> AbstractContextManager[BinaryIO]:
        """The stored bytes of ``artifact``, not re-hashed (the caller hashes what it
        must trust). Errors surface when the ``with`` block is entered: StorageError
        (missing from every store, or no store reachable)."""
        return self.store.open(artifact.sha256)

    def export_artifact(
        self, capture_id: str, name: str, out: BinaryIO, *, actor: str | None = None
    ) -> ArtifactView:
        """Copy an artifact to ``out``, re-hashing as it streams; record
        ``access.downloaded``. Raises :class:`NotFoundError`, or :class:`ArchiverError`
        if the stored copy does not match its recorded digests (nothing is recorded
        then: the caller must discard what was written)."""
        capture = self.get_capture(capture_id)
        artifact = capture.artifact(name)
        self.ledger.signing_key()  # the download must be recorded: fail before a byte goes out
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
        manifest_bytes = self._read_small_blob(manifest_sha, MANIFEST_FILE, checks)
        sig_artifact = next((a for a in capture.artifacts if a.name == SIGNATURE_FILE), None)
        sig_sha = signature_sha if isinstance(signature_sha, str) else (
            sig_artifact.sha256 if sig_artifact else None)
        signature = self._read_small_blob(sig_sha, SIGNATURE_FILE, checks) if sig_sha else None
        manifest: Manifest | None = None
        if manifest_bytes is not None and signature is not None:
            try:
                manifest = check_manifest(manifest_bytes, signature, self.public_keys())
                checks.append(Check("manifest signature"))
            except VerificationError as exc:
                checks.append(Check("manifest signature", str(exc)))
        if manifest is None:
            return CaptureVerification(capture.id, tuple(checks))
        if manifest.capture_id != capture.id:
            checks.append(Check("manifest", "manifest belongs to another capture"))
        expected = {a.name: a.digest for a in manifest.artifacts}
        recorded = {a.name for a in capture.artifacts} - {MANIFEST_FILE, SIGNATURE_FILE}
        if recorded != set(expected):
            checks.append(Check(
                "artifact list",
                f"database lists {sorted(recorded)}, signed manifest lists {sorted(expected)}",
            ))
        for name, want in expected.items():
            checks.extend(self._check_blob_copies(name, want))
        return CaptureVerification(capture.id, tuple(checks))

    def _check_ledger_anchor(
        self, capture: Capture, checks: list[Check]
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
        # The same judgement of a copy as the fixity audit's (archiver.audit).
        for store in self.store.stores:
            label = f"{name} in {store.name}"
            result = check_copy(store, want.sha256, size=want.size, sha512=want.sha512)
            if result.ok:
                yield Check(label)
            elif result.state == "altered":
                yield Check(label, f"artifact {name} in {store.name} is altered: "
                                   f"{result.detail}")
            else:
                yield Check(label, f"artifact {name} in {store.name} is {result.state}: "
                                   f"{result.detail}")

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
        from chain_of_custody.timestamp import tokens_table, verify_token

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
        from archiver.timestamps import Timestamper
        from chain_of_custody.timestamp import TimestampLog

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
        from archiver.capture.media import similar as media_similar

        def read_manifest(sha256: str) -> dict[str, Any]:
            checks: list[Check] = []
            data = self._read_small_blob(sha256, MANIFEST_FILE, checks)
            if data is None:
                raise ArchiverError(f"cannot index media hashes: {checks[0].problem}")
            manifest: dict[str, Any] = json.loads(data)
            return manifest

        return media_similar.index_pending(self.engine, read_manifest, now=rfc3339(self.clock()))

    def similar_to_capture(self, capture_id: str, *, max_distance: int) -> tuple[
            Capture, list[Any]]:
        """Captures whose media look like those of ``capture_id`` (itself excluded).
        Raises :class:`NotFoundError`."""
        from archiver.capture.media import similar as media_similar

        capture = self.get_capture(capture_id)
        self.index_media_hashes()
        query = media_similar.capture_hashes(self.engine, capture.id)
        return capture, media_similar.search(self.engine, query, max_distance=max_distance,
                                       exclude=capture.id)

    def similar_to_hashes(self, query: Sequence[str], *, max_distance: int) -> list[Any]:
        """Captures with media within ``max_distance`` of any of the PDQ ``query`` hashes."""
        from archiver.capture.media import similar as media_similar

        self.index_media_hashes()
        return media_similar.search(self.engine, list(query), max_distance=max_distance)


def _capture_view(row: Any, artifact_rows: Sequence[Any]) -> Capture:
    return Capture(
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
    "Capture",
    "CaptureVerification",
    "Check",
    "InitReport",
    "KeyRotation",
    "LedgerIntegrityError",
    "Proof",
    "initialise",
]
