"""Database engines for the embedded default (SQLite) and for scale-out (PostgreSQL).

The same schema and code run on both. SQLite gets three adjustments here, in one place:

* every transaction starts with ``BEGIN IMMEDIATE``, so a writer takes the database
  write lock before it reads the ledger head; two processes appending to the ledger are
  therefore serialised instead of failing later with "database is locked" on upgrade;
  except on the engine :func:`reading` makes, for code that only reads (the API's
  lists and pages): its transactions are deferred, so fifty readers at once do not
  queue for the write lock;
* WAL journal, so readers (``archiver show``) do not block the writer;
* foreign keys on, and a busy timeout so a second writer waits instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_SECONDS = 60
READ_ONLY = "archiver_read_only"
"""The execution option that marks an engine's transactions as reading only."""


def sqlite_url_for(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (``sqlite:///…`` or ``postgresql+psycopg://…``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            **kwargs,
        )
        _make_sqlite_transactions_immediate(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _make_sqlite_transactions_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def reading(engine: Engine) -> Engine:
    """``engine`` for transactions that only read (same pool). On SQLite they begin
    deferred, taking no write lock (WAL lets them read beside a writer); a write in one
    would fail rather than wait, so only code that never writes may use it."""
    return engine.execution_options(**{READ_ONLY: True})
