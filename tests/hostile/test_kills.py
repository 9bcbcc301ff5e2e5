"""SIGKILL at random moments (family ``kills``), on SQLite and on PostgreSQL.

``archiver capture`` runs as a real subprocess against the local fixture site, on pages
that take a second to answer, pages with subresources and a video (yt-dlp and ffmpeg), so
kills land in every stage: fetching, the media fetcher, sealing, storing, committing,
between captures. The daemon is killed with its workers while they capture. After each
kill the next command runs, then the closure check: ``archiver ledger verify`` passes;
every ``capture.requested`` has exactly one of completed, failed or interrupted; every
capture the ledger names is listed with that status; no lease and no scratch directory
is left; every blob a ``capture.completed`` names is stored intact.

Trials, per database: ``hostile_suite.trials("kills", 3)`` kills of the CLI and a third
as many of the daemon (which starts worker processes: seconds each), seeded by
``hostile_suite.seed()`` (the trial's seed is in its test id).
The tools a killed capture started (shell, timeout, ffmpeg, ffprobe) die with it
(``setpriv --pdeathsig``, checked by ``test_no_tool_outlives_a_sigkilled_capture``);
the tests still stop its whole session after a kill, so that a failure there cannot
leave processes behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hostile_suite
import pytest
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite

from archiver import models
from archiver.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
SEED = hostile_suite.seed()
CLI_TRIALS = hostile_suite.trials("kills", 3)
DAEMON_TRIALS = max(1, CLI_TRIALS // 3)
MAX_DELAY_SECONDS = 2.0
CLOSING = ("capture.completed", "capture.failed", "capture.interrupted")
STATUS_OF = {"capture.completed": "completed", "capture.failed": "failed",
             "capture.interrupted": "interrupted"}


def wait_until(predicate: Callable[[], Any], *, timeout: float = 60.0,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive; the browser view off (Chromium would cost seconds per
    capture on a shared machine), the media fetcher on, one capture at a time."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url, {
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_CAPTURE__CONCURRENCY": "1",
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "120",  # a loaded machine is no reason to fail
        "ARCHIVER_DAEMON__WORKERS": "2",
        "ARCHIVER_DAEMON__LEASE_SECONDS": "3",
        "ARCHIVER_DAEMON__IDLE_POLL_SECONDS": "0.1",
        "ARCHIVER_DAEMON__DRAIN_SECONDS": "20",
        "ARCHIVER_DAEMON__PER_HOST_CONCURRENCY": "8",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
        "ARCHIVER_DAEMON__LOG_FORMAT": "json",
        "ARCHIVER_REVISIT__ENABLED": "false",
    })
    runner = Cli(home, capsys)
    runner.ok("init")
    return runner


class Process:
    """``python -m archiver.cli ARGS`` in a session of its own, output to a file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "archiver.cli", *args], cwd=ROOT, env=dict(os.environ),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def kill(self, *, session: bool) -> None:
        """SIGKILL the process (and, with ``session``, everything it started), reap it,
        then stop whatever it left running in its session."""
        with contextlib.suppress(ProcessLookupError):
            if session:
                os.killpg(self.popen.pid, signal.SIGKILL)
            else:
                os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _recorded(cli: Cli) -> int:
    """How many captures the ledger closes (read without opening the archive)."""
    entries = sa.table("ledger_entries", sa.column("action"))
    engine = make_engine(cli.settings().database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(entries)
                                    .where(entries.c.action.in_(CLOSING))).scalar_one())
    finally:
        engine.dispose()


def _scratch(cli: Cli) -> list[str]:
    work = cli.home / "work"
    return sorted(p.name for p in work.iterdir()) if work.is_dir() else []


def check_closure(cli: Cli) -> Counter[str]:
    """The closure check (see the module's docstring); returns the captures per status."""
    code, out, err = cli("ledger", "verify")
    assert code == 0, out + err
    listed = {c["id"]: c["status"] for c in cli.json_lines("list")}
    statuses: Counter[str] = Counter()
    with cli.archive() as archive:
        closings: dict[str, list[str]] = {}
        for entry in archive.ledger.entries(actions=("capture.requested", *CLOSING)):
            capture_id = entry.subject.removeprefix("capture:")
            if entry.action == "capture.requested":
                closings.setdefault(capture_id, [])
            else:
                closings.setdefault(capture_id, []).append(entry.action)
            if entry.action == "capture.completed":
                for artifact in entry.payload["artifacts"]:
                    digest, size = hashlib.sha256(), 0
                    with archive.store.open(artifact["sha256"]) as stream:
                        while chunk := stream.read(1 << 20):
                            digest.update(chunk)
                            size += len(chunk)
                    assert (digest.hexdigest(), size) == (artifact["sha256"], artifact["size"])
        for capture_id, actions in closings.items():
            assert len(actions) == 1, f"capture {capture_id} closed by {actions}"
            assert listed.get(capture_id) == STATUS_OF[actions[0]], capture_id
            statuses[STATUS_OF[actions[0]]] += 1
        with archive.engine.connect() as conn:
            assert conn.execute(sa.select(models.capture_leases)).all() == []
    assert _scratch(cli) == []
    return statuses


