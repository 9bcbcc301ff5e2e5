"""Media through the whole ``archiver`` flow, on SQLite and PostgreSQL: capture a video
page, the artifacts and the signed manifest, verify, ``similar``, and a takedown on the
ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from archive_cli import Cli, archive_environment

from archiver.archive import Archive
from archiver.settings import load_settings


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive, browser off, three frames sampled per video."""
    archive_environment(monkeypatch, tmp_path / "archive", database_url, {
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "60",
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_MEDIA__FRAME_SAMPLES": "3",
    })
    runner = Cli(tmp_path / "archive", capsys)
    runner.ok("init")
    return runner


def test_capture_of_a_video_page_seals_the_video_and_verifies(
    cli: Cli, site: Any, tmp_path: Path
) -> None:
    """archiver capture: media and metadata artifacts listed; the signed manifest names
    yt-dlp's version and the chosen format; archiver verify passes; show prints the
    media outcome."""
    capture = cli.capture(site.url("/video.html"))
    assert capture["status"] == "completed"
    assert capture["outcomes"]["media"]["status"] == "ok"
    roles = {a["name"]: a["role"] for a in capture["artifacts"]}
    assert roles["media-video-1.mp4"] == "media"
    assert roles["media-video-1.info.json"] == "metadata"
    video = next(a for a in capture["artifacts"] if a["name"] == "media-video-1.mp4")
    assert video["sha256"] == site.sha256("/clip.mp4")
    manifest_path = tmp_path / "manifest.json"
    cli.ok("get", capture["id"], "manifest.json", "-o", str(manifest_path))
    manifest = json.loads(manifest_path.read_text())
    media = manifest["happened"]["fetchers"]["media"]
    assert manifest["happened"]["software"]["yt-dlp"] == media["yt_dlp_version"]
    assert media["items"][0]["format_id"] == "0"
    assert media["items"][0]["artifact"] == "media-video-1.mp4"
    assert {a["name"] for a in manifest["artifacts"]} >= {"media-video-1.mp4",
                                                         "media-video-1.info.json"}
    assert "capture " + capture["id"] + ": verified" in cli.ok("verify", capture["id"])
    shown = cli.ok("show", capture["id"])
    assert "  media:        ok  1 media item(s) captured" in shown
    assert "  browser:      skipped" in shown


def test_similar_finds_the_same_footage_and_a_reencoded_image(
    cli: Cli, site: Any, media_files: Any
) -> None:
    """A capture of the HLS page is similar to the capture of the mp4 page (same frames,
    re-encoded); a re-encoded, resized photo finds the gallery; an unrelated page does
    not come up."""
    first = cli.capture(site.url("/video.html"))
    second = cli.capture(site.url("/hls.html"))
    gallery = cli.capture(site.url("/gallery.html"))
    out = cli.ok("similar", second["id"], "--json")
    found = [json.loads(line) for line in out.splitlines()]
    assert [f["capture_id"] for f in found] == [first["id"]]
    assert found[0]["distance"] <= 31
    assert found[0]["matching_hashes"] >= 2
    directory, _routes = media_files
    out = cli.ok("similar", str(directory / "photo2-reencoded.jpg"), "--json")
    found = [json.loads(line) for line in out.splitlines()]
    assert [(f["capture_id"], f["artifact"]) for f in found] == [
        (gallery["id"], "media-photo2.png")]
    exact = cli.ok("similar", str(directory / "photo1.png"), "--max-distance", "0")
    assert f"{gallery['id']}  distance   0" in exact
    assert "no capture with media like" in cli.ok("similar", gallery["id"],
                                                  "--max-distance", "0")
    code, _out, err = cli("similar", str(directory / "icon.png"))
    assert code == 1
    assert "too little structure" in err


def test_a_410_post_is_recorded_as_target_gone(cli: Cli, site: Any) -> None:
    """The media outcome removed puts target.gone on the ledger next to the capture."""
    capture = cli.capture(site.url("/gone.html"))
    assert capture["status"] == "completed"
    assert capture["http_status"] == 410
    assert capture["outcomes"]["media"]["reason"] == "removed"
    with Archive.open(load_settings()) as archive:
        gone = [e for e in archive.ledger.entries() if e.action == "target.gone"]
    assert [(e.subject, e.payload["fetcher"]) for e in gone] == [
        (f"capture:{capture['id']}", "media")]


def test_a_post_with_a_video_stores_and_fetches_it_once_with_everything_on(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], site: Any,
) -> None:
    """Page, browser view and media together: the page's <video> is found by yt-dlp's
    extractor, by the page's tags and by the browser, yet the server sends it once and
    the capture holds one media artifact of it (before: two, fetched three times)."""
    archive_environment(monkeypatch, tmp_path / "archive", database_url, {
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "90",
        "ARCHIVER_MEDIA__FRAME_SAMPLES": "0",
    })
    cli = Cli(tmp_path / "archive", capsys)
    cli.ok("init")
    capture = cli.capture(site.url("/video.html"))
    assert capture["status"] == "completed"
    assert capture["outcomes"]["browser"]["status"] == "ok", capture["outcomes"]
    assert capture["outcomes"]["media"]["status"] == "ok", capture["outcomes"]
    media = [a for a in capture["artifacts"] if a["role"] == "media"]
    assert [a["sha256"] for a in media] == [site.sha256("/clip.mp4")]
    gets = [path for method, path, _agent in site.seen() if method == "GET"]
    assert gets.count("/clip.mp4") == 1, gets
    provenance = tmp_path / "provenance.json"
    cli.ok("get", capture["id"], "provenance.json", "-o", str(provenance))
    notes = json.loads(provenance.read_text())["fetchers"]["browser"]["notes"]
    assert {"url": site.url("/clip.mp4"), "kind": "media-deferred"}.items() <= notes[0].items()
