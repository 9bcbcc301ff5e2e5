"""Fetchers that add to a capture after its page: media (yt-dlp), the browser view.

Each runs inside the capture's :class:`~archiver.recorder.RecordingSession`, so every
exchange it makes lands in the capture's one WARC behind the SSRF guard, and returns a
:class:`FetcherReport`: the files it derived (sealed and stored as artifacts), what goes
into ``provenance.json`` and the manifest, and its outcome. A fetcher never fails the
capture: the page is evidence on its own, and a fetcher that found nothing, or could not
run, says so in its outcome (``reason`` is a short stable code, as on ``capture.failed``).
A ``removed`` outcome (the platform took the post or its media down) is also recorded on
the ledger as ``target.gone``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from archiver.capture.page import PageCapture
from archiver.recorder import RecordingSession
from chain_of_custody.digest import Digest

OutcomeStatus = Literal["ok", "none", "partial", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class DerivedArtifact:
    """A file a fetcher made, hashed while (or right after) it was written."""

    name: str
    role: str
    media_type: str
    path: Path
    digest: Digest


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a fetcher did: ``ok``; ``none`` (nothing to fetch, e.g. a page without media);
    ``partial``; ``failed`` (with ``reason``); ``skipped`` (turned off or unavailable)."""

    status: OutcomeStatus
    reason: str | None = None
    message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "message": self.message}


@dataclass(frozen=True, slots=True)
class FetcherReport:
    """What one fetcher did for a capture: a value handed from the record stage to seal."""

    name: str
    outcome: Outcome
    artifacts: tuple[DerivedArtifact, ...] = ()
    software: Mapping[str, str] = field(default_factory=dict)
    """Versions to name in the manifest's ``happened.software`` (e.g. yt-dlp, Chromium)."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """What the manifest says about this fetcher (``happened.fetchers.<name>``)."""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """Details for ``provenance.json`` (options, timings, formats, browser flags)."""


class Fetcher(Protocol):
    """Something that adds to a capture after its page was fetched."""

    name: str

    def run(self, session: RecordingSession, page: PageCapture, workdir: Path) -> FetcherReport:
        """Fetch into ``session``; write derived files under ``workdir`` (which is the
        capture's scratch directory, deleted afterwards). Must not raise for problems of
        the target: report them in the outcome."""
        ...
