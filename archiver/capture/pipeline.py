"""The capture pipeline: record → seal → store → commit, wired.

Each stage is a function of values and collaborators (see
:mod:`archiver.capture.values`); this module only decides the order, owns the scratch
directory, and turns a target's failure (``CaptureError``) or a store's
(``StorageError``) into a recorded ``capture.failed``. Problems of the archive itself
(the key, the database) are raised: they are not facts about the target, and the capture
is closed as ``capture.interrupted`` (reason ``error``) before they are.

Every capture holds a lease from its ``capture.requested`` to its outcome (see
:mod:`archiver.capture.leases`), so that one whose process dies is closed by the next
command; the outcome is recorded only while the lease is still ours.
"""

from __future__ import annotations

import platform
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from archiver.capture.commit import (
    commit_completed,
    commit_failed,
    completed,
    failed,
    open_request,
)
from archiver.capture.fetcher import Fetcher
from archiver.capture.leases import ERROR, LeaseKeeper, LeaseLost, close_interrupted
from archiver.capture.page import PageFetcher
from archiver.capture.record import record
from archiver.capture.seal import seal
from archiver.capture.store import store
from archiver.capture.values import Capture, CaptureRequest, Failure, HostFacts
from archiver.clock import Clock
from archiver.errors import CaptureError
from archiver.recorder import RecorderOptions
from archiver.recorder.addresses import AddressPolicy
from archiver.settings import Settings
from archiver.versions import software_versions
from chain_of_custody.errors import CustodyError
from chain_of_custody.keys import SigningKey
from chain_of_custody.ledger import Ledger
from storage.errors import StorageError
from storage.replicated import ReplicatedBlobStore


class CommitHook(Protocol):
    """What a caller (the job queue) writes together with a capture's outcome.

    ``prepare`` runs before the commit transaction (it may read the stored files, e.g.
    to match a takedown page); ``apply`` runs inside it, after the capture's rows and
    ledger entries, so both land or neither does."""

    def prepare(self, capture: Capture) -> Any: ...

    def apply(self, conn: sa.Connection, capture: Capture, prepared: Any) -> None: ...


def host_facts(settings: Settings) -> HostFacts:
    """The facts seal states about this machine and configuration (read once)."""
    return HostFacts(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        operator=settings.operator,
        software=software_versions(),
        capture_options=settings.capture.model_dump(mode="json"),
        config_sha256=settings.digest(),
    )


def recorder_options(settings: Settings) -> RecorderOptions:
    c = settings.capture
    return RecorderOptions(
        allow_private_networks=c.allow_private_networks,
        timeout_seconds=c.timeout_seconds,
        max_redirects=c.max_redirects,
        max_response_bytes=c.max_response_bytes,
        fetch_subresources=c.fetch_subresources,
        max_subresources=c.max_subresources,
        max_requests=c.max_requests,
        deadline_seconds=c.deadline_seconds,
        max_subresource_bytes=c.max_subresource_bytes,
        max_total_bytes=c.max_total_bytes,
        max_media_bytes=c.max_media_bytes,
        max_decoded_bytes=c.max_decoded_bytes,
        max_decode_ratio=c.max_decode_ratio,
        verify_tls=c.verify_tls,
        ca_bundle=c.ca_bundle,
        user_agent=c.user_agent,
    )


def warcinfo(host: HostFacts, capture_id: str) -> dict[str, str]:
    """The fields of the WARC's ``warcinfo`` record."""
    return {
        "software": " ".join(f"{name}/{v}" for name, v in host.software.items()),
        "format": "WARC File Format 1.1",
        "conformsTo": "https://iipc.github.io/warc-specifications/specifications/"
        "warc-format/warc-1.1/",
        "hostname": host.hostname,
        "operator": host.operator,
        "capture-id": capture_id,
        "config-sha256": host.config_sha256,
        "robots": "ignore",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Collaborators:
    """What the pipeline works with (built once per process by :class:`Archive`)."""

    engine: sa.Engine
    ledger: Ledger
    blobs: ReplicatedBlobStore
    page: PageFetcher
    fetchers: Sequence[Fetcher]
    options: RecorderOptions
    host: HostFacts
    work_dir: Path
    clock: Clock
    address_policy: AddressPolicy
    key: Callable[[], SigningKey]
    after_commit: Callable[[], None]
    """Run after every commit (the archive's checkpoint, when configured)."""
    leases: LeaseKeeper
    """This process's capture leases."""


class CapturePipeline:
    """Runs captures; safe to call from several threads at once (each capture has its
    own scratch directory, WARC and transaction; ledger appends are serialised by the
    ledger)."""

    def __init__(self, parts: Collaborators) -> None:
        self.parts = parts

    def run(self, request: CaptureRequest, *, hook: CommitHook | None = None) -> Capture:
        """Capture ``request.url``, seal, store and record it; a failure of the target
        is recorded too (``capture.failed``) and returned, not raised.

        Raises only for problems of the archive itself (key, database, scratch disk)."""
        p = self.parts
        key = p.key()  # a wrong passphrase must stop us before any fetch
        work = p.work_dir / request.capture_id
        with p.engine.begin() as conn:
            case_id = open_request(conn, p.ledger, request, now=p.clock())
            p.leases.take(conn, request.capture_id, work)
        try:
            p.leases.hold(request.capture_id)
            work.mkdir(parents=True, mode=0o700)
            try:
                recording = record(
                    request, page=p.page, fetchers=p.fetchers, options=p.options,
                    warcinfo=warcinfo(p.host, request.capture_id), workdir=work,
                    clock=p.clock, address_policy=p.address_policy)
                stored = store(seal(request, recording, host=p.host, key=key, clock=p.clock),
                               p.blobs)
            except (CaptureError, StorageError) as exc:
                capture = failed(request, Failure(
                    exc.reason if isinstance(exc, CaptureError) else "storage", str(exc)))
                return self._commit(capture, hook, lambda conn, c: commit_failed(
                    conn, p.ledger, c, case_id=case_id))
            return self._commit(completed(request, recording, stored), hook,
                                lambda conn, c: commit_completed(
                                    conn, p.ledger, c, recording, stored, case_id=case_id))
        except LeaseLost:
            raise  # closed as interrupted by another command already
        except Exception as exc:
            self._close_on_error(request.capture_id, exc)
            raise
        finally:
            p.leases.forget(request.capture_id)
            shutil.rmtree(work, ignore_errors=True)

    def _close_on_error(self, capture_id: str, exc: Exception) -> None:
        """Close a capture that stops on an error of the archive (not of its target) as
        interrupted, at once; if even that fails, its lease is left to run out and a
        later command closes it."""
        p = self.parts
        try:
            with p.engine.begin() as conn:
                close_interrupted(
                    conn, p.ledger, capture_id, reason=ERROR,
                    message=f"the capture stopped on an error of the archive: "
                            f"{type(exc).__name__}: {exc}")
        except (sa.exc.SQLAlchemyError, CustodyError):
            return

    def _commit(self, capture: Capture, hook: CommitHook | None,
                write: Callable[[sa.Connection, Capture], Capture]) -> Capture:
        p = self.parts
        # prepare() sees the capture as it will be recorded (but for its ledger seq); it
        # runs before the transaction so that nothing slow (reading a WARC to match a
        # takedown page) holds the database's write lock.
        prepared = hook.prepare(capture) if hook is not None else None
        with p.engine.begin() as conn:
            p.leases.give_back(conn, capture.id)  # refused if the capture was closed
            capture = write(conn, capture)
            if hook is not None:
                hook.apply(conn, capture, prepared)
        p.after_commit()
        return capture
