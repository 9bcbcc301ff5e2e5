"""``archiver watch …``, ``capture --queue``, ``jobs`` and ``gone`` through the CLI, on
SQLite and PostgreSQL: ledger events, watchlist files, foreground polls."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_fixtures import Cli, WatchedSite

from archiver.watch.watches import read_watchlist

CONFIG = Path(__file__).resolve().parents[2] / "config"


def _events(cli: Cli, subject: str) -> list[tuple[str, dict[str, object]]]:
    with cli.archive() as archive:
        return [(e.action, dict(e.payload)) for e in archive.ledger.entries(subject=subject)]


def test_watch_add_records_the_watch_on_the_ledger(cli: Cli, watched_site: WatchedSite) -> None:
    """watch add detects the kind, stores the watch and appends watch.added (signed into a
    checkpoint); adding the same URL to the same case again is refused naming the existing
    watch."""
    url = watched_site.url("/feeds/rss.xml")
    (view,) = cli.json_lines("watch", "add", url, "--every", "15m", "--case", "Case 9")
    assert (view["kind"], view["every"], view["case"], view["status"]) == (
        "feed", "15m", "Case 9", "active")
    ((action, payload),) = _events(cli, f"watch:{view['id']}")
    assert action == "watch.added"
    assert payload == {"watch_id": view["id"], "url": url, "kind": "feed", "source_url": url,
                       "every_seconds": 900.0, "case": "Case 9", "pattern": None}
    assert cli.json_lines("ledger", "verify")[0]["unsigned_entries"] == 0
    code, _, err = cli("watch", "add", url, "--case", "Case 9")
    assert code == 1
    assert err == f"archiver: error: {url} is already watched (watch {view['id']})\n"
    assert cli.ok("watch", "list").split()[:4] == ["1", "active", "feed", "15m"]


def test_a_url_is_watched_once_per_case(cli: Cli, watched_site: WatchedSite) -> None:
    """Two cases and the operator (unfiled) watch the same feed: all three are added; the
    same URL again in one of them is refused naming that one's watch; each watch's poll
    queues every post for its own case (a post queued for another case does not count)."""
    url = watched_site.url("/feeds/rss.xml")
    posts = watched_site.publish("rss", 2)
    views = {case: cli.json_lines("watch", "add", url, *(("--case", case) if case else ()))[0]
             for case in ("Case A", "Case B", None)}
    assert {v["case"] for v in views.values()} == {"Case A", "Case B", None}
    for case, view in views.items():
        code, _, err = cli("watch", "add", url, *(("--case", case) if case else ()))
        assert (code, err) == (
            1, f"archiver: error: {url} is already watched (watch {view['id']})\n")
    for view in views.values():
        report = cli.json_lines("watch", "poll", str(view["id"]))[0]
        assert (report["new_posts"], report["queued"]) == (2, 2)
    jobs = cli.json_lines("jobs")
    assert sorted((j["url"], j["case"] or "", j["source"]) for j in jobs) == sorted(
        (post, case or "", f"watch:{view['id']}") for post in posts
        for case, view in views.items())
    assert len({j["capture_id"] for j in jobs}) == 6


def test_pause_resume_remove_are_ledger_events(cli: Cli, watched_site: WatchedSite) -> None:
    """Each change is one event; repeating a pause records nothing; a removed watch cannot
    be resumed and is listed only with --all; an unknown id exits 4."""
    (view,) = cli.json_lines("watch", "add", watched_site.url("/links.html"), "--kind", "page")
    wid = str(view["id"])
    assert cli.json_lines("watch", "pause", wid)[0]["status"] == "paused"
    cli.ok("watch", "pause", wid)
    assert cli.json_lines("watch", "resume", wid)[0]["status"] == "active"
    assert cli.json_lines("watch", "remove", wid)[0]["status"] == "removed"
    assert [a for a, _ in _events(cli, f"watch:{wid}")] == [
        "watch.added", "watch.paused", "watch.resumed", "watch.removed"]
    code, _, err = cli("watch", "resume", wid)
    assert (code, err) == (1, f"archiver: error: watch {wid} is removed\n")
    assert cli.json_lines("watch", "list") == []
    assert [w["status"] for w in cli.json_lines("watch", "list", "--all")] == ["removed"]
    code, _, err = cli("watch", "pause", "999")
    assert (code, err) == (4, "archiver: error: no watch 999\n")
    # a removed URL may be watched again, as a new watch
    (again,) = cli.json_lines("watch", "add", watched_site.url("/links.html"), "--kind", "page")
    assert again["id"] != view["id"]


def test_intervals_below_the_minimum_and_bad_durations_are_usage_errors(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--every shorter than watch.min_every exits 2 naming both; a malformed duration is
    an argparse error (exit 2)."""
    monkeypatch.setenv("ARCHIVER_WATCH__MIN_EVERY", "1m")
    code, _, err = cli("watch", "add", "https://example.org/feed", "--kind", "feed",
                       "--every", "30s")
    assert code == 2
    assert ("every 30s for https://example.org/feed is more often than watch.min_every (1m) "
            "allows") in err
    with pytest.raises(SystemExit) as exit_info:
        cli("watch", "add", "https://example.org/feed", "--every", "soon")
    assert exit_info.value.code == 2
    assert "not a duration: 'soon'" in capsys.readouterr().err


