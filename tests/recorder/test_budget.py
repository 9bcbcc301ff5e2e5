"""The capture budget: one per capture, shared by every fetcher's threads, never passed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixture_site import BIG_SIZE, FixtureSite

from archiver.errors import BudgetExhausted
from archiver.recorder import OutgoingRequest, RecorderOptions, open_session
from archiver.recorder.budget import CaptureBudget

MiB = 1024 * 1024


def budget(**limits: float) -> CaptureBudget:
    values: dict[str, float] = {"max_requests": 100, "max_total_bytes": 10 * MiB,
                                "seconds": 60.0, "max_subresources": 10}
    values.update(limits)
    return CaptureBudget(max_requests=int(values["max_requests"]),
                         max_total_bytes=int(values["max_total_bytes"]),
                         seconds=values["seconds"],
                         max_subresources=int(values["max_subresources"]))


def test_requests_taken_from_many_threads_never_pass_the_cap() -> None:
    """16 threads asking 100 times each of a budget of 500: exactly 500 granted, the
    other 1,100 refused (and counted) before anything is sent."""
    spent = budget(max_requests=500)
    granted = refused = 0
    lock = threading.Lock()

    def ask(_: int) -> None:
        nonlocal granted, refused
        for _ in range(100):
            try:
                spent.take_request("browser", "http://example.test/")
                ok = True
            except BudgetExhausted:
                ok = False
            with lock:
                granted += ok
                refused += not ok

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ask, range(16)))
    assert (granted, refused) == (500, 1100)
    facts = spent.as_json()
    assert facts["spent"]["requests_by_role"] == {"browser": 500}
    assert facts["refused"] == {"capture.max_requests": 1100}


def test_bytes_metered_from_many_threads_never_pass_the_total() -> None:
    """Pieces metered at once by 8 threads: what is granted adds up to the total, no more."""
    spent = budget(max_total_bytes=1_000_000)
    grants: list[int] = []
    lock = threading.Lock()

    def feed(_: int) -> None:
        for _ in range(1000):
            got = spent.meter(333)
            with lock:
                grants.append(got)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(feed, range(8)))
    assert sum(grants) == spent.bytes_received == 1_000_000
    assert spent.exhausted() == "capture.max_total_bytes"


def test_a_page_named_resource_is_counted_once_across_fetchers() -> None:
    """max_subresources counts distinct URLs: one the page fetcher took is free for the
    media fetcher; a new one past the allowance is not."""
    spent = budget(max_subresources=2)
    assert spent.take_resource("http://a.test/1.png")
    assert spent.take_resource("http://a.test/2.png")
    assert spent.take_resource("http://a.test/1.png")  # the media fetcher, same image
    assert not spent.take_resource("http://a.test/3.png")
    assert spent.resources_left() == 0


def test_what_is_left_out_is_said_as_counts() -> None:
    spent = budget(max_subresources=300)
    spent.skip("media", "page images", "capture.max_subresources", 99_700)
    spent.skip("media", "page images", "capture.max_subresources", 0)
    spent.skip("media", "media URLs", "capture.deadline_seconds", 2)
    assert spent.skipped_text("media") == (
        "skipped 99,700 page images: capture.max_subresources (300) reached; "
        "skipped 2 media URLs: capture.deadline_seconds (60 s) reached")
    assert spent.skipped_text("page") is None


def test_the_deadline_refuses_every_request_after_it() -> None:
    spent = budget(seconds=1e-9)
    with pytest.raises(BudgetExhausted, match=r"capture\.deadline_seconds \(1e-09 s\) reached"):
        spent.take_request("page", "http://example.test/")


def test_exchanges_at_once_share_the_byte_budget(fixture_site: FixtureSite,
                                                 tmp_path: Path) -> None:
    """Four 3 MiB responses fetched at once (as the browser does) within a 4 MiB budget:
    together they receive 4 MiB at most, each one cut where the budget ran out."""
    options = RecorderOptions(allow_private_networks=True, timeout_seconds=30,
                              max_total_bytes=4 * MiB)
    with open_session(tmp_path / "c.warc.gz", options=options, warcinfo={}) as session:
        def fetch(i: int) -> int:
            done = session.exchange(OutgoingRequest(url=fixture_site.url(f"/big?{i}")),
                                    role="browser")
            return done.summary.response_bytes

        with ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(fetch, range(4)))
        session.publish()
    assert sum(sizes) <= 4 * MiB
    assert session.total_bytes == sum(sizes)
    assert sum(1 for s in sizes if s < BIG_SIZE) >= 2  # at least two were cut


def test_exchanges_at_once_share_the_request_budget(fixture_site: FixtureSite,
                                                    tmp_path: Path) -> None:
    """Twelve requests at once within a cap of five: five are recorded, seven refused
    before any connection."""
    options = RecorderOptions(allow_private_networks=True, timeout_seconds=30,
                              max_requests=5)
    with open_session(tmp_path / "c.warc.gz", options=options, warcinfo={}) as session:
        def fetch(i: int) -> str:
            try:
                session.exchange(OutgoingRequest(url=fixture_site.url(f"/app.js?{i}")),
                                 role="browser")
            except BudgetExhausted as exc:
                return exc.reason
            return "ok"

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(fetch, range(12)))
        session.publish()
    assert sorted(results) == ["budget"] * 7 + ["ok"] * 5
    assert len(session.exchanges) == 5