@pytest.mark.hostile("kills")
def test_a_capture_killed_in_flight_is_closed_by_the_next_command(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path,
) -> None:
    """SIGKILL while the page is still arriving: the next command (list) closes the
    capture as interrupted (its process is gone), removes its scratch, lists it, and
    show says interrupted."""
    capture = Process(tmp_path / "capture.log", "capture", fixture_site.url("/slow"))
    try:
        wait_until(lambda: _scratch(cli) or capture.popen.poll() is not None,
                   what="the capture to start")
        assert capture.popen.poll() is None, capture.output()
        (name,) = _scratch(cli)
    finally:
        capture.kill(session=False)
    (listed,) = cli.json_lines("list")
    assert (listed["id"], listed["status"], listed["reason"]) == (
        name, "interrupted", "process-gone")
    assert f"pid {capture.popen.pid}" in listed["message"]
    assert f"capture {name}  interrupted" in cli.ok("show", name)
    assert check_closure(cli) == {"interrupted": 1}


@pytest.mark.hostile("kills")
@pytest.mark.parametrize("trial", range(CLI_TRIALS), ids=lambda n: f"seed{SEED}-trial{n}")
def test_sigkill_of_archiver_capture_at_a_random_moment(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path, trial: int,
) -> None:
    """Four captures (a slow page, a page with subresources and a video, a video, another
    slow page); SIGKILL at a random moment: a random time after a random number of them
    were recorded (whatever the machine's speed, kills land in every capture and stage).
    The next command closes what was in flight."""
    rng = random.Random(f"{SEED}/cli/{trial}")
    urls = [fixture_site.url(f"/delayed/{trial}-a"), fixture_site.url("/page.html"),
            fixture_site.url("/clip.mp4"), fixture_site.url(f"/delayed/{trial}-b")]
    rng.shuffle(urls)
    after, delay = rng.randrange(len(urls)), rng.uniform(0.0, MAX_DELAY_SECONDS)
    capture = Process(tmp_path / "capture.log", "capture", *urls)
    try:
        wait_until(lambda: (_scratch(cli) and _recorded(cli) >= after)
                   or capture.popen.poll() is not None,
                   timeout=180, what=f"{after} captures to be recorded")
        time.sleep(delay)  # the random moment of this trial
    finally:
        capture.kill(session=False)
    statuses = check_closure(cli)
    assert sum(statuses.values()) >= 1
    assert statuses["failed"] == 0, statuses


def _daemon_running(cli: Cli, pid: int) -> bool:
    """Whether daemon ``pid`` has registered itself (read without opening the archive)."""
    processes = sa.table("daemon_processes", sa.column("role"), sa.column("pid"),
                         sa.column("state"))
    engine = make_engine(cli.settings().database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(processes).where(
                processes.c.role == "daemon", processes.c.pid == pid,
                processes.c.state == "running")).scalar_one() > 0
    finally:
        engine.dispose()


def _jobs(cli: Cli) -> list[dict[str, Any]]:
    return cli.json_lines("jobs")


