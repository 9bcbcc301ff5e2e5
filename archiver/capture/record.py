"""Record: every fetcher of a capture, into the capture's one WARC.

The page fetcher goes first (a failure of the page is a failure of the capture: it
raises); then the browser, whose view hands the media URLs it saw to the media fetcher,
which runs last. Each of those reports its outcome instead of raising. The WARC is
published (fsynced, renamed into place) only when every fetcher is done, so nothing
half-written is ever sealed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from archiver.capture.fetcher import Fetcher
from archiver.capture.page import PageFetcher
from archiver.capture.values import CaptureRequest, Recording, StagedFile
from archiver.clock import Clock
from archiver.recorder import RecorderOptions, open_session
from archiver.recorder.addresses import AddressPolicy
from chain_of_custody.manifest import Artifact

WARC_FILE = "capture.warc.gz"


def record(
    request: CaptureRequest,
    *,
    page: PageFetcher,
    fetchers: Sequence[Fetcher],
    options: RecorderOptions,
    warcinfo: Mapping[str, str],
    workdir: Path,
    clock: Clock,
    address_policy: AddressPolicy,
) -> Recording:
    """Record ``request.url`` into ``workdir/capture.warc.gz``.

    Raises ``archiver.errors.CaptureError`` subclasses when the page itself cannot be
    recorded (refused, timeout, too large, TLS, network): the capture then fails, and no
    WARC is left behind.
    """
    path = workdir / WARC_FILE
    with open_session(path, options=options, warcinfo=warcinfo, clock=clock,
                      address_policy=address_policy) as session:
        captured = page.fetch(session, request.url)
        reports = tuple(fetcher.run(session, captured, workdir) for fetcher in fetchers)
        ended = clock()
        budget = session.budget.as_json()
        digest = session.publish()
    return Recording(
        page=captured, exchanges=tuple(session.exchanges),
        warnings=session.listed_warnings(), started=session.started, ended=ended,
        warc=StagedFile(Artifact(WARC_FILE, "warc", "application/warc", digest), path=path),
        reports=reports, urls=dict(session.url_counts), budget=budget,
    )
