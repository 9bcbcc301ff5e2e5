"""A token's use costs the database no write per request: every API call resolves one."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from people_fixtures import FakeClock

from archiver.archive import Archive
from archiver.people.access import Scope
from archiver.people.accounts import People


def writes_during(archive: Archive, call: Any) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            seen.append(statement)

    sa.event.listen(archive.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(archive.engine, "before_cursor_execute", record)
    return seen


def test_a_token_used_often_records_its_use_once_a_minute(
        archive: Archive, people: People, clock: FakeClock) -> None:
    """The first use writes last_used; uses within the minute write nothing (no prune,
    no last_used); a use a minute later writes last_used again."""
    people.add_user("tara", password="tara-long-passphrase-1")
    _view, secret = people.create_token("tara", scope=Scope.READ)
    asking = People(archive, actor="anonymous", context={"client": "127.0.0.1"})
    first = writes_during(archive, lambda: asking.resolve_token(secret, client="127.0.0.1"))
    assert len(first) == 1
    assert "last_used" in first[0]
    clock.advance(seconds=30)
    again = writes_during(archive, lambda: [asking.resolve_token(secret, client="127.0.0.1")
                                            for _ in range(5)])
    assert again == []
    clock.advance(seconds=31)
    later = writes_during(archive, lambda: asking.resolve_token(secret, client="127.0.0.1"))
    assert len(later) == 1
    assert "last_used" in later[0]
    row = people.list_tokens("tara")[0]
    assert row.last_used is not None
