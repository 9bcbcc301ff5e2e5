"""``archiver daemon`` end to end, as a real subprocess, on SQLite and on PostgreSQL.

The watched site gains posts on every source while the daemon runs, then takes some
down; the judges are the archive's own CLI (``list``, ``gone``, ``ledger verify``,
``verify``) and the database rows.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from daemon_fixtures import Cli, Daemon, WatchedSite, wait_until

from archiver import models


def _captures(cli: Cli) -> list[dict[str, Any]]:
    return cli.json_lines("list")


def _add_every_source(cli: Cli, site: WatchedSite) -> None:
    for url, kind, extra in (
        (site.url("/feeds/rss.xml"), "auto", ()),
        (site.url("/feeds/atom.xml"), "feed", ()),
        (site.url("/users/alice"), "auto", ()),
        (site.url("/profile/alice.test"), "auto", ()),
        (site.url("/s/evidence_chan"), "auto", ()),
        (site.url("/links.html"), "page", ("--pattern", r"/articles/\d+$")),
        (site.url("/channel.html"), "channel", ()),
    ):
        cli.ok("watch", "add", url, "--every", "1s", "--kind", kind, "--case", "Case W", *extra)


def _watch_captures(cli: Cli) -> Counter[str]:
    """Captures made for watches, by URL (an attempt interrupted and run again, e.g.
    when a loaded machine let a job's lease run out, made none)."""
    return Counter(c["url"] for c in _captures(cli)
                   if c["requested_via"] == "watch" and c["status"] != "interrupted")


def test_daemon_captures_every_new_post_once_and_records_every_takedown(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """Seven sources gain posts while the daemon runs: each post is captured exactly once;
    posts that turn 404, 410 or into a removal page become target.gone entries naming
    the revisit capture that recorded it; the ledger and every capture verify."""
    site = watched_site
    first = site.publish_everywhere(2)
    _add_every_source(cli, site)
    kinds = {w["url"]: w["kind"] for w in cli.json_lines("watch", "list")}
    assert kinds[site.url("/feeds/rss.xml")] == "feed"
    assert kinds[site.url("/users/alice")] == "activitypub"
    assert kinds[site.url("/profile/alice.test")] == "bluesky"
    assert kinds[site.url("/s/evidence_chan")] == "telegram"
    daemon = start_daemon()
    wait_until(lambda: set(first) <= set(_watch_captures(cli)), timeout=60,
               what="the posts present at start to be captured")
    later = site.publish_everywhere(3)
    wait_until(lambda: set(later) <= set(_watch_captures(cli)), timeout=60,
               what="posts published while the daemon runs to be captured")
    downs = {later[0]: "404", later[3]: "410", later[6]: "removal", later[9]: "404"}
    for url, how in downs.items():
        site.take_down(url, how)

    def gone_urls() -> set[str]:
        return {g["url"] for g in cli.json_lines("gone", "--case", "Case W")}

    wait_until(lambda: set(downs) <= gone_urls(), timeout=60, what="every takedown recorded")
    assert daemon.terminate() == 0

    captured = _watch_captures(cli)
    assert set(captured) == site.all_post_urls()
    assert max(captured.values()) == 1, [u for u, n in captured.items() if n > 1]
    gone = {g["url"]: g for g in cli.json_lines("gone")}
    assert set(gone) == set(downs)
    by_id = {c["id"]: c for c in _captures(cli)}
    for url, how in downs.items():
        record = gone[url]
        evidence = by_id[record["capture_id"]]
        assert evidence["requested_via"] == "revisit"
        assert evidence["status"] == "completed"
        assert record["reason"] == {"404": "http-404", "410": "http-410",
                                    "removal": "removal-page"}[how]
        if how != "removal":
            assert evidence["http_status"] == int(how)
        assert record["manifest_sha256"] == evidence["manifest_sha256"]
        assert by_id[record["revisit_of"]]["url"] == url
        assert by_id[record["revisit_of"]]["http_status"] == 200
    assert cli("ledger", "verify")[0] == 0
    for capture_id in {g["capture_id"] for g in gone.values()}:
        assert cli("verify", capture_id)[0] == 0
    with cli.archive() as archive:
        queued = [e for e in archive.ledger.entries(actions=["capture.queued"])]
        assert {e.payload["url"] for e in queued} >= site.all_post_urls()
        assert all(e.payload["via"] == "watch" for e in queued)
    assert not any((cli.home / "work").iterdir())


def test_two_cases_watching_one_feed_each_get_every_post(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """Case A and Case B watch the same feed: the daemon polls both watches and captures
    each post once for each case, filed under that case and made by that case's watch."""
    site = watched_site
    url = site.url("/feeds/rss.xml")
    watch_of = {case: cli.json_lines("watch", "add", url, "--every", "1s", "--case", case)[0]
                ["id"] for case in ("Case A", "Case B")}
    posts = site.publish("rss", 2)
    daemon = start_daemon()

    def filed() -> Counter[tuple[str, str]]:
        return Counter((c["url"], c["case"]) for c in _captures(cli)
                       if c["requested_via"] == "watch" and c["status"] == "completed")

    wanted = {(post, case) for post in posts for case in watch_of}
    wait_until(lambda: wanted <= set(filed()), timeout=60,
               what="each post captured for each case")
    assert daemon.terminate() == 0
    assert filed() == Counter(wanted)
    with cli.archive() as archive:
        requested = [e for e in archive.ledger.entries(actions=["capture.requested"])
                     if e.payload.get("via") == "watch"]
    assert sorted((e.payload["url"], e.payload["case"], e.payload["source"])
                  for e in requested) == sorted(
        (post, case, f"watch:{watch_of[case]}") for post, case in wanted)


def test_status_reports_queue_processes_and_polls(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """status --json while the daemon runs: its processes with heartbeats, the scheduler,
    watches and their last polls; a failing watch is listed with its error."""
    watched_site.publish("rss")
    cli.ok("watch", "add", watched_site.url("/feeds/rss.xml"), "--every", "1s")
    cli.ok("watch", "add", watched_site.url("/no-such-feed.xml"), "--every", "1s",
           "--kind", "feed")
    daemon = start_daemon()

    def report() -> dict[str, Any] | None:
        data = cli.json_lines("status")[0]
        ready = (len(data["processes"]) == 3 and data["scheduler"]
                 and data["watches"]["failing"] == 1 and data["queue"]["done"] >= 1)
        return data if ready else None

    data = wait_until(report, timeout=30, what="a full status report")
    roles = Counter(p["role"] for p in data["processes"])
    assert roles == {"daemon": 1, "worker": 2}
    assert data["scheduler"] == next(p["id"] for p in data["processes"] if p["role"] == "daemon")
    (failing,) = data["failing_watches"]
    assert "HTTP 404" in failing["error"]
    text = cli.ok("status")
    assert "processes: 3" in text
    assert "1 failing" in text
    assert daemon.terminate() == 0
    assert cli.json_lines("status")[0]["processes"] == []


def test_sigterm_drains_the_capture_in_flight(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """SIGTERM while a capture is in flight: the daemon stops polling, lets the capture
    finish (within drain_seconds), then exits 0; the capture is completed and sealed."""
    daemon = start_daemon("--workers", "1")
    (queued,) = cli.json_lines("capture", "--queue", watched_site.url("/slow/1"))
    wait_until(lambda: watched_site.hit_count("/slow/1") >= 1, what="the capture to start")
    daemon.process.send_signal(signal.SIGTERM)
    wait_until(lambda: daemon.events("daemon.draining"), what="the daemon to start draining")
    watched_site.gate.set()
    assert daemon.wait() == 0
    capture = cli.json_lines("show", queued["job"]["capture_id"])[0]
    assert capture["status"] == "completed"
    (job,) = cli.json_lines("jobs")
    assert job["state"] == "done"
    assert cli("ledger", "verify")[0] == 0
    assert not daemon.events("daemon.drain_deadline")


def test_drain_deadline_stops_a_stuck_capture_and_its_job_is_run_again(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon],
    monkeypatch: Any,
) -> None:
    """A capture that outlasts drain_seconds is killed at the deadline; its job is put
    back at once (capture.interrupted on the ledger) and the next daemon completes it."""
    monkeypatch.setenv("ARCHIVER_DAEMON__DRAIN_SECONDS", "1")
    daemon = start_daemon("--workers", "1")
    (queued,) = cli.json_lines("capture", "--queue", watched_site.url("/slow/2"))
    first_id = queued["job"]["capture_id"]
    wait_until(lambda: watched_site.hit_count("/slow/2") >= 1, what="the capture to start")
    assert daemon.terminate() == 0
    assert daemon.events("daemon.drain_deadline")
    (job,) = cli.json_lines("jobs")
    assert job["state"] == "queued"
    assert job["capture_id"] != first_id
    with cli.archive() as archive:
        actions = [e.action for e in archive.ledger.entries(subject=f"capture:{first_id}")]
    assert actions == ["capture.queued", "capture.requested", "capture.interrupted"]
    watched_site.gate.set()
    second = start_daemon("--workers", "1")
    wait_until(lambda: cli.json_lines("jobs")[0]["state"] == "done", what="the job to finish")
    assert second.terminate() == 0
    assert cli.json_lines("show", job["capture_id"])[0]["status"] == "completed"
    assert cli("ledger", "verify")[0] == 0


def _running_worker(cli: Cli) -> dict[str, Any] | None:
    for process in cli.json_lines("status")[0]["processes"]:
        if process["role"] == "worker" and process["job_id"]:
            return dict(process)
    return None


def _assert_nothing_half_written(cli: Cli) -> None:
    """Every completed capture verifies; every artifact row's blob exists; no scratch."""
    assert cli("ledger", "verify")[0] == 0
    for capture in _captures(cli):
        if capture["status"] == "completed":
            code, out, _ = cli("verify", capture["id"])
            assert code == 0, out
    with cli.archive() as archive:
        with archive.engine.connect() as conn:
            digests = conn.execute(sa.select(models.artifacts.c.sha256)).scalars().all()
        for sha256 in digests:
            assert archive.store.exists(sha256), sha256
    assert not any((cli.home / "work").iterdir())


def test_a_worker_killed_mid_capture_is_replaced_and_its_job_completes(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """SIGKILL to the worker process in the middle of a capture: the daemon notices,
    closes the attempt on the ledger, starts a new worker, and the job completes."""
    daemon = start_daemon("--workers", "1")
    (queued,) = cli.json_lines("capture", "--queue", watched_site.url("/slow/3"))
    wait_until(lambda: watched_site.hit_count("/slow/3") >= 1, what="the capture to start")
    worker = wait_until(lambda: _running_worker(cli), what="the worker to report its job")
    os.kill(worker["pid"], signal.SIGKILL)
    wait_until(lambda: daemon.events("worker.exited"), what="the daemon to notice")
    watched_site.gate.set()
    wait_until(lambda: cli.json_lines("jobs")[0]["state"] == "done", what="the job to finish")
    assert daemon.terminate() == 0
    (job,) = cli.json_lines("jobs")
    assert job["attempts"] == 2
    first_id = queued["job"]["capture_id"]
    with cli.archive() as archive:
        actions = [e.action for e in archive.ledger.entries(subject=f"capture:{first_id}")]
    assert actions == ["capture.queued", "capture.requested", "capture.interrupted"]
    assert cli.json_lines("show", job["capture_id"])[0]["status"] == "completed"
    _assert_nothing_half_written(cli)


def test_after_sigkill_of_the_whole_daemon_a_restart_completes_the_job(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon]
) -> None:
    """SIGKILL to the daemon and its workers mid-capture: the next daemon finds the job
    its dead worker held, runs it again, and nothing half-sealed is referenced."""
    daemon = start_daemon("--workers", "1")
    cli.json_lines("capture", "--queue", watched_site.url("/slow/4"))
    wait_until(lambda: watched_site.hit_count("/slow/4") >= 1, what="the capture to start")
    wait_until(lambda: any((cli.home / "work").iterdir()), what="the scratch directory")
    daemon.kill_all()
    (job,) = cli.json_lines("jobs")
    assert job["state"] == "running"
    watched_site.gate.set()
    second = start_daemon("--workers", "1")
    wait_until(lambda: second.events("daemon.recovered"), what="recovery at start")
    wait_until(lambda: cli.json_lines("jobs")[0]["state"] == "done", what="the job to finish")
    assert second.terminate() == 0
    with cli.archive() as archive:
        interrupted = list(archive.ledger.entries(actions=["capture.interrupted"]))
    assert len(interrupted) == 1
    # The first command after the kill (``jobs``) found the worker's process gone and
    # closed its capture; the daemon's recovery then closed nothing twice.
    assert json.dumps(interrupted[0].payload["reason"]) == '"process-gone"'
    _assert_nothing_half_written(cli)


def test_schedules_survive_a_restart_and_missed_polls_coalesce(
    cli: Cli, watched_site: WatchedSite, start_daemon: Callable[..., Daemon],
    monkeypatch: Any,
) -> None:
    """A watch's schedule lives in the database: after a restart the stored job is used
    (not re-created), and the polls missed while stopped run once, not once each."""
    # Half a second apart: far enough that a coalesced run and the next due time cannot
    # both fall in the 0.2 s window below, even on a loaded machine.
    monkeypatch.setenv("ARCHIVER_WATCH__MIN_EVERY", "0.5s")
    watched_site.publish("rss")
    (watch,) = cli.json_lines("watch", "add", watched_site.url("/feeds/rss.xml"),
                              "--every", "0.5s")
    daemon = start_daemon("--workers", "0")
    wait_until(lambda: cli.json_lines("watch", "list")[0]["polls"] >= 2, what="two polls")
    assert daemon.terminate() == 0
    with cli.archive() as archive, archive.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.text("id, next_run_time")).select_from(
            sa.table(models.APSCHEDULER_TABLE))).all()
    assert [row.id for row in stored] == [f"watch:{watch['id']}"]
    before = cli.json_lines("watch", "list")[0]["polls"]
    wait_until(lambda: _seconds_since(stored[0].next_run_time) > 3.2, timeout=15,
               what="six missed polls")
    second = start_daemon("--workers", "0")
    wait_until(lambda: len(second.events("poll.finished")) >= 3, what="polls after restart")
    assert second.terminate() == 0
    # Without coalescing, APScheduler hands the 6+ missed runs to one thread that polls
    # them back to back; coalesced, they are one poll, and the schedule goes on from
    # there (at most one more due time falls in the next 0.2 s).
    times = [datetime.fromisoformat(p["time"]) for p in second.events("poll.finished")]
    burst = [t for t in times if (t - times[0]).total_seconds() < 0.2]
    assert len(burst) <= 2, times
    assert cli.json_lines("watch", "list")[0]["polls"] >= before + 2
    assert "was missed" not in second.log_text()


def _seconds_since(timestamp: float) -> float:
    return time.time() - timestamp


def test_one_worker_runs_capture_concurrency_jobs_at_once(
    cli: Cli, fixture_site: Any, start_daemon: Callable[..., Daemon],
    monkeypatch: Any,
) -> None:
    """capture.concurrency = 4 and one worker process: four queued pages that each take
    a second are captured side by side (every one started before any ended), each job
    done once, and the ledger verifies."""
    monkeypatch.setenv("ARCHIVER_CAPTURE__CONCURRENCY", "4")
    urls = [fixture_site.url(f"/delayed/worker-{n}") for n in range(4)]
    cli.ok("capture", "--queue", *urls)
    daemon = start_daemon("--workers", "1")
    wait_until(lambda: len([c for c in _captures(cli) if c["status"] == "completed"]) == 4,
               timeout=60)
    assert daemon.terminate() == 0
    captures = _captures(cli)
    assert sorted(c["url"] for c in captures) == sorted(urls)
    started = [datetime.fromisoformat(c["started"].replace("Z", "+00:00")) for c in captures]
    ended = [datetime.fromisoformat(c["ended"].replace("Z", "+00:00")) for c in captures]
    assert max(started) < min(ended)
    assert [e["concurrency"] for e in daemon.events("worker.started")] == [4]
    assert "ledger verified" in cli.ok("ledger", "verify")
