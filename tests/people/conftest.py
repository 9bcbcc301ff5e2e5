"""Fixtures of the people tests: an initialised archive (SQLite, then PostgreSQL) and a
:class:`People` acting as the CLI's operator, on a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from archive_cli import OPERATOR, Cli, archive_environment
from people_fixtures import FakeClock

from archiver.archive import Archive
from archiver.people.accounts import People
from archiver.settings import load_settings


@pytest.fixture
def people_cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive, driven through the ``archiver`` command."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url, {"ARCHIVER_BROWSER__ENABLED": "false"})
    cli = Cli(home, capsys)
    cli.ok("init")
    return cli


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def archive(people_cli: Cli, clock: FakeClock) -> Iterator[Archive]:
    opened = Archive.open(load_settings(), clock=clock)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def people(archive: Archive) -> People:
    """The operator's :class:`People` (as the CLI makes it)."""
    return People(archive, actor=OPERATOR)