def test_watch_urls_are_guarded_and_patterns_checked(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loopback URL is refused at add time when the guard is on; a bad regex and a
    pattern on a non-page kind are refused."""
    monkeypatch.setenv("ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS", "false")
    code, _, err = cli("watch", "add", "http://127.0.0.1:9/feed", "--kind", "feed")
    assert code == 1
    assert "is a loopback address" in err
    code, _, err = cli("watch", "add", "https://example.org/", "--kind", "page",
                       "--pattern", "([")
    assert code == 1
    assert "bad --pattern" in err
    code, _, err = cli("watch", "add", "https://example.org/f", "--kind", "feed",
                       "--pattern", "x")
    assert code == 1
    assert "--pattern applies only to --kind page" in err


@pytest.mark.parametrize("suffix", ["toml", "csv"])
def test_import_and_export_round_trip(cli: Cli, tmp_path: Path, suffix: str) -> None:
    """The example watchlist imports (one watch.added each); re-importing skips them all;
    export writes a file that reads back to the same watches."""
    example = CONFIG / f"watchlist.example.{suffix}"
    report = cli.json_lines("watch", "import", str(example))[0]
    assert len(report["added"]) == 6
    assert report["skipped"] == []
    assert cli.json_lines("watch", "import", str(example))[0]["added"] == []
    with cli.archive() as archive:
        assert len(list(archive.ledger.entries(actions=["watch.added"]))) == 6
    listed = cli.json_lines("watch", "list")
    assert {w["kind"] for w in listed} == {"feed", "activitypub", "bluesky", "telegram",
                                           "channel", "page"}
    telegram = next(w for w in listed if w["kind"] == "telegram")
    assert telegram["source_url"] == "https://t.me/s/example_channel"
    out = tmp_path / f"exported.{suffix}"
    cli.ok("watch", "export", "-o", str(out))
    again = read_watchlist(out.read_text(), suffix)
    original = read_watchlist(example.read_text(), suffix)
    assert again == original


def test_the_two_example_watchlists_say_the_same() -> None:
    """config/watchlist.example.toml and .csv list the same watches."""
    toml = read_watchlist((CONFIG / "watchlist.example.toml").read_text(), "toml")
    csv = read_watchlist((CONFIG / "watchlist.example.csv").read_text(), "csv")
    assert toml == csv


def test_a_bad_watchlist_names_the_line_and_adds_nothing(cli: Cli, tmp_path: Path) -> None:
    """An import is all or nothing; the error names the file and the line or entry."""
    bad = tmp_path / "bad.csv"
    bad.write_text("url,kind,every\nhttps://a.example/feed,feed,15m\n"
                   "https://b.example/feed,feed,often\n")
    code, _, err = cli("watch", "import", str(bad))
    assert code == 1
    assert f"{bad}: line 3: not a duration: 'often'" in err
    assert cli.json_lines("watch", "list") == []
    toml = tmp_path / "bad.toml"
    toml.write_text('[[watch]]\nurl = "https://a.example/"\ncolour = "red"\n')
    code, _, err = cli("watch", "import", str(toml))
    assert code == 1
    assert "watch #1: unknown key(s) ['colour']" in err
    code, _, err = cli("watch", "import", str(tmp_path / "list.txt"))
    assert code == 2
    assert "name it .csv or .toml" in err


def test_capture_queue_submits_jobs_and_does_not_queue_twice(
    cli: Cli, watched_site: WatchedSite
) -> None:
    """capture --queue prints the job and its capture id, appends capture.queued; the
    same URL again for the same case is reported as already queued unless --again."""
    url = watched_site.url("/posts/rss-1")
    (line,) = cli.json_lines("capture", "--queue", url, "--case", "Case Q", "--note", "n")
    job = line["job"]
    assert (job["state"], job["via"], job["priority"], job["case"]) == (
        "queued", "queue", 0, "Case Q")
    assert _events(cli, f"capture:{job['capture_id']}") == [("capture.queued", {
        "url": url, "job_id": job["id"], "via": "queue", "source": f"job:{job['id']}",
        "case": "Case Q", "note": "n", "priority": 0})]
    out = cli.ok("capture", "--queue", url, "--case", "Case Q")
    assert out == (f"already queued (job {job['id']}), not queued again (--again to force): "
                   f"{url}\n")
    (forced,) = cli.json_lines("capture", "--queue", "--again", url)
    assert forced["job"]["id"] != job["id"]
    assert [j["id"] for j in cli.json_lines("jobs", "--state", "queued")] == [
        forced["job"]["id"], job["id"]]


def test_foreground_poll_backfills_then_queues_only_new_posts(
    cli: Cli, watched_site: WatchedSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First poll: every listed post is marked seen, the newest `backfill` are queued;
    later polls queue only new posts; a post already queued elsewhere is not queued."""
    monkeypatch.setenv("ARCHIVER_WATCH__BACKFILL", "2")
    site = watched_site
    published = site.publish("rss", 3)
    (view,) = cli.json_lines("watch", "add", site.url("/feeds/rss.xml"))
    wid = str(view["id"])
    report = cli.json_lines("watch", "poll", wid)[0]
    assert (report["listed"], report["new_posts"], report["queued"]) == (3, 3, 2)
    queued = [j["url"] for j in cli.json_lines("jobs")]
    assert sorted(queued) == sorted(published[1:])
    assert cli.json_lines("watch", "poll", wid)[0]["new_posts"] == 0
    (newer, newest) = site.publish("rss", 2)
    cli.ok("capture", "--queue", newest)
    report = cli.json_lines("watch", "poll", wid)[0]
    assert (report["new_posts"], report["queued"]) == (2, 1)
    jobs = cli.json_lines("jobs")
    assert [(j["url"], j["via"], j["priority"], j["source"]) for j in jobs[:2]] == [
        (newer, "watch", 10, f"watch:{wid}"), (newest, "queue", 0, f"job:{jobs[1]['id']}")]
    listed = cli.json_lines("watch", "list")[0]
    assert (listed["polls"], listed["posts_seen"], listed["failures"]) == (3, 5, 0)


def test_a_changed_page_is_queued_again(cli: Cli, watched_site: WatchedSite) -> None:
    """A page watched without a pattern is queued on its first poll and again whenever its
    visible text changes, although its URL was queued before."""
    (view,) = cli.json_lines("watch", "add", watched_site.url("/changing.html"),
                             "--kind", "page")
    wid = str(view["id"])
    assert cli.json_lines("watch", "poll", wid)[0]["queued"] == 1
    assert cli.json_lines("watch", "poll", wid)[0]["queued"] == 0
    watched_site.change_page()
    assert cli.json_lines("watch", "poll", wid)[0]["queued"] == 1
    assert len(cli.json_lines("jobs")) == 2


def test_a_failing_poll_is_recorded_on_the_watch(cli: Cli, watched_site: WatchedSite) -> None:
    """A source that answers 404 fails the poll (exit 1) and the watch counts it."""
    (view,) = cli.json_lines("watch", "add", watched_site.url("/gone.xml"), "--kind", "feed")
    code, out, _ = cli("watch", "poll", str(view["id"]))
    assert code == 1
    assert "poll failed: " in out
    assert "answered HTTP 404" in out
    listed = cli.json_lines("watch", "list")[0]
    assert (listed["failures"], listed["polls_ok"]) == (1, 0)
    assert "HTTP 404" in listed["last_error"]


def test_gone_is_empty_on_a_fresh_archive(cli: Cli) -> None:
    """gone lists nothing (and succeeds) before any takedown was recorded."""
    assert cli.ok("gone") == ""
    assert cli.ok("gone", "--case", "x", "--json") == ""
