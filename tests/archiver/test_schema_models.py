"""The tables the code uses (archiver.models) are the ones the migrations make, on
SQLite and PostgreSQL: every column and index, the partial ones included."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from archiver import models, schema
from archiver.db import make_engine


def test_every_table_of_the_models_is_what_the_migrations_make(database_url: str) -> None:
    """No missing or differing table, column or index between archiver.models and the
    head migration (0010: watches unique per case, exports.reason,
    rate_limited_clients)."""
    engine = make_engine(database_url)
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            def ours(obj: object, name: str | None, kind: str, *_: object) -> bool:
                table = name if kind == "table" else getattr(getattr(obj, "table", None),
                                                             "name", None)
                return table in models.metadata.tables

            context = MigrationContext.configure(conn, opts={"include_object": ours})
            assert compare_metadata(context, models.metadata) == []
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("watches")}
            assert "rate_limited_clients" in sa.inspect(conn).get_table_names()
        assert {"ux_watches_live_case_url", "ux_watches_live_person_url",
                "ux_watches_live_operator_url"} <= indexes
        assert "ux_watches_live_url" not in indexes
    finally:
        engine.dispose()