@pytest.mark.hostile("kills")
@pytest.mark.parametrize("trial", range(DAEMON_TRIALS), ids=lambda n: f"seed{SEED}-trial{n}")
def test_sigkill_of_the_daemon_while_its_workers_capture(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path, trial: int,
) -> None:
    """Four queued captures, two workers; the daemon and its workers SIGKILLed at a random
    moment once captures are in flight. The next command closes the dead workers'
    captures; the next daemon recovers their jobs without closing anything twice and
    completes every job."""
    rng = random.Random(f"{SEED}/daemon/{trial}")
    urls = [fixture_site.url(f"/delayed/d{trial}-{n}") for n in range(2)]
    urls += [fixture_site.url(f"/page.html?d{trial}"), fixture_site.url(f"/clip.mp4?d{trial}")]
    rng.shuffle(urls)
    cli.json_lines("capture", "--queue", *urls)
    after, delay = rng.randrange(len(urls) - 1), rng.uniform(0.0, MAX_DELAY_SECONDS)
    daemon = Process(tmp_path / "daemon-1.log", "daemon")
    try:
        wait_until(lambda: (_scratch(cli) and _recorded(cli) >= after)
                   or daemon.popen.poll() is not None,
                   timeout=180, what=f"a worker to capture after {after} were recorded")
        assert daemon.popen.poll() is None, daemon.output()
        time.sleep(delay)  # the random moment of this trial
    finally:
        daemon.kill(session=True)
    statuses = check_closure(cli)
    assert statuses["failed"] == 0, statuses
    second = Process(tmp_path / "daemon-2.log", "daemon")
    try:
        wait_until(lambda: all(j["state"] in ("done", "failed") for j in _jobs(cli)),
                   timeout=300, what="every job to finish")
        # The jobs may all have been done before the first kill: stop the second daemon
        # once it runs (registered), not while Python is still starting it.
        wait_until(lambda: _daemon_running(cli, second.popen.pid)
                   or second.popen.poll() is not None,
                   timeout=120, what="the second daemon to run")
        second.popen.send_signal(signal.SIGTERM)
        assert second.popen.wait(timeout=60) == 0, second.output()
    finally:
        second.kill(session=True)
    jobs = _jobs(cli)
    assert {j["state"] for j in jobs} == {"done"}, [(j["url"], j["last_error"]) for j in jobs]
    final = check_closure(cli)
    assert final["completed"] == len(urls)
    assert final["interrupted"] == statuses["interrupted"]
    # Each interrupted capture is an interrupted attempt of its job (an attempt killed
    # before its capture was requested is one too, with nothing on the ledger).
    with cli.archive() as archive, archive.engine.connect() as conn:
        outcomes = Counter(conn.execute(sa.select(models.job_attempts.c.outcome)).scalars())
    assert outcomes["completed"] == len(urls)
    assert outcomes["interrupted"] >= statuses["interrupted"]
    assert set(outcomes) <= {"completed", "interrupted"}


def _marked(mark: str) -> list[str]:
    """Live processes (not zombies) whose environment holds ``mark``: ``name pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if mark.encode() in environ.split(b"\0") and stat.rpartition(")")[2].split()[0] != "Z":
            found.append(f"{stat[stat.index('(') + 1:stat.rindex(')')]} {entry.name}")
    return found


@pytest.mark.hostile("kills")
@pytest.mark.parametrize("hangs", ["ffmpeg", "ffprobe"])
def test_no_tool_outlives_a_sigkilled_capture(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    hangs: str,
) -> None:
    """A capture of a video whose ffmpeg (or ffprobe) runs long, ours or yt-dlp's: the
    real program, reading a FIFO nobody writes. SIGKILL of archiver capture (not of its
    session): the kernel stops every tool it started (shell, timeout, program), long
    before the tool's own time limit."""
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        real = os.path.realpath(f"/usr/bin/{name}")
        hang = f'exec {real} -v error -i {fifo}' if name == "ffprobe" else (
            f"exec {real} -nostdin -v error -i {fifo} -f null -")
        (shims / name).write_text(
            "#!/bin/sh\n"
            f'case "$1" in -version|-h|-buildconf) exec {real} "$@" ;; esac\n'
            + (hang if name == hangs else f'exec {real} "$@"') + "\n")
        (shims / name).chmod(0o700)
    mark = f"ORPHAN_TEST_MARK={os.getpid()}-{hangs}"
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv(*mark.split("=", 1))
    capture = Process(tmp_path / "capture.log", "capture", fixture_site.url("/clip.mp4"))
    try:
        wait_until(lambda: any(p.startswith(f"{hangs} ") for p in _marked(mark))
                   or capture.popen.poll() is not None,
                   timeout=120, what=f"{hangs} to start")
        assert capture.popen.poll() is None, capture.output()
        os.kill(capture.popen.pid, signal.SIGKILL)
        capture.popen.wait(timeout=30)
        wait_until(lambda: not _marked(mark), timeout=30,
                   what="every tool the capture started to die with it")
    finally:
        capture.kill(session=True)
    assert check_closure(cli) == {"interrupted": 1}

