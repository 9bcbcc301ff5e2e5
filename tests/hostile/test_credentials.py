"""Credentials in URLs. A URL someone submits with a user name or password is refused
(they would be kept in the ledger and the WARC); one found during a capture (redirect,
subresource, media URL, browser request) loses its user info before any request, and no
fetcher sends credentials taken from a URL. The provenance counts what was stripped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite
from recording_server import RecordingServer, Reply
from warc_judges import read_records

SECRET = "s3cretPW"


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url)
    cli = Cli(home, capsys)
    cli.ok("init")
    return cli


def _in_database(cli: Cli, text: str) -> list[str]:
    """Every table row (captures, artifacts, cases, the ledger, jobs, …) holding
    ``text``, whichever database the archive uses."""
    found = []
    with cli.archive() as archive:
        tables = sa.MetaData()
        tables.reflect(archive.engine)
        with archive.engine.connect() as conn:
            for table in tables.sorted_tables:
                found += [f"{table.name}: {row}" for row in conn.execute(sa.select(table))
                          if text in repr(tuple(row))]
    return found


@pytest.mark.hostile("credentials")
def test_no_fetcher_sends_or_keeps_credentials_found_during_a_capture(
        cli: Cli, fixture_site: FixtureSite, capsys: pytest.CaptureFixture[str]) -> None:
    clip = fixture_site.body("/clip.mp4")
    with RecordingServer({}) as server:
        auth = f"http://someone:{SECRET}@127.0.0.1:{server.port}"
        server.routes.update({
            "/start": Reply("302 Found", (("Location", f"{auth}/landing"),)),
            "/landing": Reply(body=(
                f'<html><head><title>post</title>'
                f'<link rel="stylesheet" href="{auth}/style.css"></head><body>'
                f'<img src="{auth}/img.png"><iframe src="{auth}/frame.html"></iframe>'
                f'<video src="{auth}/clip.mp4"></video></body></html>').encode()),
            "/style.css": Reply(headers=(("Content-Type", "text/css"),), body=b"p{}"),
            "/img.png": Reply(headers=(("Content-Type", "image/png"),),
                              body=b"\x89PNG\r\n\x1a\n"),
            "/frame.html": Reply(body=b"<p>frame</p>"),
            "/clip.mp4": Reply(headers=(("Content-Type", "video/mp4"),), body=clip),
        })
        capture = cli.capture(server.url("/start"))
        seen = list(server.seen)
    err = capsys.readouterr().err
    assert capture["status"] == "completed", capture
    # every fetcher ran: the page fetcher, Chromium and yt-dlp
    assert capture["outcomes"]["browser"]["status"] == "ok", capture["outcomes"]
    assert capture["outcomes"]["media"]["status"] == "ok", capture["outcomes"]
    paths = {s.path for s in seen}
    assert {"/start", "/landing", "/img.png", "/clip.mp4"} <= paths, paths
    assert [s for s in seen if s.header("Authorization")] == []
    assert capture["final_url"] == server.url("/landing")

    home = cli.home
    # Nothing the archive wrote holds the password: database, ledger, logs, every blob
    # (provenance, manifest, metadata, media info) but the page's own bytes (the WARC's
    # responses, the DOM and its resource record), and in the WARC every header, request
    # and metadata record.
    assert _in_database(cli, SECRET) == []
    if (home / "archive.db").exists():  # SQLite: not in a free page either
        assert SECRET.encode() not in (home / "archive.db").read_bytes()
    assert SECRET not in err
    warc = next(a for a in capture["artifacts"] if a["name"] == "capture.warc.gz")
    pages_own = {a["sha256"] for a in capture["artifacts"] if a["role"] in ("warc", "dom")}
    for blob in (p for p in (home / "blobs").rglob("*") if p.is_file()):
        if blob.name not in pages_own:
            assert SECRET.encode() not in blob.read_bytes(), blob
    records = read_records(cli.blob_path(warc["sha256"]))
    assert records
    for record in records:
        assert SECRET not in json.dumps(record.headers), record.headers
        if record.type in ("request", "warcinfo", "metadata"):
            assert SECRET.encode() not in record.block, record.type
    provenance = json.loads(cli.blob_path(next(
        a["sha256"] for a in capture["artifacts"] if a["name"] == "provenance.json"
    )).read_bytes())
    assert provenance["urls"]["userinfo_stripped"] >= 3, provenance["urls"]


@pytest.mark.hostile("credentials")
@pytest.mark.parametrize("command", [("capture",), ("capture", "--queue"), ("watch", "add")])
def test_a_submitted_url_with_credentials_is_refused_saying_why(
        cli: Cli, command: tuple[str, ...]) -> None:
    code, out, err = cli(*command, f"http://someone:{SECRET}@example.org/post/1")
    assert (code, out) == (2, "")
    assert err == (
        "archiver: error: URL http://…@example.org/post/1 holds a user name or password: "
        "refused, because a user name or password in a URL would be kept in the custody "
        "ledger and the WARC for everyone who reads them; submit the URL without it (a "
        "capture never sends credentials)\n")
    assert _in_database(cli, SECRET) == []


@pytest.mark.hostile("credentials")
def test_a_watchlist_line_with_credentials_is_refused(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "watch.csv"
    path.write_text(f"url,kind\nhttp://u:{SECRET}@example.org/feed.xml,feed\n",
                    encoding="utf-8")
    code, _out, err = cli("watch", "import", str(path))
    assert code == 2
    assert "holds a user name or password" in err
    assert SECRET not in err
