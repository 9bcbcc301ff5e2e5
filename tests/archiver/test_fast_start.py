"""Reading commands start in a blink: they import none of the heavy libraries (the timing
itself is a benchmark, bench/cli_start.py; this holds the rule that makes it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from archive_cli import PASSPHRASE

HEAVY = ("yt_dlp", "playwright", "boto3", "botocore", "reportlab", "numpy", "pdqhash",
         "PIL", "httpx", "httpcore", "warcio", "apscheduler", "feedparser", "alembic",
         "rfc3161_client", "wacz", "bagit")
PROBE = """
import json, sys
from archiver.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules(home: Path, *argv: str) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
        env={"ARCHIVER_HOME": str(home), "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
             "PATH": "/usr/bin:/bin"},
        check=False,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return int(report["code"] or 0), set(report["modules"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("archive")
    code, _ = _modules(home, "init")
    assert code == 0
    return home


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["show", "00000000"],
                                  ["status"], ["key", "show"], ["jobs"], ["gone"]])
def test_reading_commands_load_no_heavy_library(home: Path, argv: list[str]) -> None:
    """list, show, status, key show, jobs and gone: no yt-dlp, Playwright, boto3,
    reportlab, numpy, pdqhash, Pillow, httpx, warcio, APScheduler or Alembic."""
    code, modules = _modules(home, *argv)
    assert code in (0, 4)  # show of an unknown id: exit 4, after opening the archive
    assert "sqlalchemy" in modules  # it did open the archive
    assert sorted(m for m in HEAVY if m in modules) == []


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["capture", "--help"]])
def test_version_and_help_load_no_library_at_all(home: Path, argv: list[str]) -> None:
    """--version and --help answer from argparse alone: not even SQLAlchemy or pydantic."""
    code, modules = _modules(home, *argv)
    assert code == 0
    assert sorted(m for m in (*HEAVY, "sqlalchemy", "pydantic") if m in modules) == []


def test_capture_does_load_the_capture_stack(home: Path) -> None:
    """The rule is about *reading* commands: the probe does see a capture load httpx
    (so the tests above cannot pass for an import the probe misses)."""
    code, modules = _modules(home, "capture", "http://127.0.0.1:9/unreachable")
    assert code == 1  # refused: private networks are not allowed by default
    assert "httpx" in modules
