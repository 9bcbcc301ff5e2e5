"""The trusted-time part of ``archiver status``: per configured TSA, its newest token and
since when checkpoints have waited for one.

Apart from :mod:`archiver.timestamps` (which asks TSAs, and loads httpx and the RFC 3161
parser) so that ``archiver status`` answers in a blink: it reads two tables, named here
by the columns it needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from archiver.clock import rfc3339
from archiver.settings import TimestampSettings

# The columns read, of chain_of_custody.timestamp.tokens_table and
# chain_of_custody.ledger.checkpoints_table (a test holds the names equal).
tokens_table = sa.table("timestamp_tokens", sa.column("created"), sa.column("tree_size"),
                        sa.column("tsa_url"))
checkpoints_table = sa.table("ledger_checkpoints", sa.column("created"), sa.column("tree_size"))

STALE_AFTER = timedelta(days=1)
"""A TSA that left checkpoints without a token for longer than this is warned about."""


def timestamp_status(
    engine: sa.Engine, settings: TimestampSettings, now: datetime,
    *, stale_after: timedelta = STALE_AFTER,
) -> dict[str, Any]:
    """For ``archiver status``: per configured TSA, its newest token (when obtained, over
    how many entries) and since when checkpoints have waited for one.

    A TSA is ``overdue`` when a checkpoint made more than ``stale_after`` before ``now``
    is covered by no token of it (none on that checkpoint nor on a larger one): it has
    produced no token for longer than that while there was something to stamp. An idle
    archive (no new checkpoint) is not warned about; a TSA that fails silently is.
    """
    t, c = tokens_table.c, checkpoints_table.c
    cutoff = rfc3339(now - stale_after)
    authorities = []
    with engine.connect() as conn:
        for tsa in settings.authorities:
            last_created, stamped = conn.execute(
                sa.select(sa.func.max(t.created), sa.func.max(t.tree_size))
                .where(t.tsa_url == tsa.url)).one()
            waiting = sa.select(sa.func.min(c.created))
            if stamped is not None:
                waiting = waiting.where(c.tree_size > stamped)
            waiting_since = conn.execute(waiting).scalar_one()
            authorities.append({
                "url": tsa.url,
                "last_token": last_created,
                "stamped_tree_size": None if stamped is None else int(stamped),
                "unstamped_since": waiting_since,
                "overdue": waiting_since is not None and str(waiting_since) < cutoff,
            })
    return {"authorities": authorities, "stale_after_seconds": stale_after.total_seconds()}


def status_lines(report: dict[str, Any]) -> Iterator[str]:
    """The trusted-time part of ``archiver status`` for a person."""
    if not report["authorities"]:
        yield "timestamps: no TSA configured (checkpoints get no trusted time)"
        return
    yield f"timestamps: {len(report['authorities'])} TSA(s)"
    hours = report["stale_after_seconds"] / 3600
    for tsa in report["authorities"]:
        last = (f"last token {tsa['last_token']} (tree size {tsa['stamped_tree_size']})"
                if tsa["last_token"] else "no token yet")
        yield f"  {tsa['url']}: {last}"
        if tsa["overdue"]:
            yield (f"  WARNING: NO TRUSTED TIME from {tsa['url']} for more than {hours:g}h: "
                   f"checkpoints since {tsa['unstamped_since']} have no token from it; run "
                   "'archiver ledger timestamp' to see why")




__all__ = ["STALE_AFTER", "status_lines", "timestamp_status"]
