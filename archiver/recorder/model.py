"""The recorder's values: options, the summary of one exchange, record ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

MiB = 1024 * 1024
DECODE_RATIO_FLOOR = 1 * MiB
"""Decoded bytes of one body that ``max_decode_ratio`` never stops (small bodies can
compress very well: a page of repeated markup)."""

Role = Literal["page", "subresource", "media", "browser"]
"""Why an exchange was made: the page itself, a resource it references, media fetched
by yt-dlp, or a request of the rendering browser. Each role has its byte limit."""


def new_record_id() -> str:
    """A fresh WARC-Record-ID, ``<urn:uuid:…>``."""
    return f"<urn:uuid:{uuid.uuid4()}>"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderOptions:
    """Limits and switches of one capture (``capture.*`` in the configuration).

    Byte limits count the response as received on the wire (status line, headers and
    body, still compressed and chunked), which is what the WARC record holds.
    """

    allow_private_networks: bool = False
    timeout_seconds: float = 120.0
    max_redirects: int = 10
    max_response_bytes: int = 512 * MiB
    fetch_subresources: bool = True
    max_subresources: int = 300
    max_requests: int = 5000
    """Exchanges of the whole capture, every fetcher's (see :mod:`.budget`)."""
    deadline_seconds: float = 3600.0
    """The whole capture, every fetcher included, from its start (see :mod:`.budget`)."""
    max_subresource_bytes: int = 100 * MiB
    max_total_bytes: int = 2048 * MiB
    max_media_bytes: int = 2048 * MiB
    max_decoded_bytes: int = 2048 * MiB
    """What one body may decode to (Content-Encoding undone) for any reader: the
    caller's copy, the link extractors, the browser. The WARC keeps the bytes received."""
    max_decode_ratio: float = 100.0
    """Decoded bytes per byte received, past the first :data:`DECODE_RATIO_FLOOR`
    decoded: a decompression bomb is stopped after a few megabytes."""
    verify_tls: bool = True
    ca_bundle: Path | None = None
    user_agent: str = "evidence-archiver"

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be > 0")
        if not self.deadline_seconds > 0:
            raise ValueError("deadline_seconds must be > 0")
        if self.max_requests < 1:
            raise ValueError("max_requests must be >= 1")
        for name in ("max_response_bytes", "max_subresource_bytes", "max_total_bytes",
                     "max_media_bytes", "max_decoded_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not self.max_decode_ratio >= 1:
            raise ValueError("max_decode_ratio must be >= 1")
        for name in ("max_redirects", "max_subresources"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if "\r" in self.user_agent or "\n" in self.user_agent:
            raise ValueError("user_agent must be one line")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeSummary:
    """One recorded request/response pair (a redirect hop is an exchange of its own)."""

    url: str
    method: str
    role: Role
    status: int | None  # None only when a truncated response ended inside its headers
    peer_ip: str | None
    peer_port: int | None
    request_record_id: str
    response_record_id: str
    certificate_record_id: str | None
    response_bytes: int
    truncated: bool
    started: datetime
    ended: datetime
    revisit_of: str | None = None  # set when the response was written as a revisit
    payload_digest: str | None = None
    """``sha256:<BASE32>`` of the payload as received (after the HTTP header block, with
    transfer framing and content coding untouched), when the header block is complete."""


