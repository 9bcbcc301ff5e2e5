"""Control characters from input (case names, notes) and from captured pages (titles,
URLs) never reach the terminal raw: every command's human-readable output escapes them,
and a field's own newline cannot forge a line. A reader that closes the pipe early ends
the output quietly, and the capture is still completed and recorded."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import TextIO, cast

import pytest
from archive_cli import PASSPHRASE, Cli, archive_environment
from recording_server import RecordingServer, Reply

from archiver.cli.output import HumanStream
from archiver.logs import LogFormat, configure, event

CASE = "a\nb\x1b]0;title\x07\r\x9b2J"
NOTE = "note\rforged\x1b[2K\x08"
TITLE = "t\x1b]0;pwned\x07\r\x1b[31mred\x85"
# Raw control bytes (C0 but the newline ending a line, DEL, and C1 as UTF-8 encodes it).
RAW = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")


def _clean(data: str) -> None:
    found = RAW.findall(data.encode("utf-8", "surrogateescape"))
    assert found == [], (found, data)


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url,
                        {"ARCHIVER_BROWSER__ENABLED": "false",
                         "ARCHIVER_MEDIA__ENABLED": "false"})
    cli = Cli(home, capsys)
    cli.ok("init")
    return cli


@pytest.mark.hostile("terminal")
def test_no_raw_control_byte_reaches_the_terminal_from_any_command(
        cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = f"<html><head><title>{TITLE}</title></head><body>x</body></html>"
    with RecordingServer({"/p": Reply(body=page.encode()),
                          "/gone": Reply("404 Not Found", body=page.encode())}) as server:
        url = server.url("/p")
        runs = [cli("capture", url, "--case", CASE, "--note", NOTE)]
        (capture,) = cli.json_lines("list")
        runs += [
            cli("capture", server.url("/gone"), "--case", CASE),
            cli("list"), cli("list", "--case", CASE), cli("show", capture["id"]),
            cli("verify", capture["id"]), cli("status"), cli("ledger", "verify"),
            cli("ledger", "proof", "1"), cli("jobs"), cli("gone"),
            cli("capture", "--queue", url, "--case", CASE, "--note", NOTE),
            cli("watch", "add", server.url("/p"), "--kind", "page", "--case", CASE),
            cli("watch", "list"),
            cli("export", "--case", CASE, "--out", str(tmp_path / "case.zip")),
            cli("show", "\x1b]0;x\x07\nfake"),  # an error message quoting the input
        ]
    with pytest.raises(SystemExit):  # argparse's own message quotes the input too
        cli("\x1b[2Jnot-a-command")
    runs.append((2, *capsys.readouterr()))
    for _code, out, err in runs:
        _clean(out)
        _clean(err)
    shown = runs[0][1]
    # the case's own newline is written \x0a: it cannot forge a line of its own
    show = runs[4][1]
    assert "case:         a\\x0ab\\x1b]0;title\\x07\\x0d\\x9b2J" in show, show
    assert "note:         note\\x0dforged\\x1b[2K\\x08" in show, show
    assert "capture " in shown
    # JSON keeps the text exactly (it escapes by itself)
    assert cli.json("show", capture["id"])["case"] == CASE


@pytest.mark.hostile("terminal")
def test_a_hostile_page_title_is_escaped_in_the_browser_outcome_too(cli: Cli) -> None:
    """What a page says (title, URL) is shown escaped wherever a command shows it."""
    from archiver.cli.common import shown

    assert shown(TITLE) == "t\\x1b]0;pwned\\x07\\x0d\\x1b[31mred\\x85"
    assert shown("bytes \udcff") == "bytes \\xff"


@pytest.mark.hostile("terminal")
@pytest.mark.parametrize("fmt", ["csv", "toml"])
def test_machine_readable_output_is_written_unaltered_and_reads_back_the_same(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """``watch export`` (to stdout) | ``watch import``: a case name with a tab, an ESC and
    a newline comes back exactly as it went in; only output for a person is escaped."""
    case = "tab\there \x1b[31mred\x1b[0m\nline\x7f"
    cli.ok("watch", "add", "http://example.org/feed.xml", "--kind", "feed", "--case", case)
    exported = cli.ok("watch", "export", "--format", fmt)
    if fmt == "csv":
        assert f'"{case}"' in exported, exported  # raw bytes, quoted as CSV quotes them
    path = tmp_path / f"list.{fmt}"
    path.write_text(exported, encoding="utf-8", newline="")
    other = Cli(tmp_path / "other", capsys)
    archive_environment(monkeypatch, other.home, f"sqlite:///{other.home}/archive.db")
    other.ok("init")
    other.ok("watch", "import", str(path))
    (watch,) = other.json_lines("watch", "list")
    assert watch["case"] == case
    assert watch["url"] == "http://example.org/feed.xml"


@pytest.mark.hostile("terminal")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_daemon_log_lines_keep_hostile_fields_on_one_line(log_format: LogFormat) -> None:
    """The daemon logs to the CLI's stderr, which escapes for people: a JSON log line
    still reads back to the exact fields (DEL and C1 included), a text one stays one line
    without a raw control byte."""
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    try:
        configure(log_format=log_format, stream=cast(TextIO, HumanStream(buffer)))
        event(logging.getLogger("archiver.test"), "poll.finished",
              url="http://example.org/a\x7fb", title=TITLE, case=CASE)
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "evidence-archiver"]:
            root.removeHandler(handler)
        root.setLevel(level)
    line, end = buffer.getvalue().split("\n")  # (not splitlines: it splits at \x85 too)
    assert end == ""
    if log_format == "json":
        fields = json.loads(line)
        assert (fields["url"], fields["title"], fields["case"]) == \
            ("http://example.org/a\x7fb", TITLE, CASE)
    else:
        _clean(line)
        assert "case=a\\x0ab\\x1b]0;title\\x07\\x0d\\x9b2J" in line, line


def test_a_reader_closing_the_pipe_ends_the_output_quietly_and_loses_no_capture(
        tmp_path: Path) -> None:
    """``archiver capture URL URL | head -2``: no BrokenPipeError traceback; both
    captures are completed and on the ledger. The second URL's answer waits until the
    reader has closed its end, so the closed pipe is certain, not a race."""
    release = threading.Event()

    def gated() -> Reply:
        release.wait(60)
        return Reply(body=b"<title>second</title>")

    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env.update({"ARCHIVER_HOME": str(tmp_path / "archive"),
                "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
                "ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS": "true",
                "ARCHIVER_BROWSER__ENABLED": "false", "ARCHIVER_MEDIA__ENABLED": "false"})
    archiver = [sys.executable, "-m", "archiver.cli"]
    subprocess.run([*archiver, "init"], env=env, check=True, capture_output=True, timeout=120)
    with RecordingServer({"/one": Reply(body=b"<title>one</title>"), "/two": gated}) as server:
        process = subprocess.Popen(
            [*archiver, "capture", "--concurrency", "1", server.url("/one"), server.url("/two")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None
        assert process.stderr is not None
        first = [process.stdout.readline(), process.stdout.readline()]
        process.stdout.close()  # like head -2
        release.set()
        err = process.stderr.read()
        process.stderr.close()
        code = process.wait(timeout=120)
    assert first[0].startswith(b"capture ")
    assert b"completed" in first[0]
    assert b"Traceback" not in err, err
    assert err == b""
    assert code == 0
    listed = subprocess.run([*archiver, "list", "--json"], env=env, check=True,
                            capture_output=True, timeout=120).stdout.splitlines()
    assert sorted(json.loads(line)["status"] for line in listed) == ["completed"] * 2
    verified = subprocess.run([*archiver, "ledger", "verify", "--json"], env=env,
                              check=True, capture_output=True, timeout=120)
    assert json.loads(verified.stdout)["ok"] is True

    # Raw bytes to a reader that is gone before the first byte: quiet, and the download
    # is still recorded (bytes may have left before the reader went away).
    entries = json.loads(verified.stdout)["entries"]
    getter = subprocess.Popen(
        [*archiver, "get", json.loads(listed[0])["id"], "capture.warc.gz", "-o", "-"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert getter.stdout is not None
    getter.stdout.close()
    _out, err = getter.communicate(timeout=120)
    assert (getter.returncode, err) == (0, b"")
    verified = subprocess.run([*archiver, "ledger", "verify", "--json"], env=env,
                              check=True, capture_output=True, timeout=120)
    assert json.loads(verified.stdout)["entries"] == entries + 1
    last = subprocess.run([*archiver, "ledger", "proof", str(entries)], env=env,
                          check=True, capture_output=True, timeout=120)
    assert b"access.downloaded" in last.stdout, last.stdout


# A server's Content-Length feeds the capture's progress line: whatever it says, the line
# holds our numbers only, never more than 100%, and a length that is no plain decimal
# number gives no total at all.
CONTENT_LENGTHS = [
    # (header as sent, the line after 64 bytes arrived, up to the time left)
    ("1000", "capturing: 0/1 URLs, 64 B of 1000 B (6%)"),
    (" 1000 ", "capturing: 0/1 URLs, 64 B of 1000 B (6%)"),
    ("10", "capturing: 0/1 URLs, 64 B of 64 B (100%)"),  # a short lie
    ("9" * 18, "capturing: 0/1 URLs, 64 B of 931322574.6 GiB (0%)"),
    ("9" * 19, "capturing: 0/1 URLs, 64 B so far"),
    ("-5", "capturing: 0/1 URLs, 64 B so far"),
    ("1e3", "capturing: 0/1 URLs, 64 B so far"),
    ("100, 100", "capturing: 0/1 URLs, 64 B so far"),
    ("٣٤", "capturing: 0/1 URLs, 64 B so far"),  # digits, but not ASCII ones
    ("12\x1b[2J", "capturing: 0/1 URLs, 64 B so far"),
    (None, "capturing: 0/1 URLs, 64 B so far"),
]


@pytest.mark.hostile("terminal")
@pytest.mark.parametrize(("header", "line"), CONTENT_LENGTHS,
                         ids=[repr(h)[:24] for h, _ in CONTENT_LENGTHS])
def test_a_lying_content_length_cannot_garble_the_capture_progress_line(
        header: str | None, line: str) -> None:
    from archiver.cli.captures import _CaptureProgress
    from archiver.cli.progress import TerminalProgress
    from archiver.recorder.budget import CaptureBudget, watching

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    ticks = iter(range(100))
    drawn = TerminalProgress(Tty(), "capturing", unit="URLs", interval=0,
                             clock=lambda: float(next(ticks)) * 2)
    progress = _CaptureProgress(drawn, 1)
    budget = CaptureBudget(max_requests=10, max_total_bytes=10**6, seconds=60,
                           max_subresources=10)
    with watching(progress):
        meter = budget.transfer()
        budget.announce(header)
        assert meter(64) == 64
        assert drawn.line().split(", about ")[0] == line
        meter.end()
    assert progress.flowing == {}
