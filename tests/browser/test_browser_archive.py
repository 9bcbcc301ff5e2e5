"""The browser view through the whole flow (``archiver`` command, default settings but
for the test site's address): captured, sealed in the signed manifest, stored, verified;
and a capture without a browser still completes and says why."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from archive_cli import Cli, archive_environment
from browser_site import POST_TEXT, Site
from fixture_site import FixtureSite
from warc_judges import read_records, strict_problems, warcio_check


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive with default settings (private networks allowed)."""
    archive_environment(monkeypatch, tmp_path / "archive", database_url,
                        {"ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "120"})
    runner = Cli(tmp_path / "archive", capsys)
    runner.ok("init")
    return runner


def test_the_browser_view_is_sealed_stored_and_verified(
    cli: Cli, browser_site: Site, tmp_path: Path
) -> None:
    """Screenshot, PDF, DOM and page text are artifacts of the signed manifest with their
    roles; the manifest names Chromium and the browser's outcome; provenance holds the
    browser's flags; verify re-hashes them; the WARC holds the post's JSON."""
    capture = cli.capture(browser_site.url("/post.html"))
    assert capture["status"] == "completed"
    assert capture["outcomes"]["browser"] == {"status": "ok", "reason": None,
                                              "message": None}
    roles = {a["name"]: a["role"] for a in capture["artifacts"]}
    assert roles == {
        "capture.warc.gz": "warc", "provenance.json": "provenance",
        "manifest.json": "manifest", "manifest.sig": "signature",
        "screenshot.png": "screenshot", "page.pdf": "pdf", "dom.html": "dom",
        "page.json": "metadata",
    }
    ident = str(capture["id"])
    out = tmp_path / "out"
    out.mkdir()
    for name in ("manifest.json", "provenance.json", "screenshot.png", "page.json",
                 "capture.warc.gz"):
        cli.ok("get", ident, name, "-o", str(out / name))
    manifest = json.loads((out / "manifest.json").read_bytes())
    listed = {a["name"]: a for a in manifest["artifacts"]}
    for name in ("screenshot.png", "page.json"):
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == listed[name]["sha256"]
    happened = manifest["happened"]
    assert happened["software"]["chromium"].split(".")[0].isdigit()
    assert happened["fetchers"]["browser"]["outcome"]["status"] == "ok"
    assert happened["fetchers"]["browser"]["title"] == "Post 4711"
    assert json.loads((out / "page.json").read_bytes())["text"] == POST_TEXT
    provenance = json.loads((out / "provenance.json").read_bytes())
    browser = provenance["fetchers"]["browser"]
    assert any(flag.startswith("--proxy-server=http://127.0.0.1:") for flag in browser["flags"])
    assert browser["options"]["executable"] == "/usr/bin/chromium"
    roles_in_exchanges = {x["role"] for x in provenance["network"]["exchanges"]}
    assert {"page", "subresource", "browser"} <= roles_in_exchanges
    warc = out / "capture.warc.gz"
    assert warcio_check(warc).returncode == 0
    payloads = [r.payload for r in read_records(warc) if r.header("WARC-Type") == "response"]
    assert any(POST_TEXT.encode() in payload for payload in payloads)
    verified = cli.ok("verify", ident)
    assert "screenshot.png in local:" in verified
    assert "FAIL" not in verified


def test_page_browser_and_media_share_one_warc(
    cli: Cli, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A page with a video: the page fetch, the browser and the media fetcher (which
    gets the video URL the browser saw) record into the capture's one WARC; a payload
    fetched again is a revisit of a response inside that same WARC."""
    capture = cli.capture(fixture_site.url("/page.html"))
    assert capture["status"] == "completed"
    assert capture["outcomes"]["browser"]["status"] == "ok"
    warc = tmp_path / "capture.warc.gz"
    cli.ok("get", str(capture["id"]), "capture.warc.gz", "-o", str(warc))
    cli.ok("get", str(capture["id"]), "provenance.json", "-o", str(tmp_path / "p.json"))
    provenance = json.loads((tmp_path / "p.json").read_bytes())
    assert fixture_site.url("/clip.mp4") in provenance["fetchers"]["browser"]["media_urls"]
    roles = {x["role"] for x in provenance["network"]["exchanges"]}
    assert roles == {"page", "subresource", "browser", "media"}
    records = read_records(warc)
    ids = {r.id for r in records}
    revisits = [r for r in records if r.header("WARC-Type") == "revisit"]
    assert revisits
    assert all(r.header("WARC-Refers-To") in ids for r in revisits)
    clip = [r.header("WARC-Type") for r in records
            if r.header("WARC-Target-URI") == fixture_site.url("/clip.mp4")
            and r.header("WARC-Type") in ("response", "revisit")]
    assert clip[0] == "response"
    assert clip.count("response") == 1
    assert warcio_check(warc).returncode == 0
    assert strict_problems(warc) == []


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("ARCHIVER_BROWSER__ENABLED", "false", "disabled"),
    ("ARCHIVER_BROWSER__EXECUTABLE", "/nonexistent/chromium", "browser-unavailable"),
])
def test_a_capture_without_a_browser_completes_and_says_why(
    cli: Cli, browser_site: Site, monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
    reason: str,
) -> None:
    """Browser turned off or missing: the capture completes without the browser's
    artifacts, and its outcome says which."""
    monkeypatch.setenv(variable, value)
    capture = cli.capture(browser_site.url("/post.html"))
    assert capture["status"] == "completed"
    assert capture["outcomes"]["browser"]["status"] == "skipped"
    assert capture["outcomes"]["browser"]["reason"] == reason
    assert {a["name"] for a in capture["artifacts"]} == {
        "capture.warc.gz", "provenance.json", "manifest.json", "manifest.sig"}
