"""The daemon's scheduled fixity audit (``audit.every``, ``audit.sample``), end to end:
a real ``archiver daemon`` subprocess, two local stores, a copy damaged in one."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from typing import Any

import pytest
from archive_cli import Cli
from daemon_fixtures import Daemon, WatchedSite, wait_until


def _entries(cli: Cli, action: str) -> list[Any]:
    with cli.archive() as archive:
        return list(archive.ledger.entries(actions=[action]))


def test_the_daemon_audits_on_schedule_and_repairs_a_damaged_copy(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With audit.every = 2 s the daemon audits at once, then again every 2 s; the WARC
    damaged in the replica store is named (fixity.failed) and repaired from the main
    store (fixity.repaired), and the audits are recorded as scheduled."""
    replica = cli.home / "replica"
    monkeypatch.setenv("ARCHIVER_STORAGE__STORES", json.dumps(
        [{"kind": "local"}, {"kind": "local", "path": str(replica)}]))
    monkeypatch.setenv("ARCHIVER_AUDIT__EVERY", "2s")
    (post,) = watched_site.publish("rss")
    capture = cli.capture(post)
    assert capture["status"] == "completed", capture
    (warc,) = [a for a in capture["artifacts"] if a["name"] == "capture.warc.gz"]
    (damaged,) = [p for p in replica.rglob(warc["sha256"]) if p.is_file()]
    os.chmod(damaged, stat.S_IRUSR | stat.S_IWUSR)
    damaged.write_bytes(b"not the evidence")

    daemon = start_daemon("--workers", "0")
    repaired = wait_until(lambda: _entries(cli, "fixity.repaired"), timeout=60,
                          what="the scheduled audit to repair the copy")
    assert repaired[0].payload["store"] == f"local:{replica.resolve()}"
    assert repaired[0].payload["from"] == f"local:{(cli.home / 'blobs').resolve()}"
    assert repaired[0].actor == "service:archiver"
    assert damaged.read_bytes() == cli.blob_path(warc["sha256"]).read_bytes()
    checked = wait_until(lambda: len(_entries(cli, "fixity.checked")) >= 2 and
                         _entries(cli, "fixity.checked"), timeout=60,
                         what="a second scheduled audit")
    assert {e.payload["kind"] for e in checked} == {"scheduled"}
    assert checked[0].payload["damaged"] == 1
    assert checked[0].payload["repaired"] == 1
    assert checked[1].payload["damaged"] == 0
    assert daemon.events("audit.finished")
    assert daemon.terminate() == 0
    status = cli.json_lines("status")[0]["audit"]
    assert status["last"]["kind"] == "scheduled"
    assert status["last"]["ok"] is True
