"""Capture leases, on SQLite and on PostgreSQL: every capture holds one while it runs;
one whose process is gone, or whose lease ran out, is closed exactly once as
``capture.interrupted`` by the next command that has the signing key, shown by ``list``
and ``show``, and its scratch removed. (Real SIGKILLs: tests/hostile/test_kills.py.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite

from archiver import models
from archiver.archive import Archive, build_store
from archiver.capture.commit import open_request
from archiver.capture.leases import (
    LeaseKeeper,
    LeaseLost,
    ProcessIdentity,
    close_interrupted,
    process_running,
    process_start,
)
from archiver.capture.values import Capture, CaptureRequest
from archiver.clock import utc_now
from archiver.db import make_engine
from archiver.settings import load_settings
from archiver.watch.jobs import QUEUED, JobLimits, JobQueue, JobRequest


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive (browser and media views off: these tests are about the
    lease, not the views)."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url, {
        "ARCHIVER_BROWSER__ENABLED": "false", "ARCHIVER_MEDIA__ENABLED": "false"})
    runner = Cli(home, capsys)
    runner.ok("init")
    return runner


@pytest.fixture
def archive(cli: Cli) -> Iterator[Archive]:
    with cli.archive() as opened:
        yield opened


def dead_process() -> ProcessIdentity:
    """The identity of a process of this machine that ran and is gone."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start(child.pid)
        assert started is not None, "this test needs /proc"
    finally:
        child.kill()
        child.wait()
    here = ProcessIdentity.current()
    return ProcessIdentity(here.host, here.boot_id, here.pid_namespace, child.pid, started)


def abandon(archive: Archive, identity: ProcessIdentity, url: str, *,
            lease_seconds: float = 60.0, case: str | None = "Case L") -> str:
    """A capture requested by ``identity`` and left in flight: its lease and a scratch
    directory with a partial file, as a killed process leaves them."""
    request = CaptureRequest(capture_id=str(uuid.uuid4()), url=url, actor="analyst@x",
                             via="cli", requested_at=archive.clock(), case=case,
                             note="left behind")
    keeper = LeaseKeeper(archive.engine, lease_seconds=lease_seconds, clock=archive.clock,
                         identity=identity)
    scratch = archive.settings.work_dir / request.capture_id
    with archive.engine.begin() as conn:
        open_request(conn, archive.ledger, request, now=archive.clock())
        keeper.take(conn, request.capture_id, scratch)
    scratch.mkdir(parents=True)
    (scratch / "capture.warc.gz.open").write_bytes(b"half a WARC")
    return request.capture_id


def closing_entries(archive: Archive) -> Counter[str]:
    """How many of completed / failed / interrupted each requested capture has."""
    closing = ("capture.completed", "capture.failed", "capture.interrupted")
    counts: Counter[str] = Counter()
    for entry in archive.ledger.entries(actions=("capture.requested", *closing)):
        counts[entry.subject] += entry.action in closing
    return counts


def leases(archive: Archive) -> list[Any]:
    with archive.engine.connect() as conn:
        return list(conn.execute(sa.select(models.capture_leases)).all())


def test_process_liveness_tells_a_reused_pid_from_the_process_that_took_the_lease() -> None:
    """Our own pid with our start time runs; with another start time (a reused pid) it
    does not; a pid that is gone does not."""
    me = ProcessIdentity.current()
    assert me.started is not None
    assert process_running(me.pid, me.started)
    assert not process_running(me.pid, me.started + 1)
    assert not process_running(dead_process().pid, None)
    assert not process_running(0, None)


