"""The polling schedule (APScheduler with its SQLAlchemy job store in the archive's
database) and the one-scheduler-per-database lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from daemon_fixtures import Cli, wait_until

from archiver.archive import Archive
from archiver.db import make_engine
from archiver.watch.scheduler import SchedulerLock, WatchScheduler
from archiver.watch.watches import Watchlist, WatchSpec


class RecordingPoller:
    """Stands in for the Poller: counts polls, optionally holds each one."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.polls: Counter[int] = Counter()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def poll(self, watch_id: int) -> None:
        with self._lock:
            self.polls[watch_id] += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.hold)
        with self._lock:
            self.running -= 1


@pytest.fixture
def archive(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    monkeypatch.setenv("ARCHIVER_WATCH__MIN_EVERY", "0.1s")
    with cli.archive() as opened:
        yield opened


def make_scheduler(archive: Archive, poller: RecordingPoller) -> WatchScheduler:
    return WatchScheduler(database_url=archive.settings.database_url, engine=archive.engine,
                          poller=poller, poll_threads=4)  # type: ignore[arg-type]


def add(archive: Archive, url: str, every: float = 0.5) -> int:
    return Watchlist(archive).add(WatchSpec(url=url, kind="feed", every=every)).id


def test_watches_are_polled_and_changes_are_picked_up(archive: Archive) -> None:
    """Active watches are polled on their interval; pausing removes the schedule at the
    next sync, resuming restores it; a watch added meanwhile is picked up."""
    first = add(archive, "https://a.example/feed")
    poller = RecordingPoller()
    scheduler = make_scheduler(archive, poller)
    scheduler.start()
    try:
        wait_until(lambda: poller.polls[first] >= 2, timeout=10, what="two polls")
        Watchlist(archive).pause(first)
        second = add(archive, "https://b.example/feed")
        assert scheduler.sync() == 2
        assert set(scheduler.next_runs()) == {second}
        paused_at = poller.polls[first]
        wait_until(lambda: poller.polls[second] >= 2, timeout=10, what="the new watch")
        assert poller.polls[first] <= paused_at + 1  # at most one poll was in flight
        Watchlist(archive).resume(first)
        scheduler.sync()
        assert set(scheduler.next_runs()) == {first, second}
        assert scheduler.sync() == 0
    finally:
        scheduler.shutdown(wait=True)


def test_schedules_persist_and_a_restart_reconciles(archive: Archive) -> None:
    """Stopped and started again, the scheduler keeps the stored jobs (same next run
    times) and drops the job of a watch removed while it was stopped."""
    keep = add(archive, "https://a.example/feed", every=3600)
    gone = add(archive, "https://b.example/feed", every=3600)
    poller = RecordingPoller()
    scheduler = make_scheduler(archive, poller)
    scheduler.start()
    wait_until(lambda: poller.polls[keep] == 1, what="the first poll of a new watch")
    wait_until(lambda: scheduler.next_runs()[keep].timestamp() > time.time() + 3000,
               what="the next poll to be an interval away")
    before = scheduler.next_runs()
    scheduler.shutdown(wait=True)
    Watchlist(archive).remove(gone)
    again = make_scheduler(archive, RecordingPoller())
    again.start()
    try:
        after = again.next_runs()
        assert set(after) == {keep}
        assert after[keep] == before[keep]
    finally:
        again.shutdown(wait=True)


def test_a_slow_poll_never_overlaps_the_next_run_of_the_same_watch(archive: Archive) -> None:
    """max_instances=1: a watch due every 0.2 s whose poll takes 1 s is never polled twice
    at once (the runs in between are skipped, not queued up)."""
    add(archive, "https://a.example/feed", every=0.2)
    poller = RecordingPoller(hold=1.0)
    scheduler = make_scheduler(archive, poller)
    scheduler.start()
    try:
        wait_until(lambda: sum(poller.polls.values()) >= 3, timeout=15, what="three polls")
    finally:
        scheduler.shutdown(wait=True)
    assert poller.most_at_once == 1


def test_one_scheduler_per_database(archive: Archive) -> None:
    """The lock is exclusive across connections (and processes): a second taker is
    refused until the first releases it."""
    url = archive.settings.database_url
    other = make_engine(url)
    first, second = SchedulerLock(url, archive.engine), SchedulerLock(url, other)
    try:
        assert first.acquire()
        assert first.alive()
        assert not second.acquire()
        first.release()
        assert second.acquire()
        assert not first.acquire()
    finally:
        first.release()
        second.release()
        other.dispose()


@pytest.mark.postgres
def test_postgres_lock_is_per_archive_schema(postgres_url: str) -> None:
    """Two archives in two schemas of one PostgreSQL database each get their scheduler."""
    base, _, _ = postgres_url.partition("?")
    other_schema = "t_other_" + str(time.monotonic_ns())[-8:]
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{other_schema}"'))
    other_url = f"{base}?options=-csearch_path%3D{other_schema}"
    one, two = make_engine(postgres_url), make_engine(other_url)
    try:
        first, second = SchedulerLock(postgres_url, one), SchedulerLock(other_url, two)
        assert first.acquire()
        assert second.acquire()
        first.release()
        second.release()
    finally:
        one.dispose()
        two.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{other_schema}" CASCADE'))
        admin.dispose()
