"""One person's activity is read through an index on the ledger's actor, not by a scan
of the whole ledger: ``GET /api/users/{login}/activity``, ``GET /api/ledger/entries
?actor=`` and ``archiver ledger list --actor`` (Ledger.entries). The statements the real
code sends are caught on the engine and handed to SQLite's EXPLAIN QUERY PLAN."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from api_fixtures import Api

from archiver.cli.ledger import actor_filter

INDEX = "ix_ledger_entries_actor_seq"


@contextmanager
def statements(*engines: sa.Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on ledger_entries filtered by actor sent on ``engines`` (the
    archive's, and its reading one) while the block runs."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT") and "FROM ledger_entries" in statement \
                and "ledger_entries.actor" in statement.split("WHERE", 1)[-1]:
            seen.append((statement, parameters))

    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", record)


def plan(engine: sa.Engine, statement: str, parameters: Any) -> str:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


def test_a_persons_activity_is_read_through_the_actor_index(api: Api) -> None:
    engine = api.archive.engine
    with engine.connect() as conn:
        indexes = {i["name"]: i["column_names"]
                   for i in sa.inspect(conn).get_indexes("ledger_entries")}
    assert indexes[INDEX] == ["actor", "seq"]
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan is read with SQLite's EXPLAIN QUERY PLAN (PostgreSQL's "
                    "planner reads tables this small whole, whatever their indexes)")
    bob = api.user("bob", cases={"Case 7": "investigator"})
    olga = api.user("olga", "auditor", cases={})
    bob.client().get("/api/me")  # bob's sign-in: an entry of his
    reader = olga.client()
    # the reading engine (Archive.reader) shares the engine's events: one listener sees both
    with statements(engine) as seen:
        mine = reader.get("/api/users/bob/activity")
        listed = reader.get("/api/ledger/entries", params={"actor": "bob",
                                                            "action": "auth.*"})
        entries = list(api.archive.ledger.entries(actors=actor_filter("bob")))
    assert mine.status_code == listed.status_code == 200
    assert [e["action"] for e in mine.json()["items"]] == ["auth.login"]
    assert [e["action"] for e in listed.json()["items"]] == ["auth.login"]
    assert [e.action for e in entries] == ["auth.login"]
    assert len(seen) == 3
    for statement, parameters in seen:
        chosen = plan(engine, statement, parameters)
        assert f"USING INDEX {INDEX} (actor=?" in chosen \
            or f"USING COVERING INDEX {INDEX} (actor=?" in chosen, (statement, chosen)
