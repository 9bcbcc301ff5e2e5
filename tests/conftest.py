"""Fixtures shared by every test: databases (SQLite and PostgreSQL) and paths.

Every test that takes ``database_url`` runs twice: on a fresh SQLite file and in a fresh
schema of the PostgreSQL server on 127.0.0.1:5432. When that server is unreachable the
PostgreSQL run is skipped *with the reason shown*, unless ``TEST_REQUIRE_POSTGRES=1``
(set by ``.ci/run`` when it found a server), in which case it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES_BASE_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


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


@pytest.fixture
def vectors_dir() -> Path:
    path = VECTORS
    assert path.is_dir(), f"test vectors missing at {path}"
    return path
