"""Watchlists: what the daemon polls, how often, for which case.

A watch is one URL (an account's feed, outbox, author feed, channel, preview page, or any
page), its source kind, its interval and optional case and link pattern. Adding, pausing,
resuming and removing a watch are ledger events (``watch.added``, ``watch.paused``,
``watch.resumed``, ``watch.removed``, subject ``watch:<id>``), committed in the same
transaction as the change. Removing keeps the row (status ``removed``): the ledger and the
captures still refer to it. Nothing here talks to the scheduler: the daemon picks changes
up from the table (each change bumps ``version``), so the CLI works on any machine.

Polls are due at ``anchor + k x every``. ``watch add`` anchors at now (first poll at
once); ``watch import`` spreads the anchors of a long list over the interval (at most one
first poll per second from a short list, evenly over ``every`` for a long one), so ten
thousand imported watches do not all fall due in the same second, every time.

Watchlist files (``watch import`` / ``watch export``): CSV with the header
``url,kind,every,case,pattern``, or TOML with one ``[[watch]]`` table per watch and the
same keys. Only ``url`` is required; an unknown column or key is an error naming it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from archiver import models
from archiver.archive import Archive
from archiver.cases import check_case_name
from archiver.clock import Clock, rfc3339
from archiver.durations import format_duration, parse_duration
from archiver.errors import ArchiverError, BadInput, ConfigError, FetchRefused, NotFoundError
from archiver.recorder.guard import check_url
from archiver.urls import check_text, submitted_url
from archiver.urls import check_url as checked_url
from archiver.watch.jobs import PERSON_PREFIX
from archiver.watch.sources import GuardedFetcher, detect
from archiver.watch.sources.base import KINDS, SourceError
from archiver.watch.sources.bluesky import actor_of
from archiver.watch.sources.telegram import preview_url

ACTIVE, PAUSED, REMOVED = "active", "paused", "removed"
FILE_FIELDS = ("url", "kind", "every", "case", "pattern")
FORMATS = ("toml", "csv")


class WatchError(ArchiverError):
    """A watch cannot be added or changed as asked (already watched, bad file, …)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSpec:
    """A watch as a person writes it (``watch add`` arguments, one watchlist line)."""

    url: str
    kind: str = "auto"
    every: float | None = None
    case: str | None = None
    pattern: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchView:
    id: int
    url: str
    kind: str
    source_url: str
    pattern: str | None
    case: str | None
    every_seconds: float
    anchor: str
    status: str
    created: str
    created_by: str
    changed: str
    polls: int
    polls_ok: int
    failures: int
    last_poll_at: str | None
    last_ok_at: str | None
    last_error: str | None
    last_new_posts: int | None
    posts_seen: int

    @property
    def every(self) -> str:
        return format_duration(self.every_seconds)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.url, "kind": self.kind, "source_url": self.source_url,
            "pattern": self.pattern, "case": self.case, "every": self.every,
            "every_seconds": self.every_seconds, "anchor": self.anchor, "status": self.status,
            "created": self.created, "created_by": self.created_by, "changed": self.changed,
            "polls": self.polls, "polls_ok": self.polls_ok, "failures": self.failures,
            "last_poll_at": self.last_poll_at, "last_ok_at": self.last_ok_at,
            "last_error": self.last_error, "last_new_posts": self.last_new_posts,
            "posts_seen": self.posts_seen,
        }

    def spec(self) -> WatchSpec:
        return WatchSpec(url=self.url, kind=self.kind, every=self.every_seconds,
                         case=self.case, pattern=self.pattern)


def watch_view(row: Any) -> WatchView:
    return WatchView(
        id=row.id, url=row.url, kind=row.kind, source_url=row.source_url, pattern=row.pattern,
        case=row.case_name, every_seconds=row.every_seconds, anchor=row.anchor,
        status=row.status, created=row.created, created_by=row.created_by, changed=row.changed,
        polls=row.polls, polls_ok=row.polls_ok, failures=row.failures,
        last_poll_at=row.last_poll_at, last_ok_at=row.last_ok_at, last_error=row.last_error,
        last_new_posts=row.last_new_posts, posts_seen=row.posts_seen,
    )


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: tuple[WatchView, ...]
    skipped: tuple[tuple[WatchSpec, str], ...]
    """Specs not added, with why (the URL is watched already)."""
    refused: tuple[tuple[WatchSpec, str], ...] = ()
    """Specs refused, with why (a bad URL, kind, interval or pattern), when
    :meth:`Watchlist.add_many` was asked to report them instead of raising."""


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def watch_scope(case: str | None, created_by: str) -> tuple[str, str]:
    """Among whose watches a URL may be watched once: a case's (any creator), an unfiled
    person's own (``user:<login>``), or the operator's and the service's unfiled ones
    together (the unique indexes of migration 0010; unfiled jobs are grouped alike by
    :func:`archiver.watch.jobs.JobQueue.submit`).

    Threat model: a URL watched once in the whole archive told a member of one case that
    someone, somewhere, watches it; now only a watch of the same scope refuses it."""
    if case is not None:
        return ("case", case)
    if created_by.startswith(PERSON_PREFIX):
        return ("person", created_by)
    return ("operator", "")


