"""One poll of one watch: list its posts, queue a capture job for each new one.

A poll reads the watch, asks its source for the posts (newest first), and in ONE
transaction records the new ones in the watch's seen set, queues their capture jobs
(each with its ``capture.queued`` ledger entry: the moment the post was first seen is
evidence too) and stores the source's state. A crash mid-poll therefore leaves either
all of it or none: never a post marked seen without its job.

On a watch's first poll only the newest ``watch.backfill`` posts are captured; the rest
are marked seen, so they are not mistaken for new posts later. A post another watch or
an investigator already captured (or queued) for the same case is not captured again
(:meth:`archiver.watch.jobs.JobQueue.submit`), while a watch of another case following
the same URL captures it into its own case (each watch keeps its own seen set); a page
watched for changes is captured again whenever its content changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from archiver import models
from archiver.capture.values import SERVICE_ACTOR
from archiver.clock import Clock, rfc3339, utc_now
from archiver.logs import event
from archiver.settings import Settings
from archiver.urls import BadUrl, check_url
from archiver.watch.jobs import PRIORITY_WATCH, JobQueue, JobRequest
from archiver.watch.sources import ListRequest, Post, Source, SourceError
from archiver.watch.watches import ACTIVE, watch_view

log = logging.getLogger("archiver.poll")


@dataclass(frozen=True, slots=True)
class PollReport:
    watch_id: int
    ok: bool
    listed: int = 0
    new_posts: int = 0
    queued: int = 0
    pages: int = 0
    not_modified: bool = False
    error: str | None = None
    skipped: str | None = None
    lateness_seconds: float | None = None
    """How long after its due time (``anchor + k x every``) the poll started."""


def _key(post_key: str) -> str:
    return hashlib.sha256(post_key.encode("utf-8")).hexdigest()


def lateness(now: datetime, anchor: datetime, every: float) -> float:
    """Seconds since the last due time ``anchor + k x every`` at or before ``now``."""
    elapsed = (now - anchor).total_seconds()
    return 0.0 if elapsed < 0 else elapsed % every


class Poller:
    def __init__(
        self,
        engine: sa.Engine,
        queue: JobQueue,
        sources: Mapping[str, Source],
        *,
        settings: Settings,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.sources = sources
        self.settings = settings
        self.clock = clock

    def poll(self, watch_id: int) -> PollReport:
        """Poll once. Never raises for problems of the source (they are recorded on
        the watch and returned); raises only for database failures."""
        started = self.clock()
        began = time.monotonic()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(models.watches).where(models.watches.c.id == watch_id)
            ).first()
        if row is None or row.status != ACTIVE:
            return PollReport(watch_id, ok=False, skipped="not an active watch")
        watch = watch_view(row)
        late = lateness(started, datetime.fromisoformat(watch.anchor), watch.every_seconds)
        source = self.sources.get(watch.kind)
        first = watch.polls_ok == 0
        backfill = self.settings.watch.backfill
        try:
            if source is None:
                raise SourceError(f"no source for kind {watch.kind!r}")
            listing = source.list_posts(ListRequest(
                url=watch.source_url,
                state=json.loads(row.state) if row.state else {},
                want=backfill if first else None,
                max_pages=self.settings.watch.max_pages,
                page_size=self.settings.watch.page_size,
                known=lambda keys: self._known(watch_id, keys),
                pattern=watch.pattern,
            ))
        except SourceError as exc:
            return self._failed(watch_id, str(exc), late, began)
        except Exception as exc:  # the poll loop records any failure and carries on
            log.exception("poll.crashed", extra={"fields": {"watch": watch_id}})
            return self._failed(watch_id, f"internal error: {type(exc).__name__}: {exc}",
                                late, began)
        new, queued = self._record(watch_id, watch.case, listing.posts, listing.state,
                                   backfill if first else None)
        report = PollReport(watch_id, ok=True, listed=len(listing.posts), new_posts=new,
                            queued=queued, pages=listing.pages,
                            not_modified=listing.not_modified, lateness_seconds=late)
        event(log, "poll.finished", watch=watch_id, kind=watch.kind, listed=report.listed,
              new=new, queued=queued, pages=listing.pages, not_modified=listing.not_modified,
              due_at=rfc3339(started - timedelta(seconds=late)),
              lateness_ms=round(late * 1000, 3),
              duration_ms=round((time.monotonic() - began) * 1000, 3))
        return report

    def _known(self, watch_id: int, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        hashed = {_key(k): k for k in keys}
        p = models.watch_posts
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(p.c.key_sha256).where(p.c.watch_id == watch_id,
                                                p.c.key_sha256.in_(list(hashed)))
            ).scalars().all()
        return {hashed[h] for h in found}

    def _record(
        self, watch_id: int, case: str | None, posts: Sequence[Post],
        state: Mapping[str, object], backfill: int | None,
    ) -> tuple[int, int]:
        now_s = rfc3339(self.clock())
        p, w = models.watch_posts, models.watches
        posts = _checked_posts(watch_id, posts)
        with self.engine.begin() as conn:
            hashed = [(_key(post.key), post) for post in posts]
            seen = set(conn.execute(
                sa.select(p.c.key_sha256).where(
                    p.c.watch_id == watch_id, p.c.key_sha256.in_([h for h, _ in hashed]))
            ).scalars().all()) if hashed else set()
            new: list[tuple[str, Post]] = []
            for key, post in hashed:
                if key not in seen:
                    seen.add(key)
                    new.append((key, post))
            capture = new if backfill is None else new[:backfill]
            to_capture = {key for key, _ in capture}
            queued = 0
            # Oldest first, so job ids (and capture.queued entries) follow publication.
            for key, post in reversed(new):
                if not _insert_seen(conn, watch_id, key, post.url, now_s):
                    continue  # another poll of this watch recorded it first
                if key not in to_capture:
                    continue
                submitted = self.queue.submit(JobRequest(
                    url=post.url, requested_by=SERVICE_ACTOR, via="watch",
                    priority=PRIORITY_WATCH, source=f"watch:{watch_id}", case=case,
                    watch_id=watch_id, again=post.key.startswith("content:"),
                ), connection=conn)
                job = submitted.job or submitted.duplicate_of
                if submitted.job is not None:
                    queued += 1
                if job is not None:
                    conn.execute(sa.update(p).where(
                        p.c.watch_id == watch_id, p.c.key_sha256 == key).values(job_id=job.id))
            conn.execute(sa.update(w).where(w.c.id == watch_id).values(
                polls=w.c.polls + 1, polls_ok=w.c.polls_ok + 1, failures=0,
                last_poll_at=now_s, last_ok_at=now_s, last_error=None,
                last_new_posts=len(new), posts_seen=w.c.posts_seen + len(new),
                state=json.dumps(dict(state), sort_keys=True) if state else None,
            ))
        return len(new), queued

    def _failed(self, watch_id: int, message: str, late: float, began: float) -> PollReport:
        w = models.watches
        with self.engine.begin() as conn:
            conn.execute(sa.update(w).where(w.c.id == watch_id).values(
                polls=w.c.polls + 1, failures=w.c.failures + 1,
                last_poll_at=rfc3339(self.clock()), last_error=message[:2000],
            ))
        event(log, "poll.failed", level=logging.WARNING, watch=watch_id, error=message,
              lateness_ms=round(late * 1000, 3),
              duration_ms=round((time.monotonic() - began) * 1000, 3))
        return PollReport(watch_id, ok=False, error=message, lateness_seconds=late)


def _checked_posts(watch_id: int, posts: Sequence[Post]) -> list[Post]:
    """The posts whose URL :func:`archiver.urls.check_url` takes, as a URL found by a
    poll: a user name or password removed, one it refuses left out (counted in the log,
    never failing the poll)."""
    kept: list[Post] = []
    refused = stripped = 0
    for post in posts:
        try:
            checked = check_url(post.url, userinfo="strip")
        except BadUrl:
            refused += 1
            continue
        stripped += checked.had_userinfo
        kept.append(replace(post, url=checked.url))
    if refused or stripped:
        event(log, "poll.urls", level=logging.WARNING, watch=watch_id, invalid=refused,
              userinfo_stripped=stripped)
    return kept


def _insert_seen(conn: sa.Connection, watch_id: int, key: str, url: str, now_s: str) -> bool:
    table = models.watch_posts
    values = {"watch_id": watch_id, "key_sha256": key, "url": url, "first_seen": now_s}
    if conn.dialect.name == "postgresql":
        result = conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    else:
        result = conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)