def test_a_capture_holds_a_renewed_lease_while_it_runs_and_gives_it_back(
    cli: Cli, archive: Archive, fixture_site: FixtureSite,
) -> None:
    """While a capture runs its lease names this process and its scratch directory, and
    is renewed (a renewal notices a lease taken by another command); recording the
    capture gives it back."""
    seen: list[list[Any]] = []

    class Hook:
        def prepare(self, capture: Capture) -> None:
            seen.append(leases(archive))

        def apply(self, conn: sa.Connection, capture: Capture, prepared: Any) -> None:
            pass

    capture = archive.capture(fixture_site.url("/page.html"), hook=Hook())
    assert capture.status == "completed"
    ((lease,),) = seen
    me = ProcessIdentity.current()
    assert (lease.capture_id, lease.host, lease.pid, lease.pid_started) == (
        capture.id, me.host, me.pid, me.started)
    assert lease.scratch == str(archive.settings.work_dir / capture.id)
    assert lease.lease_until > lease.taken
    assert leases(archive) == []

    keeper = LeaseKeeper(archive.engine, lease_seconds=600, clock=archive.clock)
    with archive.engine.begin() as conn:
        keeper.take(conn, "11111111-1111-4111-8111-111111111111", Path("/nowhere"))
    keeper.hold("11111111-1111-4111-8111-111111111111")
    first = leases(archive)[0].lease_until
    archive.clock = lambda: utc_now() + timedelta(seconds=30)
    keeper.clock = archive.clock
    assert keeper.renew() == []
    assert leases(archive)[0].lease_until > first
    with archive.engine.begin() as conn:  # closed by another command meanwhile
        conn.execute(sa.delete(models.capture_leases))
    assert keeper.renew() == ["11111111-1111-4111-8111-111111111111"]
    keeper.close()


def test_a_capture_whose_process_is_gone_is_closed_by_the_next_command(
    cli: Cli, archive: Archive,
) -> None:
    """The next command (here: list) closes a capture whose process died: one
    capture.interrupted naming why, an interrupted row list and show display, no lease
    and no scratch left."""
    dead = dead_process()
    capture_id = abandon(archive, dead, "http://127.0.0.1:9/post")
    (listed,) = cli.json_lines("list")  # the command closes it before it reads
    assert (listed["id"], listed["status"], listed["reason"]) == (
        capture_id, "interrupted", "process-gone")
    assert listed["case"] == "Case L"
    assert listed["note"] == "left behind"
    assert f"pid {dead.pid}" in listed["message"]
    (entry,) = archive.ledger.entries(actions=["capture.interrupted"])
    assert entry.subject == f"capture:{capture_id}"
    assert entry.payload["reason"] == "process-gone"
    assert entry.payload["pid"] == dead.pid
    assert closing_entries(archive) == {f"capture:{capture_id}": 1}
    assert leases(archive) == []
    assert not (archive.settings.work_dir / capture_id).exists()
    shown = cli.ok("show", capture_id)
    assert f"capture {capture_id}  interrupted" in shown
    assert "reason:       process-gone: its process" in shown
    assert cli("ledger", "verify")[0] == 0


