"""Readers of the API do not queue behind a writer on SQLite (archiver.db.reading)."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from archiver.db import make_engine, reading


def test_a_reading_transaction_reads_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    """A transaction of the reading engine begins deferred: it reads the last committed
    state beside a writer's open transaction instead of waiting for the write lock
    (which every transaction of the plain engine takes at BEGIN IMMEDIATE)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    seen: list[int] = []

    def read() -> None:
        with reading(engine).connect() as conn:
            seen.append(int(conn.execute(sa.text("SELECT count(*) FROM t")).scalar_one()))

    with engine.begin() as writer:
        writer.execute(sa.text("INSERT INTO t VALUES (2)"))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=20)  # a reader waiting for the lock would wait 60 s
        assert seen == [1], "the reader waited for the writer's lock"
    engine.dispose()


def test_the_plain_engine_still_takes_the_write_lock_first(tmp_path: Path) -> None:
    """Writers keep BEGIN IMMEDIATE: the reading engine's option does not leak into it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(statement))
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    with reading(engine).connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    engine.dispose()
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]
