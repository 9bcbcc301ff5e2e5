"""`archiver export` and `archiver verify-bundle` draw a progress line when stderr is a
terminal (a pseudo-terminal here): what, how far of the total, how long left; piped or
with --json, stderr holds nothing but the commands' normal output.

The commands run in-process with a clock that moves one second per reading, so every
report is drawn and a time left is known without any real waiting."""

from __future__ import annotations

import functools
import io
import itertools
import os
import re
import sys
from pathlib import Path

import pytest
from export_helpers import Cli, seed_capture
from fixture_site import FixtureSite
from pseudo_terminal import pseudo_terminal

import archiver.cli.export as export_cli
from archiver.archive import Archive
from archiver.cli import main
from archiver.cli.progress import TerminalProgress
from archiver.settings import load_settings

NO_TIMESTAMP = re.compile(r"archiver: warning: the bundle has NO trusted timestamp: [^\n]*\n")


@pytest.fixture
def big_case(cli: Cli, fixture_site: FixtureSite, tmp_path: Path) -> str:
    """Case "Big": a captured page and a seeded capture with a 5 MiB video."""
    page = cli.capture(fixture_site.url("/page.html"), "--case", "Big")
    video = tmp_path / "video.mp4"
    video.write_bytes(os.urandom(5 * 1024 * 1024))
    with Archive.open(load_settings()) as archive:
        seed_capture(archive, case="Big", like=archive.get_capture(page["id"]),
                     extra=[(video, "video.mp4", "media", "video/mp4")])
    return "Big"


@pytest.fixture
def stepping_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each reading of the progress line's clock is one second after the last."""
    seconds = itertools.count()
    monkeypatch.setattr(export_cli, "TerminalProgress",
                        functools.partial(TerminalProgress, clock=lambda: float(next(seconds))))


def on_terminal(monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, bytes]:
    """Run ``archiver *argv`` with stderr on a pseudo-terminal: exit code, what the
    terminal received."""
    with pseudo_terminal() as (slave, seen):
        terminal = os.fdopen(slave, "w", encoding="utf-8", closefd=False)
        with monkeypatch.context() as mp:
            mp.setattr(sys, "stderr", terminal)
            code = main(list(argv))
        terminal.flush()
    return code, bytes(seen).replace(b"\r\n", b"\n")  # the terminal's own newline mapping


def piped(monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str]:
    """Run ``archiver *argv`` with stderr a pipe (not a terminal): exit code, stderr."""
    pipe = io.StringIO()
    with monkeypatch.context() as mp:
        mp.setattr(sys, "stderr", pipe)
        code = main(list(argv))
    return code, pipe.getvalue()


def lines(terminal: bytes) -> list[str]:
    """Every state the progress line was drawn in."""
    return re.findall(r"\r([^\r\x1b]+)\x1b\[K", terminal.decode("utf-8"))


def test_export_shows_captures_and_bytes_written_and_time_left_on_a_terminal(
    cli: Cli, big_case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    stepping_clock: None,
) -> None:
    code, terminal = on_terminal(monkeypatch, "export", "--case", big_case,
                                 "--out", str(tmp_path / "big.zip"))
    assert code == 0
    drawn = lines(terminal)
    assert drawn[0] == "exporting: 0/2 captures"
    written = [line for line in drawn if " of " in line]
    assert len(written) >= 2  # redrawn as the bytes go in
    assert re.fullmatch(r"exporting: 0/2 captures, 0 B of 5\.\d MiB \(0%\)", written[0])
    assert re.fullmatch(r"exporting: 2/2 captures, 5\.\d MiB of 5\.\d MiB \(100%\), "
                        r"about 0s left", written[-1])
    assert any(re.fullmatch(r"exporting: [01]/2 captures, [1-4]\.\d MiB of 5\.\d MiB "
                            r"\(\d\d%\), about \d+s left", line) for line in written)
    # erased, then the command's own warning on a clean line
    assert re.fullmatch(rb"(\r[^\r]+\x1b\[K)+\r\x1b\[K", NO_TIMESTAMP.sub("", terminal.decode())
                        .encode())
    assert NO_TIMESTAMP.search(terminal.decode())


@pytest.mark.parametrize("json_flag", [False, True], ids=["piped", "json-on-a-terminal"])
def test_export_piped_or_json_writes_nothing_but_its_output(
    cli: Cli, big_case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    stepping_clock: None, json_flag: bool,
) -> None:
    argv = ["export", "--case", big_case, "--out", str(tmp_path / "big.zip")]
    if json_flag:
        code, terminal = on_terminal(monkeypatch, *argv, "--json")
        err = terminal.decode()
    else:
        code, err = piped(monkeypatch, *argv)
    assert code == 0
    assert NO_TIMESTAMP.fullmatch(err), err


@pytest.fixture
def big_bundle(cli: Cli, big_case: str, tmp_path: Path) -> Path:
    bundle = tmp_path / "big.zip"
    cli.ok("export", "--case", big_case, "--out", str(bundle))
    return bundle


def test_verify_bundle_shows_files_and_bytes_checked_and_time_left_on_a_terminal(
    big_bundle: Path, monkeypatch: pytest.MonkeyPatch, stepping_clock: None,
) -> None:
    code, terminal = on_terminal(monkeypatch, "verify-bundle", str(big_bundle))
    assert code == 0
    drawn = lines(terminal)
    total = re.fullmatch(r"verifying: 0/(\d+) files, 0 B of (\d+\.\d MiB) \(0%\)", drawn[0])
    assert total, drawn[0]
    files, size = total.groups()
    assert len(drawn) >= 4
    assert any(re.fullmatch(rf"verifying: \d+/{files} files, [1-9]\.\d MiB of {size} "
                            r"\(\d\d%\), about \d+s left", line) for line in drawn), drawn
    assert drawn[-1].startswith(f"verifying: {files}/{files} files, ")
    assert terminal.endswith(b"\r\x1b[K")


@pytest.mark.parametrize("json_flag", [False, True], ids=["piped", "json-on-a-terminal"])
def test_verify_bundle_piped_or_json_writes_nothing_to_stderr(
    big_bundle: Path, monkeypatch: pytest.MonkeyPatch, stepping_clock: None, json_flag: bool,
) -> None:
    if json_flag:
        code, terminal = on_terminal(monkeypatch, "verify-bundle", str(big_bundle), "--json")
        assert terminal == b""
    else:
        code, err = piped(monkeypatch, "verify-bundle", str(big_bundle))
        assert err == ""
    assert code == 0