def test_without_the_passphrase_the_closing_waits_for_a_command_that_has_it(
    cli: Cli, archive: Archive, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command run without the passphrase leaves an abandoned capture open (and does
    not fail); the next one with the passphrase closes it."""
    capture_id = abandon(archive, dead_process(), "http://127.0.0.1:9/a")
    monkeypatch.delenv("ARCHIVER_SIGNING__PASSPHRASE")
    assert cli.json_lines("list") == []
    assert cli("ledger", "verify")[0] == 0
    assert closing_entries(archive) == {f"capture:{capture_id}": 0}
    assert len(leases(archive)) == 1
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "not the passphrase")
    assert cli.json_lines("list") == []
    assert closing_entries(archive) == {f"capture:{capture_id}": 0}
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "correct horse battery staple")
    cli.ok("list")
    assert closing_entries(archive) == {f"capture:{capture_id}": 1}


def test_a_lease_of_another_machine_is_closed_only_once_it_ran_out(
    cli: Cli, archive: Archive,
) -> None:
    """A capture running elsewhere is left alone while its lease holds (its pid means
    nothing here), and closed as lease-expired once it ran out."""
    elsewhere = ProcessIdentity("another-host", "boot", "pid:[1]", 4242, 99)
    capture_id = abandon(archive, elsewhere, "http://127.0.0.1:9/b", lease_seconds=60)
    assert cli.json_lines("list") == []
    assert len(leases(archive)) == 1
    later = Archive.open(load_settings(), clock=lambda: utc_now() + timedelta(seconds=61))
    later.close()
    (listed,) = cli.json_lines("list")
    assert (listed["id"], listed["status"], listed["reason"]) == (
        capture_id, "interrupted", "lease-expired")
    (entry,) = archive.ledger.entries(actions=["capture.interrupted"])
    assert entry.payload["host"] == "another-host"


def test_commands_starting_at_once_close_each_capture_once(
    cli: Cli, archive: Archive,
) -> None:
    """Six commands opening the archive at the same moment (each with its own engine;
    each finds the abandoned captures before any closes them) append one
    capture.interrupted per abandoned capture, not one each."""
    dead = dead_process()
    ids = [abandon(archive, dead, f"http://127.0.0.1:9/{n}") for n in range(3)]
    start = threading.Barrier(6)
    errors: list[BaseException] = []
    settings = load_settings()

    def command() -> None:
        try:
            start.wait()
            Archive.open(settings).close()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=command) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert closing_entries(archive) == {f"capture:{i}": 1 for i in ids}
    assert cli("ledger", "verify")[0] == 0


def test_a_capture_closed_while_it_ran_is_not_recorded(
    cli: Cli, archive: Archive, fixture_site: FixtureSite,
) -> None:
    """If another command closed the capture (its lease had run out) before it was
    recorded, recording it is refused: the ledger keeps exactly one closing entry."""

    class Hook:
        def prepare(self, capture: Capture) -> None:
            with archive.engine.begin() as conn:
                assert close_interrupted(conn, archive.ledger, capture.id,
                                         reason="lease-expired", message="ran out") is not None

        def apply(self, conn: sa.Connection, capture: Capture, prepared: Any) -> None:
            raise AssertionError("never reached")

    with pytest.raises(LeaseLost, match="was closed as interrupted while it ran"):
        archive.capture(fixture_site.url("/page.html"), hook=Hook())
    (listed,) = cli.json_lines("list")
    assert (listed["status"], listed["reason"]) == ("interrupted", "lease-expired")
    assert closing_entries(archive) == {f"capture:{listed['id']}": 1}
    assert list(archive.ledger.entries(actions=["capture.completed"])) == []
    assert not (archive.settings.work_dir / listed["id"]).exists()


def test_an_error_of_the_archive_mid_capture_closes_the_capture_at_once(
    cli: Cli, fixture_site: FixtureSite,
) -> None:
    """A capture stopped by an error that is not its target's is closed as interrupted
    (reason error) by its own process before the error is raised."""

    class Broken:
        name = "broken"

        def run(self, *_args: object) -> None:
            raise OSError(28, "No space left on device")

    settings = load_settings()
    with Archive(settings, engine=make_engine(settings.database_url),
                 store=build_store(settings), fetchers=[Broken()]) as archive:  # type: ignore[list-item]
        with pytest.raises(OSError, match="No space left"):
            archive.capture(fixture_site.url("/page.html"))
        (entry,) = archive.ledger.entries(actions=["capture.interrupted"])
        assert entry.payload["reason"] == "error"
        assert "No space left on device" in entry.payload["message"]
        assert leases(archive) == []
        assert list(settings.work_dir.iterdir()) == []
        assert closing_entries(archive) == {entry.subject: 1}


@pytest.mark.parametrize("first", ["command", "daemon"])
def test_a_job_whose_capture_was_abandoned_is_closed_once_whoever_comes_first(
    cli: Cli, archive: Archive, first: str,
) -> None:
    """A worker dies mid-capture: the next command's sweep and the daemon's job recovery
    both see it; in either order, one capture.interrupted, and the job runs again under
    a new capture id."""
    queue = JobQueue(archive.engine, ledger=archive.ledger, limits=JobLimits(),
                     clock=archive.clock)
    queue.submit(JobRequest(url="http://127.0.0.1:9/job", requested_by="a", via="queue"))
    job = queue.claim("worker-that-died")
    assert job is not None
    dead = dead_process()
    request = CaptureRequest(capture_id=job.capture_id, url=job.url, actor="a", via="queue",
                             requested_at=archive.clock(), source=f"job:{job.id}")
    keeper = LeaseKeeper(archive.engine, lease_seconds=60, clock=archive.clock, identity=dead)
    with archive.engine.begin() as conn:
        open_request(conn, archive.ledger, request, now=archive.clock())
        keeper.take(conn, job.capture_id, archive.settings.work_dir / job.capture_id)
    steps = [lambda: archive.close_abandoned(),
             lambda: queue.recover(workers=["worker-that-died"], expired=False,
                                   why="its worker process is gone")]
    for step in steps if first == "command" else reversed(steps):
        step()
    again = queue.get(job.id)
    assert again.state == QUEUED
    assert again.capture_id != job.capture_id
    assert queue.attempt_outcome(job) == "interrupted"
    assert closing_entries(archive)[f"capture:{job.capture_id}"] == 1
    (entry,) = archive.ledger.entries(actions=["capture.interrupted"])
    assert entry.payload["reason"] == "process-gone"
    assert leases(archive) == []
