"""Hostile URLs and arguments: every URL the archive is given or finds goes through one
check (``archiver.urls.check_url``). Given on the command line, a bad one is a one-line
usage error (exit 2) and nothing is recorded; found in a page or a redirect, it is
skipped and counted, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from archive_cli import Cli, archive_environment
from recording_server import RecordingServer, Reply

from archiver.errors import BadInput
from archiver.urls import MAX_URL_LENGTH, BadUrl, check_url

LONG = "http://example.org/" + "a" * MAX_URL_LENGTH

# (URL given to `archiver capture`, what the one-line error must say)
SUBMITTED: list[tuple[str, str]] = [
    ("http://example.org/\udcff",
     "URL http://example.org/\\xff holds bytes that are not UTF-8 (percent-encode them"),
    ("http://example.org/\x1b]0;title\x07",
     "URL http://example.org/\\x1b]0;title\\x07 holds control characters"),
    ("http://example.org/a\nb", "holds control characters"),
    ("http://example.org/a b", "holds whitespace (a space in a URL is written %20)"),
    (" http://example.org/", "holds whitespace"),
    (LONG, f"URL is longer than {MAX_URL_LENGTH} characters"),
    ("file:///etc/passwd", "scheme 'file' is not allowed, only http and https URLs"),
    ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ("example.org/post/1", "scheme '(none)' is not allowed"),
    ("http:///post/1", "URL http:///post/1 has no host"),
    ("http://exa_mple..org/", "is not a valid host name"),
    ("http://-bad-.org/", "is not a valid host name"),
    ("http://example.org:0/", "port '0' is not a number from 1 to 65535"),
    ("http://example.org:65536/", "port '65536' is not a number from 1 to 65535"),
    ("http://example.org:8o/", "port '8o' is not a number from 1 to 65535"),
    ("http://[::1/", "is not a valid URL (Invalid IPv6 URL)"),
    ("http://[::1]x/", "has a malformed IPv6 host"),
    ("http://[zz::1]/", "is not a valid URL ('zz::1' does not appear to be an IPv4 or IPv6"),
    ("http://xn--a.example/", "is not a valid host name"),
    ("http://evil.example\\@good.example/", "has a backslash in its host part"),
    ("http://user:hunter2@example.org/",
     "holds a user name or password: refused, because a user name or password in a URL "
     "would be kept in the custody ledger and the WARC"),
]


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    archive_environment(monkeypatch, tmp_path / "archive", database_url,
                        {"ARCHIVER_BROWSER__ENABLED": "false",
                         "ARCHIVER_MEDIA__ENABLED": "false"})
    cli = Cli(tmp_path / "archive", capsys)
    cli.ok("init")
    return cli


def _entries(cli: Cli) -> int:
    return int(cli.json("ledger", "verify")["entries"])


@pytest.mark.hostile("urls")
@pytest.mark.parametrize(("url", "error"), SUBMITTED,
                         ids=[f"{i}-{u[:30]!a}" for i, (u, _) in enumerate(SUBMITTED)])
def test_a_bad_submitted_url_is_one_usage_error_and_nothing_is_recorded(
        cli: Cli, url: str, error: str) -> None:
    before = _entries(cli)
    for command in (("capture", url), ("capture", "--queue", url), ("watch", "add", url)):
        code, out, err = cli(*command)
        assert code == 2, (command, out, err)
        assert error in err, err
        assert err.startswith("archiver: error: "), err
        assert err.count("\n") == 1, err
        assert "Traceback" not in err
        assert out == ""
        assert "hunter2" not in err
    assert _entries(cli) == before
    assert cli.json_lines("list") == []


@pytest.mark.hostile("urls")
def test_a_bad_url_among_good_ones_stops_the_command_before_anything_is_fetched(
        cli: Cli) -> None:
    with RecordingServer({"/": Reply(body=b"<p>hi</p>")}) as server:
        code, _out, err = cli("capture", server.url("/"), "http://example.org/\udcff")
        assert code == 2
        assert "not UTF-8" in err
        assert server.seen == []


@pytest.mark.hostile("urls")
@pytest.mark.parametrize("option", ["--case", "--note"])
def test_an_undecodable_text_argument_is_a_usage_error(cli: Cli, option: str) -> None:
    code, out, err = cli("capture", "http://example.org/", option, "case-\udcfe")
    name = option.lstrip("-")
    assert (code, out) == (2, "")
    assert err == (f"archiver: error: the {name} argument is not valid text (it holds bytes "
                   "that are not UTF-8: case-\\xfe); give it as UTF-8\n")
    assert cli("list", "--case", "\udcfe")[0] == 2


@pytest.mark.hostile("urls")
def test_the_library_refuses_a_bad_url_or_text_before_recording_anything(cli: Cli) -> None:
    """Archive.capture, which every channel ends in (CLI, queue worker, watch), checks
    the URL and the text it is given too: no caller can record what the CLI refuses."""
    before = _entries(cli)
    with cli.archive() as archive:
        with pytest.raises(BadUrl, match="holds bytes that are not UTF-8"):
            archive.capture("http://example.org/\udcff")
        with pytest.raises(BadUrl, match="holds a user name or password: refused"):
            archive.capture("http://someone:hunter2@example.org/")
        with pytest.raises(BadInput, match=r"^the note is not valid text"):
            archive.capture("http://example.org/", note="\udcfe")
    assert _entries(cli) == before
    assert cli.json_lines("list") == []


@pytest.mark.hostile("urls")
def test_undecodable_argv_bytes_from_a_real_process_are_refused_with_exit_2(
        tmp_path: Path) -> None:
    """The reported case, as a shell runs it: the bytes reach argv undecoded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env["ARCHIVER_HOME"] = str(tmp_path / "none")
    for argv in ([b"capture", b"http://example.org/\xff"],
                 [b"capture", b"--case", b"a\xffb", b"http://example.org/"]):
        done = subprocess.run([sys.executable.encode(), b"-m", b"archiver.cli", *argv],
                              capture_output=True, env=env, timeout=120, check=False)
        assert done.returncode == 2, done
        assert done.stderr.startswith(b"archiver: error: ")
        assert b"\\xff" in done.stderr
        assert b"Traceback" not in done.stderr
        assert done.stdout == b""


