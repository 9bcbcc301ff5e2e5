"""Fixtures for trusted timestamps and evidence bundles (helpers: export_helpers.py).

``export_helpers.py`` is registered as the module ``export_helpers`` by
``tests/conftest.py``, for the reason given there.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import export_helpers as helpers
import httpx
import pytest

Cli, LocalTsa, LocalCa = helpers.Cli, helpers.LocalTsa, helpers.LocalCa


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    """The root CA of the local TSAs."""
    return LocalCa.create(tmp_path_factory.mktemp("tsa-ca"))


@pytest.fixture(scope="session")
def tsa(test_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTsa]:
    """The local TSA, certificate made by openssl, running for the session."""
    directory = tmp_path_factory.mktemp("tsa")
    test_ca.issue_tsa_with_openssl(directory)
    server = LocalTsa(directory, test_ca).start()
    yield server
    server.stop()


@pytest.fixture
def make_tsa(test_ca: LocalCa, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Any]:
    """``make_tsa(not_before, not_after)``: a TSA whose certificate is valid exactly then."""
    started: list[LocalTsa] = []

    def make(not_before: dt.datetime, not_after: dt.datetime) -> LocalTsa:
        directory = tmp_path_factory.mktemp("tsa-short")
        test_ca.issue_tsa_valid(directory, not_before, not_after)
        server = LocalTsa(directory, test_ca).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def closed_port_url() -> Iterator[str]:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/tsr"


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive (SQLite, then PostgreSQL) with no TSA configured."""
    home = tmp_path / "archive"
    helpers.archive_environment(monkeypatch, home, database_url)
    runner = Cli(home, capsys, monkeypatch)
    runner.ok("init")
    return runner


@dataclass(frozen=True)
class Pristine:
    """One archive (SQLite) with case "Case 7" (a page, a capture with media, a failed
    capture, a view) and case "Other", each exported once with a timestamp."""

    home: Path
    bundle: Path
    bag: Path
    other_bundle: Path
    key: Any
    key_pem: Path
    key_id: str
    page_id: str
    media_id: str
    failed_id: str
    other_id: str
    export_seq: int
    export_actor: str
    tsa_ca: Path


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory, tsa: LocalTsa,
             fixture_site: Any) -> Pristine:
    """The untouched bundles every verifier and tamper test starts from."""
    from PIL import Image

    from archiver.archive import Archive, initialise
    from archiver.export.case import export_case
    from archiver.settings import load_settings

    root = tmp_path_factory.mktemp("pristine")
    home = root / "archive"
    with pytest.MonkeyPatch.context() as mp:
        helpers.archive_environment(mp, home, f"sqlite:///{root / 'archive.db'}", browser=True)
        mp.setenv("ARCHIVER_TIMESTAMP__AUTHORITIES", json.dumps([tsa.authority("/pristine")]))
        settings = load_settings()
        initialise(settings)
        media = root / "media"
        media.mkdir()
        (media / "clip.mp4").write_bytes(httpx.get(fixture_site.url("/clip.mp4")).content)
        (media / "clip.info.json").write_text(json.dumps({"id": "clip", "duration": 1}))
        Image.new("RGB", (64, 48), (200, 30, 30)).save(media / "screenshot.png")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{sock.getsockname()[1]}/post/1"
            with Archive.open(settings) as archive:
                page = archive.capture(fixture_site.url("/page.html"), case="Case 7",
                                       note="from the field team")
                failed = archive.capture(refused, case="Case 7")
        with Archive.open(settings) as archive:
            assert page.ok, page
            assert not failed.ok, failed
            media_id = helpers.seed_capture(archive, case="Case 7", like=page, extra=[
                (media / "clip.mp4", "seeded-clip.mp4", "media", "video/mp4"),
                (media / "clip.info.json", "seeded-clip.info.json", "metadata",
                 "application/json"),
                (media / "screenshot.png", "seeded-view.png", "screenshot", "image/png"),
            ])
            other = archive.capture(fixture_site.url("/gone-410"), case="Other")
            archive.record_view(page, actor="investigator@test.example")
            report = export_case(archive, case="Case 7", out=root / "case-7.zip",
                                 actor="lawyer@test.example")
            export_case(archive, case="Other", out=root / "other.zip")
            key = archive.signing_key
        key_pem = root / "archive-key.pem"
        key_pem.write_bytes(key.public.pem())
    bag = helpers.unzip(report.path, root / "unzipped")
    return Pristine(
        home=home, bundle=report.path, bag=bag, other_bundle=root / "other.zip", key=key,
        key_pem=key_pem, key_id=key.key_id, page_id=page.id, media_id=media_id,
        failed_id=failed.id, other_id=other.id, export_seq=report.ledger_seq,
        export_actor="lawyer@test.example", tsa_ca=tsa.ca.cert,
    )
