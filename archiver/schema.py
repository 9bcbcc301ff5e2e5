"""Create and upgrade the database schema with Alembic, programmatically."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import archiver.migrations
from archiver.errors import ArchiverError

MIGRATIONS_DIR = Path(archiver.migrations.__file__).resolve().parent


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise ArchiverError(f"cannot open the database: {exc.orig}") from exc


def upgrade(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    config = _config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except sa.exc.OperationalError as exc:
        raise ArchiverError(f"cannot create the database schema: {exc.orig}") from exc
