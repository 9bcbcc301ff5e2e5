"""`archiver capture` of a big video draws a progress line when stderr is a terminal (a
pseudo-terminal here): URLs done of the command's, bytes received of what the server
announced (Content-Length), time left; piped or with --json, stderr stays empty.

The command runs in-process; most tests give the line a clock that moves one second per
reading, so every report is drawn and a time left is known without any real waiting; one
uses the real clock and a video sent slowly."""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from archive_cli import Cli, archive_environment
from pseudo_terminal import pseudo_terminal

import archiver.cli.progress as progress_module
from archiver.cli import main
from archiver.cli.progress import TerminalProgress

BIG = 6 * 1024 * 1024


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    archive_environment(monkeypatch, tmp_path / "archive", f"sqlite:///{tmp_path / 'a.db'}", {
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "60",
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_MEDIA__FRAME_SAMPLES": "1",
    })
    runner = Cli(tmp_path / "archive", capsys)
    runner.ok("init")
    return runner


@pytest.fixture
def big_video(site: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 6 MiB video (a real MPEG-TS segment, then noise), with its Content-Length."""
    big = site.routes["/big.mp4"]  # the same, 200 MiB long
    monkeypatch.setitem(site.routes, "/progress.mp4", dataclasses.replace(big, stream_bytes=BIG))
    return str(site.url("/progress.mp4"))


@pytest.fixture
def throttled_video(site: Any) -> Iterator[str]:
    """A 4 MiB video (the media site's MPEG-TS head, then noise) sent in 16 pieces a
    tenth of a second apart, with its Content-Length."""
    head = site.routes["/big.mp4"].head
    body = head + os.urandom(4 * 1024 * 1024 - len(head))

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            piece = len(body) // 16
            try:
                for start in range(0, len(body), piece):
                    self.wfile.write(body[start:start + piece])
                    self.wfile.flush()
                    time.sleep(0.1)
            except ConnectionError:
                return

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/slow.mp4"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def stepping_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reading of the progress line's clock is one second after the last."""
    seconds = itertools.count()
    monkeypatch.setattr(progress_module, "TerminalProgress",
                        functools.partial(TerminalProgress, clock=lambda: float(next(seconds))))


def on_terminal(monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, bytes]:
    """``archiver *argv`` with stderr on a pseudo-terminal: exit code, stdout, what the
    terminal received."""
    out = io.StringIO()
    with pseudo_terminal() as (slave, seen):
        terminal = os.fdopen(slave, "w", encoding="utf-8", closefd=False)
        with monkeypatch.context() as mp:
            mp.setattr(sys, "stderr", terminal)
            mp.setattr(sys, "stdout", out)
            code = main(list(argv))
        terminal.flush()
    return code, out.getvalue(), bytes(seen)


def test_a_big_download_shows_bytes_received_of_the_announced_total(
    cli: Cli, big_video: str, monkeypatch: pytest.MonkeyPatch, stepping_clock: None,
) -> None:
    code, out, terminal = on_terminal(monkeypatch, "capture", big_video)
    assert code == 0, out
    drawn = re.findall(r"\r([^\r\x1b]+)\x1b\[K", terminal.decode("utf-8"))
    assert drawn[0] == "capturing: 0/1 URLs"
    receiving = [line for line in drawn
                 if re.fullmatch(r"capturing: 0/1 URLs, [1-9][0-9.]* MiB of [0-9.]+ MiB "
                                 r"\([0-9]+%\), about [0-9hms]+ left", line)]
    assert len(receiving) >= 2, drawn  # redrawn as the video arrives
    # of what the video's response announced (its 6 MiB and the headers' few bytes)
    assert any(" of 6.0 MiB " in line or " of 6.1 MiB " in line for line in receiving), \
        receiving
    assert terminal.endswith(b"\r\x1b[K")  # erased before the command's last word
    assert "\r" not in out
    assert "completed" in out


def test_a_throttled_download_is_redrawn_as_it_arrives_with_the_real_clock(
    cli: Cli, throttled_video: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, terminal = on_terminal(monkeypatch, "capture", throttled_video)
    assert code == 0, out
    drawn = re.findall(r"\r([^\r\x1b]+)\x1b\[K", terminal.decode("utf-8"))
    receiving = [line for line in drawn
                 if re.match(r"capturing: 0/1 URLs, [0-9.]+ [KM]?i?B of 4\.[0-9] MiB \([0-9]+%\)",
                             line)]
    # The total is the 4 MiB video plus what earlier exchanges received (the page, its
    # headers: how much depends on the page fetcher's and yt-dlp's requests), so 4.0-4.9.
    assert len(receiving) >= 2, drawn
    assert terminal.endswith(b"\r\x1b[K")


@pytest.mark.parametrize("json_flag", [False, True], ids=["piped", "json-on-a-terminal"])
def test_capture_piped_or_json_writes_nothing_to_stderr(
    cli: Cli, big_video: str, monkeypatch: pytest.MonkeyPatch, stepping_clock: None,
    json_flag: bool,
) -> None:
    if json_flag:
        code, out, terminal = on_terminal(monkeypatch, "capture", big_video, "--json")
        assert terminal == b""
        assert '"status": "completed"' in out
    else:
        pipe = io.StringIO()
        with monkeypatch.context() as mp:
            mp.setattr(sys, "stderr", pipe)
            code = main(["capture", big_video])
        assert pipe.getvalue() == ""
    assert code == 0
