"""Getting RFC 3161 tokens for checkpoints: which TSA to ask, when, and over HTTP.

Every checkpoint is sent to every configured TSA once it is signed (one request per
checkpoint and TSA, never per capture). A TSA that is down, slow or answers nonsense
never fails a capture: the capture is committed before any TSA is asked, the failure
is logged and reported to the caller, and the checkpoint simply has no token from that
TSA. The next checkpoint asks again, except within ``retry_after_seconds`` of the
failure (so a dead TSA does not slow every capture of a batch by its timeout);
``archiver ledger timestamp`` and exports always ask. A token on a later checkpoint
covers every earlier entry too (the later tree contains them), so a late token loses
nothing but time precision.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from archiver.clock import Clock
from archiver.settings import TimestampSettings
from chain_of_custody.errors import VerificationError
from chain_of_custody.ledger import Checkpoint
from chain_of_custody.timestamp import (
    MAX_RESPONSE_BYTES,
    Post,
    StoredToken,
    TimestampError,
    TimestampLog,
    request_token,
)

_log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


@dataclass(frozen=True)
class StampResult:
    """What happened when one TSA was (or was not) asked to stamp one checkpoint."""

    tsa_url: str
    token: StoredToken | None = None
    problem: str | None = None
    skipped: bool = False
    """Not asked: the TSA failed recently (see ``retry_after_seconds``)."""
    fresh: bool = False
    """The token was obtained now (else it was already held)."""

    @property
    def ok(self) -> bool:
        return self.token is not None


def http_post(timeout_seconds: float) -> Post:
    """``post(url, body)`` over HTTP(S) with httpx: the RFC 3161 HTTP transport."""

    def post(url: str, body: bytes) -> bytes:
        headers = {"Content-Type": QUERY_TYPE, "Accept": REPLY_TYPE}
        try:
            with httpx.stream("POST", url, content=body, headers=headers,
                              timeout=timeout_seconds) as response:
                if response.status_code != 200:
                    raise TimestampError(f"TSA {url} answered HTTP {response.status_code}")
                content_type = response.headers.get("content-type", "")
                if content_type.split(";")[0].strip().lower() != REPLY_TYPE:
                    raise TimestampError(
                        f"TSA {url} answered {content_type or 'no content type'}, "
                        f"not {REPLY_TYPE}"
                    )
                reply = bytearray()
                for chunk in response.iter_bytes():
                    reply += chunk
                    if len(reply) > MAX_RESPONSE_BYTES:
                        raise TimestampError(f"TSA {url} sent more than any token needs")
                return bytes(reply)
        except httpx.HTTPError as exc:
            raise TimestampError(f"TSA {url} unreachable: {exc}") from exc

    return post


class Timestamper:
    """Asks the configured TSAs for tokens of checkpoints and keeps what verifies.

    ``post`` and ``monotonic`` are injectable (tests pass a transport instead of patching).
    """

    def __init__(
        self,
        settings: TimestampSettings,
        log: TimestampLog,
        *,
        clock: Clock,
        post: Post | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.log = log
        self.clock = clock
        self._post = post or http_post(settings.timeout_seconds)
        self._monotonic = monotonic
        self._retry_at: dict[str, float] = {}

    @property
    def tsa_urls(self) -> list[str]:
        return [tsa.url for tsa in self.settings.authorities]

    def stamp(self, checkpoint: Checkpoint, *, force: bool = False) -> list[StampResult]:
        """Get a token of ``checkpoint`` from every configured TSA that has none yet.

        Never raises for a TSA's failure (it is in the result, and logged); raises
        :class:`~chain_of_custody.errors.LedgerError` if the database refuses the token.
        """
        if not self.settings.authorities:
            return []
        held = {token.tsa_url: token for token in self.log.for_checkpoint(checkpoint.id)}
        results = []
        for tsa in self.settings.authorities:
            if tsa.url in held:
                results.append(StampResult(tsa.url, token=held[tsa.url]))
                continue
            if not force and self._monotonic() < self._retry_at.get(tsa.url, -math.inf):
                results.append(StampResult(tsa.url, skipped=True,
                                           problem="failed recently; not asked again yet"))
                continue
            results.append(self._ask(tsa.url, tsa.ca_file.expanduser(), checkpoint))
        return results

    def _ask(self, url: str, ca_file: Path, checkpoint: Checkpoint) -> StampResult:
        try:
            ca_pem = ca_file.read_bytes()
        except OSError as exc:
            return self._failed(url, checkpoint,
                                f"cannot read its ca_file {ca_file}: {exc.strerror}")
        try:
            response, info = request_token(
                url, checkpoint.note.encode("utf-8"), ca_pem=ca_pem, post=self._post
            )
        except VerificationError as exc:  # TimestampError included
            return self._failed(url, checkpoint, str(exc))
        token = self.log.add(checkpoint=checkpoint, tsa_url=url, response=response,
                             info=info, ca_pem=ca_pem, created=self.clock())
        self._retry_at.pop(url, None)
        return StampResult(url, token=token, fresh=True)

    def _failed(self, url: str, checkpoint: Checkpoint, problem: str) -> StampResult:
        self._retry_at[url] = self._monotonic() + self.settings.retry_after_seconds
        _log.warning("no timestamp for checkpoint #%s (tree size %s) from %s: %s",
                     checkpoint.id, checkpoint.tree_size, url, problem)
        return StampResult(url, problem=problem)


def summary(results: Sequence[StampResult]) -> str:
    """One line: which TSAs stamped, which did not and why."""
    if not results:
        return "no TSA configured"
    return "; ".join(
        f"{r.tsa_url}: {'ok' if r.ok else r.problem}" for r in results
    )


# -- archiver status ---------------------------------------------------------------------

__all__ = ["StampResult", "Timestamper", "http_post", "summary"]
