"""``archiver status`` lists the captures in flight (capture leases): capture id, URL,
host, pid, since when, lease until; escaped for the terminal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite

from archiver import models
from archiver.db import make_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    archive_environment(monkeypatch, tmp_path / "archive", database_url, {
        "ARCHIVER_BROWSER__ENABLED": "false", "ARCHIVER_MEDIA__ENABLED": "false",
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "300"})
    runner = Cli(tmp_path / "archive", capsys)
    runner.ok("init")
    return runner


def _until(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return value


def test_status_lists_a_capture_in_flight_then_not_once_it_is_closed(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path,
) -> None:
    """A capture of a page that never ends, held open in another process: status (human
    and --json) names its id, URL, host, pid, start and lease; once that process is
    killed, the capture is closed and status lists none."""
    url = fixture_site.url("/slow")
    with (tmp_path / "capture.log").open("wb") as log:
        capture = subprocess.Popen(
            [sys.executable, "-m", "archiver.cli", "capture", url], cwd=ROOT,
            env=dict(os.environ), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
    try:
        flying = _until(lambda: cli.json("status")["in_flight"]["count"] == 1
                        and cli.json("status")["in_flight"], "the capture's lease")
        (shown,) = flying["captures"]
        assert (shown["url"], shown["host"], shown["pid"]) == (url, socket.gethostname(),
                                                               capture.pid)
        assert shown["since"] < shown["lease_until"]
        text = cli.ok("status")
        assert "capturing: 1" in text
        assert (f"  capture {shown['capture_id']}  {socket.gethostname()} pid {capture.pid}  "
                f"since {shown['since']}  lease until ") in text
        assert text.count(url) == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(capture.pid, signal.SIGKILL)
        capture.wait(timeout=30)
    report = cli.json("status")
    assert report["in_flight"] == {"count": 0, "captures": []}
    assert "capturing: 0" in cli.ok("status")


def test_status_escapes_what_a_lease_row_says(cli: Cli) -> None:
    """A lease row holding control characters (a database row is not to be trusted):
    the human status shows them escaped, --json exactly; a lease with no
    capture.requested says so instead of a URL."""
    hostile = "host\x1b]0;owned\x07\nforged line"
    engine = make_engine(cli.settings().database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(models.capture_leases).values(
                capture_id="00000000-0000-4000-8000-000000000001", host=hostile,
                boot_id=None, pid_namespace=None, pid=4242, pid_started=None,
                scratch="/nowhere", taken="2026-01-01T00:00:00.000000Z",
                lease_until="2999-01-01T00:00:00.000000Z"))
    finally:
        engine.dispose()
    (shown,) = cli.json("status")["in_flight"]["captures"]
    assert (shown["host"], shown["url"], shown["pid"]) == (hostile, "", 4242)
    text = cli.ok("status")
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\nforged line" not in text
    assert ("  capture 00000000-0000-4000-8000-000000000001  host\\x1b]0;owned\\x07\\x0aforged "
            "line pid 4242  since 2026-01-01T00:00:00.000000Z  lease until "
            "2999-01-01T00:00:00.000000Z  (URL not on the ledger)") in text
