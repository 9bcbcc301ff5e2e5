"""The values handed from one capture stage to the next.

::

    CaptureRequest ──record──> Recording ──seal──> Sealed ──store──> Stored ──commit──> Capture
                          └─(the target failed)──> Failure ────────────────commit──> Capture

Each is frozen and touches no disk, network, clock or environment; the stages that make
them (:mod:`~archiver.capture.record`, :mod:`~archiver.capture.seal`,
:mod:`~archiver.capture.store`, :mod:`~archiver.capture.commit`) take their
collaborators as arguments, and :mod:`~archiver.capture.pipeline` wires them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archiver.clock import rfc3339
from archiver.errors import NotFoundError

if TYPE_CHECKING:  # the read commands import this module: keep httpx and the rest out
    from archiver.capture.fetcher import FetcherReport
    from archiver.capture.page import PageCapture
    from archiver.recorder.model import ExchangeSummary
    from chain_of_custody.digest import Digest
    from chain_of_custody.manifest import Artifact

SERVICE_ACTOR = "service:archiver"
"""The actor of the entries the pipeline itself writes (completed, failed, gone)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureRequest:
    """Someone asked for ``url`` to be captured: who, when, through what, for which case.

    ``via`` names the channel (``cli``, ``api``, ``watch``); ``source`` optionally what
    made the request (``watch:<id>``, ``job:<id>``)."""

    capture_id: str
    url: str
    actor: str
    via: str
    requested_at: datetime
    case: str | None = None
    note: str | None = None
    source: str | None = None

    @property
    def at(self) -> str:
        return rfc3339(self.requested_at)

    def manifest_json(self) -> dict[str, Any]:
        """``requested`` of the capture manifest."""
        return {"url": self.url, "by": self.actor, "at": self.at, "via": self.via,
                "source": self.source, "case": self.case, "note": self.note}

    def ledger_json(self) -> dict[str, Any]:
        """The payload of ``capture.requested``."""
        return {"url": self.url, "case": self.case, "note": self.note, "via": self.via,
                "source": self.source}


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A sealed artifact and where its bytes are: a file in the capture's scratch
    directory (``path``) or, for the small files seal makes itself, ``data``."""

    artifact: Artifact
    path: Path | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("a staged file has exactly one of path and data")

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def digest(self) -> Digest:
        return self.artifact.digest


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    """What the record stage wrote into the capture's one WARC: the page, then every
    fetcher's report. The WARC is published at ``warc.path`` with ``warc.digest``."""

    page: PageCapture
    exchanges: tuple[ExchangeSummary, ...]
    warnings: tuple[str, ...]
    started: datetime
    ended: datetime
    warc: StagedFile
    reports: tuple[FetcherReport, ...]
    urls: Mapping[str, int] = field(default_factory=dict)
    """URLs found during the capture that were left out as invalid (``invalid``) or
    stripped of a user name and password (``userinfo_stripped``), counted."""
    budget: Mapping[str, Any] = field(default_factory=dict)
    """What the capture spent of its budget (requests, bytes, time), what the budget
    refused and what each fetcher left out because of it, counted (see
    :meth:`archiver.recorder.budget.CaptureBudget.as_json`)."""

    @property
    def outcomes(self) -> dict[str, dict[str, Any]]:
        """Each fetcher's outcome, by fetcher name."""
        return {report.name: report.outcome.as_json() for report in self.reports}

    @property
    def gone(self) -> tuple[FetcherReport, ...]:
        """The reports whose fetcher found the post taken down (reason ``removed``)."""
        return tuple(r for r in self.reports if r.outcome.reason == "removed")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostFacts:
    """What seal states about the machine and the configuration (gathered once, at the
    edge, by :func:`archiver.capture.pipeline.host_facts`)."""

    hostname: str
    platform: str
    operator: str
    software: Mapping[str, str]
    capture_options: Mapping[str, Any]
    config_sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sealed:
    """A recording sealed: every artifact with its digests, ``provenance.json``, the
    canonical manifest listing them and the signature over it (``files`` in that order:
    artifacts, then ``manifest.json`` and ``manifest.sig``, which the manifest cannot
    list)."""

    capture_id: str
    key_id: str
    files: tuple[StagedFile, ...]
    manifest: StagedFile
    signature: StagedFile

    @property
    def all_files(self) -> tuple[StagedFile, ...]:
        return (*self.files, self.manifest, self.signature)


@dataclass(frozen=True, slots=True)
class Stored:
    """Every file of ``sealed`` is held, verified, by each of ``stores``."""

    sealed: Sealed
    stores: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a capture could not be made: a stable reason code and a sentence."""

    reason: str
    message: str


@dataclass(frozen=True)
class ArtifactView:
    name: str
    role: str
    media_type: str
    size: int
    sha256: str
    sha512: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "media_type": self.media_type,
                "size": self.size, "sha256": self.sha256, "sha512": self.sha512}


@dataclass(frozen=True)
class Capture:
    """A capture as recorded (``completed`` or ``failed``): what commit returns and what
    the archive's read views give back."""

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
        """Raises :class:`NotFoundError` naming the artifacts it has."""
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        names = ", ".join(a.name for a in self.artifacts) or "none"
        raise NotFoundError(f"capture {self.id} has no artifact {name!r} (it has: {names})")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.url, "case": self.case, "note": self.note,
            "requested_by": self.requested_by, "requested_via": self.requested_via,
            "requested_at": self.requested_at, "status": self.status, "reason": self.reason,
            "message": self.message, "started": self.started, "ended": self.ended,
            "final_url": self.final_url, "http_status": self.http_status,
            "manifest_sha256": self.manifest_sha256, "key_id": self.key_id,
            "ledger_seq": self.ledger_seq,
            "artifacts": [a.as_json() for a in self.artifacts],
            "outcomes": dict(self.outcomes),
        }