@pytest.mark.hostile("urls")
def test_a_watchlist_file_with_a_bad_url_is_refused_whole(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("url,kind,case\nhttp://example.org/feed,feed,c1\nftp://example.org/x,feed,c2\n",
                    encoding="utf-8")
    code, _out, err = cli("watch", "import", str(path))
    assert code == 2
    assert "scheme 'ftp' is not allowed" in err
    assert cli.json_lines("watch", "list") == []


def test_the_url_is_normalised_hosts_to_ascii() -> None:
    """IDN hosts are kept in their ASCII form, scheme and host in lower case, non-ASCII
    and spaces of the rest percent-encoded (found URLs only may hold spaces)."""
    assert check_url("HTTP://Bücher.Example:8080/ä?q=é#f", userinfo="refuse").url == \
        "http://xn--bcher-kva.example:8080/%C3%A4?q=%C3%A9#f"
    assert check_url("http://h.example/a b\n", userinfo="strip").url == "http://h.example/a%20b"
    assert check_url("http://u:p@[::1]:80/x", userinfo="strip") == \
        type(check_url("http://[::1]:80/x", userinfo="strip"))("http://[::1]:80/x", True)


BAD_LINKS = [
    "http://bad host.example/x.png",  # a space in the host
    "http://127.0.0.1:99999/x.png",  # port out of range
    "http://[::1/x.png",  # broken IPv6 literal
    "http://exa%01mple/x.png",  # not a host name
    "http://example.org/" + "x" * (MAX_URL_LENGTH + 10),  # too long
    "http://127.0.0.1:{port}/ok.png\x01",  # a control character
]


@pytest.mark.hostile("urls")
def test_bad_urls_in_a_page_are_skipped_and_counted_in_the_provenance(
        cli: Cli, tmp_path: Path) -> None:
    with RecordingServer({}) as server:
        links = "".join(f'<img src="{u.format(port=server.port)}">' for u in BAD_LINKS)
        server.routes["/page.html"] = Reply(
            body=f'<title>t</title>{links}<img src="/ok.png">'.encode())
        server.routes["/ok.png"] = Reply(headers=(("Content-Type", "image/png"),),
                                         body=b"\x89PNG\r\n\x1a\n")
        capture = cli.capture(server.url("/page.html"))
        assert capture["status"] == "completed", capture
        assert sorted(s.path for s in server.seen) == ["/ok.png", "/page.html"]
    with cli.archive() as archive:
        out = tmp_path / "provenance.json"
        with out.open("wb") as handle:
            archive.export_artifact(capture["id"], "provenance.json", handle)
    provenance = json.loads(out.read_bytes())
    assert provenance["urls"] == {"invalid": len(BAD_LINKS)}


@pytest.mark.hostile("urls")
@pytest.mark.parametrize("location", ["http://127.0.0.1:99999/x", "http://bad host/",
                                      "http://a\x7fb.example/"])
def test_a_redirect_to_a_bad_location_fails_the_capture_with_its_reason(
        cli: Cli, location: str) -> None:
    with RecordingServer({"/r": Reply("302 Found", (("Location", location),))}) as server:
        code, out, _err = cli("capture", server.url("/r"), "--json")
    (capture,) = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert capture["status"] == "failed"
    assert capture["reason"] == "network"
    assert "redirected to an invalid Location" in capture["message"]


@pytest.mark.hostile("urls")
@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://example.org/x"])
def test_a_redirect_to_a_scheme_never_fetched_is_refused(cli: Cli, location: str) -> None:
    """A redirect to a well-formed URL the archive never fetches is a refusal (reason
    refused, the scheme named), not a broken Location."""
    with RecordingServer({"/r": Reply("302 Found", (("Location", location),))}) as server:
        code, out, _err = cli("capture", server.url("/r"), "--json")
    (capture,) = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert (capture["status"], capture["reason"]) == ("failed", "refused")
    scheme = location.split(":")[0]
    assert f"scheme '{scheme}' is not allowed" in capture["message"]
