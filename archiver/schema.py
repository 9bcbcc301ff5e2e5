"""Create and upgrade the database schema with Alembic, programmatically.

Opening an archive only *checks* the schema's revision, on every command; that must not
cost Alembic's import (a tenth of a second, more than ``archiver list`` may take), so
:func:`head_revision` and :func:`current_revision` read the migration files' revision
lines and the ``alembic_version`` table directly. :func:`upgrade` (``archiver init``)
runs Alembic itself. A test holds both readings equal to Alembic's.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

import archiver.migrations
from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(archiver.migrations.__file__).resolve().parent
_REVISION = re.compile(r'^(down_revision|revision) = (?:"([^"]*)"|None)\s*$', re.MULTILINE)


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision of the migrations shipped with this version: the one no
    other migration names as its ``down_revision``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            if name == "revision":
                revisions.add(value)
            elif value:
                parents.add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise ArchiverError(f"the migrations have {len(heads)} heads, not one: {heads}")
    return heads.pop()


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            version = sa.table("alembic_version", sa.column("version_num"))
            found = conn.execute(sa.select(version.c.version_num)).scalars().all()
    except sa.exc.OperationalError as exc:
        raise ArchiverError(f"cannot open the database: {exc.orig}") from exc
    return found[0] if len(found) == 1 else None


def upgrade(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    from alembic import command

    config = _config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except sa.exc.OperationalError as exc:
        raise ArchiverError(f"cannot create the database schema: {exc.orig}") from exc
