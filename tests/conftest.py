"""Fixtures shared by every test: databases (SQLite and PostgreSQL) and paths.

Every test that takes ``database_url`` runs twice: on a fresh SQLite file and in a fresh
schema of the PostgreSQL server on 127.0.0.1:5432. When that server is unreachable the
PostgreSQL run is skipped *with the reason shown*, unless ``TEST_REQUIRE_POSTGRES=1``
(set by ``.ci/run`` when it found a server), in which case it fails.

``tests/fixtures/*.py`` are loaded by path: pywb installs a top-level ``tests`` package
into site-packages, which shadows this repository's ``tests`` namespace, so
``import tests.fixtures.site`` cannot work. The modules are registered in ``sys.modules``
as ``fixture_site``, ``warc_judges`` and ``archive_cli`` so test modules import them by
those names; the export tests' ``export_helpers`` likewise.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa
from moto.server import ThreadedMotoServer

POSTGRES_BASE_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_module(name: str, path: Path) -> ModuleType:
    """Import the file ``path`` as module ``name`` (once)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fixture_site = load_module("fixture_site", FIXTURES / "site.py").fixture_site
load_module("warc_judges", FIXTURES / "warc_judges.py")
load_module("archive_cli", FIXTURES / "archive_cli.py")
load_module("export_helpers", FIXTURES.parent / "export" / "export_helpers.py")
load_module("hostile_suite", FIXTURES / "hostile.py")
load_module("pseudo_terminal", FIXTURES / "terminal.py")
load_module("ledger_forgery", FIXTURES / "ledger_forgery.py")
load_module("encoded_site", FIXTURES / "encoded_site.py")
load_module("recording_server", FIXTURES / "recording_server.py")
load_module("fixity_fixtures", FIXTURES / "fixity.py")
load_module("people_fixtures", FIXTURES / "people.py")
load_module("daemon_process", FIXTURES / "daemon_process.py")
api = load_module("api_fixtures", FIXTURES / "api.py").api
_browser_fixtures = load_module("browser_fixtures", FIXTURES / "browser.py")
chromium_session = _browser_fixtures.chromium_session
chromium = _browser_fixtures.chromium
# keeps a failed browser test's screenshots (a hook: pytest finds it by this name here)
pytest_runtest_makereport = _browser_fixtures.pytest_runtest_makereport


def _postgres_unreachable_reason() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES_BASE_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return f"PostgreSQL at {POSTGRES_BASE_URL} unreachable: {exc.orig}"
    return None


@pytest.fixture(scope="session")
def postgres_available() -> str | None:
    """None when PostgreSQL is reachable, else the reason it is not."""
    return _postgres_unreachable_reason()


@pytest.fixture
def postgres_url(postgres_available: str | None) -> Iterator[str]:
    """A URL whose search_path is a brand-new schema, dropped after the test."""
    if postgres_available is not None:
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(postgres_available)
        pytest.skip(postgres_available)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(POSTGRES_BASE_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_BASE_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server started once for the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials in the environment, and nothing from the host's AWS config."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- the hostile-input families ------------------------------------------------------------
#
# Every test of attacker-controlled input carries ``@pytest.mark.hostile("family")``. At the
# end of the run one line per family says how many cases were tried and how many the
# archive handled (the test passed). Trial counts of the randomised families are small here
# and raised by ``scripts/bench hostile`` (see ``tests/fixtures/hostile.py``).

_HOSTILE: dict[str, list[int]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hostile(family): a case of attacker-controlled input, tallied per family"
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    family = dict(report.user_properties).get("hostile")
    if family is None:
        return
    tally = _HOSTILE.setdefault(str(family), [0, 0, 0])
    if report.skipped:  # not tried: the summary says how many, the skip says why
        tally[2] += report.when == "setup" or report.when == "call"
    elif report.when == "call" or (report.when == "setup" and report.failed):
        tally[0] += 1
        tally[1] += report.passed


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("hostile")
    if marker is not None:
        item.user_properties.append(("hostile", marker.args[0]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _HOSTILE:
        return
    terminalreporter.section("hostile inputs (tried / handled)")
    for family, (tried, handled, skipped) in sorted(_HOSTILE.items()):
        line = f"{family:<24} {tried:>6} tried {handled:>6} handled"
        terminalreporter.write_line(line + (f" ({skipped} skipped)" if skipped else ""))