def same_scope(case: str | None, created_by: str) -> list[sa.ColumnElement[bool]]:
    """The watches of :func:`watch_scope` ``(case, created_by)``, as SQL conditions."""
    w = models.watches.c
    if case is not None:
        return [w.case_name == case]
    if created_by.startswith(PERSON_PREFIX):
        return [w.case_name.is_(None), w.created_by == created_by]
    by_person = sa.func.substr(w.created_by, 1, len(PERSON_PREFIX)) == PERSON_PREFIX
    return [w.case_name.is_(None), sa.not_(by_person)]


class Watchlist:
    """Watchlist operations on an open archive, as ``actor`` (default: the operator).

    ``context`` (what a person acted through: token or session id, client address) is
    recorded under ``"context"`` in every ``watch.*`` payload when given."""

    def __init__(
        self,
        archive: Archive,
        *,
        actor: str | None = None,
        context: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        fetcher: GuardedFetcher | None = None,
    ) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.actor = actor or archive.settings.operator
        self.context = dict(context) if context else None
        self.clock = clock or archive.clock
        self._fetcher = fetcher

    # -- adding ------------------------------------------------------------------------

    def add(self, spec: WatchSpec) -> WatchView:
        """Add one watch, polled first at once. Raises :class:`WatchError` (already
        watched), :class:`ConfigError` (interval below ``watch.min_every``),
        :class:`SourceError` (``auto`` could not fetch or recognise the URL)."""
        report = self.add_many([spec], spread=False)
        if report.skipped:
            raise WatchError(report.skipped[0][1])
        return report.added[0]

    def add_many(self, specs: Sequence[WatchSpec], *, spread: bool = True,
                 report_refused: bool = False) -> ImportReport:
        """Add every spec in one transaction (all or none); a URL already watched in the
        same scope (:func:`watch_scope`: the same case, or unfiled by the same person)
        is skipped, not an error. Kinds are detected before the transaction begins.

        A spec that cannot be watched (bad URL, kind, interval, pattern; ``auto`` that
        recognises nothing) raises, unless ``report_refused``: then it lands in
        :attr:`ImportReport.refused` with why, and the others are added."""
        resolved: list[tuple[WatchSpec, str, str, float]] = []
        refused: list[tuple[WatchSpec, str]] = []
        for spec in specs:
            try:
                resolved.append(self._resolve(spec))
            except (WatchError, ConfigError, BadInput, SourceError) as exc:
                if not report_refused:
                    raise
                refused.append((spec, str(exc)))
        now = self.clock()
        added: list[WatchView] = []
        skipped: list[tuple[WatchSpec, str]] = []
        w = models.watches
        with self.archive.engine.begin() as conn:
            live = {
                (row.url_sha256, watch_scope(row.case_name, row.created_by)): row.id
                for row in conn.execute(
                    sa.select(w.c.id, w.c.url_sha256, w.c.case_name, w.c.created_by)
                    .where(w.c.status != REMOVED)
                )
            }
            for index, (spec, kind, source_url, every) in enumerate(resolved):
                key = (url_sha256(spec.url), watch_scope(spec.case, self.actor))
                if key in live:
                    skipped.append((spec, f"{spec.url} is already watched (watch {live[key]})"))
                    continue
                step = min(every / max(len(resolved), 1), 1.0) if spread else 0.0
                anchor = now + timedelta(seconds=index * step)
                watch_id = self._insert(conn, spec, kind, source_url, every, anchor, now)
                live[key] = watch_id
                added.append(self._get(conn, watch_id))
        if added:
            self._checkpoint()
        return ImportReport(tuple(added), tuple(skipped), tuple(refused))

    def _resolve(self, spec: WatchSpec) -> tuple[WatchSpec, str, str, float]:
        # A watched URL is a submitted one: checked and normalised, a password refused
        # (BadInput); case and pattern must be text the archive can keep.
        spec = replace(spec, url=submitted_url(spec.url))
        for what, text in (("the case", spec.case), ("the pattern", spec.pattern)):
            if text is not None:
                check_text(text, f"{what} of the watch of {spec.url}")
        if spec.case is not None:
            check_case_name(spec.case)  # its posts would make a case of that name
        every = spec.every if spec.every is not None else self.settings.watch.default_every
        minimum = self.settings.watch.min_every
        if every < minimum:
            raise ConfigError(
                f"every {format_duration(every)} for {spec.url} is more often than "
                f"watch.min_every ({format_duration(minimum)}) allows"
            )
        try:
            check_url(spec.url,
                      allow_private_networks=self.settings.capture.allow_private_networks)
        except FetchRefused as exc:
            raise WatchError(str(exc)) from exc
        if spec.pattern is not None:
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                raise WatchError(f"bad --pattern {spec.pattern!r}: {exc}") from exc
        kind = spec.kind
        if kind == "auto":
            detected = detect(spec.url, self._fetch(),
                              bluesky_web=self.settings.watch.bluesky_web)
            if spec.pattern is not None and detected.kind != "page":
                raise WatchError(f"--pattern applies to pages, and {spec.url} looks like a "
                                 f"{detected.kind}; give --kind page to watch its links")
            # the feed or API address detection found: a found URL, never with a password
            source = checked_url(detected.source_url, userinfo="strip").url
            return spec, detected.kind, source, every
        if kind not in KINDS:
            raise WatchError(f"unknown watch kind {kind!r} (one of auto, {', '.join(KINDS)})")
        if kind == "telegram":
            return spec, kind, preview_url(spec.url), every
        if kind == "bluesky":
            actor_of(spec.url)  # raises SourceError for a URL that names no profile
        if spec.pattern is not None and kind != "page":
            raise WatchError("--pattern applies only to --kind page")
        return spec, kind, spec.url, every

    def _fetch(self) -> GuardedFetcher:
        if self._fetcher is None:
            self._fetcher = GuardedFetcher.from_settings(self.settings)
        return self._fetcher

    def _insert(
        self, conn: sa.Connection, spec: WatchSpec, kind: str, source_url: str, every: float,
        anchor: datetime, now: datetime,
    ) -> int:
        now_s = rfc3339(now)
        inserted = conn.execute(
            sa.insert(models.watches).values(
                url=spec.url, url_sha256=url_sha256(spec.url), kind=kind,
                source_url=source_url, pattern=spec.pattern, case_name=spec.case,
                every_seconds=every, anchor=rfc3339(anchor), status=ACTIVE, created=now_s,
                created_by=self.actor, changed=now_s, version=1, synced_version=None,
                state=None, polls=0, polls_ok=0, failures=0, posts_seen=0,
            )
        )
        primary_key = inserted.inserted_primary_key
        assert primary_key is not None
        watch_id = int(primary_key[0])
        self.archive.ledger.append(
            actor=self.actor,
            action="watch.added",
            subject=f"watch:{watch_id}",
            payload=self._payload({
                "watch_id": watch_id, "url": spec.url, "kind": kind,
                "source_url": source_url, "every_seconds": every, "case": spec.case,
                "pattern": spec.pattern}),
            connection=conn,
        )
        return watch_id

    # -- changing ----------------------------------------------------------------------

    def pause(self, watch_id: int) -> WatchView:
        return self._change(watch_id, PAUSED, "watch.paused", allowed=(ACTIVE,))

    def resume(self, watch_id: int) -> WatchView:
        return self._change(watch_id, ACTIVE, "watch.resumed", allowed=(PAUSED,))

    def remove(self, watch_id: int) -> WatchView:
        return self._change(watch_id, REMOVED, "watch.removed", allowed=(ACTIVE, PAUSED))

    def _change(
        self, watch_id: int, status: str, action: str, *, allowed: tuple[str, ...]
    ) -> WatchView:
        w = models.watches
        with self.archive.engine.begin() as conn:
            current = self._get(conn, watch_id)
            if current.status == status:
                return current  # already so: nothing to record
            if current.status not in allowed:
                raise WatchError(f"watch {watch_id} is {current.status}")
            conn.execute(
                sa.update(w).where(w.c.id == watch_id).values(
                    status=status, changed=rfc3339(self.clock()), version=w.c.version + 1,
                )
            )
            self.archive.ledger.append(
                actor=self.actor, action=action, subject=f"watch:{watch_id}",
                payload=self._payload({"watch_id": watch_id, "url": current.url}),
                connection=conn,
            )
            changed = self._get(conn, watch_id)
        self._checkpoint()
        return changed

    def _payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.context:
            payload["context"] = dict(self.context)
        return payload

    def _checkpoint(self) -> None:
        if self.settings.ledger.checkpoint_after_capture:
            self.archive.checkpoint()

    # -- reading -----------------------------------------------------------------------

    def get(self, watch_id: int) -> WatchView:
        """Raises :class:`NotFoundError`."""
        with self.archive.engine.connect() as conn:
            return self._get(conn, watch_id)

    @staticmethod
    def _get(conn: sa.Connection, watch_id: int) -> WatchView:
        row = conn.execute(
            sa.select(models.watches).where(models.watches.c.id == watch_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no watch {watch_id}")
        return watch_view(row)

    def list(self, *, include_removed: bool = False) -> list[WatchView]:
        w = models.watches
        query = sa.select(w).order_by(w.c.id)
        if not include_removed:
            query = query.where(w.c.status != REMOVED)
        with self.archive.engine.connect() as conn:
            return [watch_view(row) for row in conn.execute(query)]

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()


# -- watchlist files -------------------------------------------------------------------


def format_of(path: Path, given: str | None) -> str:
    """``csv`` or ``toml``, from ``given`` or the file's suffix. Raises ConfigError."""
    fmt = given or path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the format of {path}: name it .csv or .toml, "
                          "or give --format csv|toml")
    return fmt


def read_watchlist(text: str, fmt: str, *, name: str = "watchlist") -> list[WatchSpec]:
    """Parse a watchlist file. Raises :class:`WatchError` naming the line or entry."""
    if fmt == "csv":
        return _read_csv(text, name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WatchError(f"{name} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"watch"}
    if unknown:
        raise WatchError(f"{name}: unknown top-level key(s) {sorted(unknown)}; "
                         "write one [[watch]] table per watch")
    entries = data.get("watch", [])
    if not isinstance(entries, list):
        raise WatchError(f"{name}: 'watch' must be an array of tables ([[watch]])")
    return [_spec({k: v for k, v in entry.items()}, f"{name}: watch #{number}")
            for number, entry in enumerate(entries, 1)]


def _read_csv(text: str, name: str) -> list[WatchSpec]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    unknown = set(reader.fieldnames) - set(FILE_FIELDS)
    if unknown or "url" not in reader.fieldnames:
        raise WatchError(f"{name}: the header must be {','.join(FILE_FIELDS)} "
                         f"(only url is required); unknown column(s): {sorted(unknown)}")
    specs = []
    for row in reader:
        values = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        if not values:
            continue
        specs.append(_spec(values, f"{name}: line {reader.line_num}"))
    return specs


def _spec(values: dict[str, Any], where: str) -> WatchSpec:
    unknown = set(values) - set(FILE_FIELDS)
    if unknown:
        raise WatchError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key, value in values.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise WatchError(f"{where}: {key} must be text")
    url = str(values.get("url", "")).strip()
    if not url:
        raise WatchError(f"{where}: no url")
    every = None
    if "every" in values:
        try:
            every = parse_duration(values["every"])
        except ValueError as exc:
            raise WatchError(f"{where}: {exc}") from exc
    return WatchSpec(
        url=url, kind=str(values.get("kind", "auto")).strip() or "auto", every=every,
        case=str(values["case"]) if values.get("case") else None,
        pattern=str(values["pattern"]) if values.get("pattern") else None,
    )


def write_watchlist(watches: Sequence[WatchView], fmt: str) -> str:
    """The watches as a watchlist file that ``watch import`` reads back."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FILE_FIELDS)
        for w in watches:
            writer.writerow([w.url, w.kind, w.every, w.case or "", w.pattern or ""])
        return out.getvalue()
    lines = ["# Evidence Archiver watchlist (archiver watch import FILE reads it back)"]
    for w in watches:
        lines += ["", "[[watch]]", f"url = {_toml_string(w.url)}", f"kind = {_toml_string(w.kind)}",
                  f"every = {_toml_string(w.every)}"]
        if w.case:
            lines.append(f"case = {_toml_string(w.case)}")
        if w.pattern:
            lines.append(f"pattern = {_toml_string(w.pattern)}")
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    # A JSON string with every non-ASCII character escaped is a TOML basic string, except
    # for DEL, which TOML wants escaped too.
    return json.dumps(value, ensure_ascii=True).replace("\x7f", "\\u007f")
