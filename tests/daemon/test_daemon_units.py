"""Pure parts of the daemon: durations, the revisit schedule, what counts as gone, poll
lateness, structured logs, and the schema of migration 0002 against the models."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from archive_cli import Cli

from archiver import models, schema
from archiver.archive import Capture
from archiver.db import make_engine
from archiver.durations import format_duration, parse_duration
from archiver.logs import JsonFormatter, configure, event
from archiver.settings import RemovalMarker, Settings
from archiver.watch.poller import lateness
from archiver.watch.revisit import GoneVerdict, gone_by_status, match_marker, next_step

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600),
    ("0.5s", 0.5), ("45", 45), (" 1H ", 3600), (12, 12),
])
def test_durations_parse(text: str | int, seconds: float) -> None:
    """Unit suffixes s m h d w, combinations, bare seconds, numbers."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "15x", "m15", "1h 30", "0s", "-5m", "nan"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else is a ValueError quoting the text."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_print_in_their_shortest_exact_form() -> None:
    """900 → 15m, 5400 → 1h30m, 604800 → 1w, fractions in seconds; and they parse back."""
    for seconds, text in ((900, "15m"), (5400, "1h30m"), (604800, "1w"), (1.5, "1.5s"),
                          (90061, "1d1h1m1s")):
        assert format_duration(seconds) == text
        assert parse_duration(text) == seconds


def test_durations_in_settings() -> None:
    """Config takes durations as text or seconds; the revisit schedule is a list of them."""
    settings = Settings(watch={"default_every": "15m"},  # type: ignore[arg-type]
                        revisit={"schedule": ["1h", 21600, "1d"]})  # type: ignore[arg-type]
    assert settings.watch.default_every == 900
    assert settings.revisit.schedule == (3600, 21600, 86400)
    with pytest.raises(ValueError, match="not a duration"):
        Settings(daemon={"drain_seconds": "a while"})  # type: ignore[arg-type]


def test_revisit_steps_decay_and_missed_steps_coalesce() -> None:
    """After a visit, the next step is the first one still ahead: visits are not repeated
    to catch up after downtime, and the plan ends when no step is left."""
    schedule = (3600.0, 21600.0, 86400.0, 604800.0)
    assert next_step(T0, schedule, 0, T0 + timedelta(hours=1, minutes=1)) == 1
    assert next_step(T0, schedule, 1, T0 + timedelta(hours=7)) == 2
    assert next_step(T0, schedule, 0, T0 + timedelta(days=2)) == 3
    assert next_step(T0, schedule, 0, T0 + timedelta(days=8)) is None
    assert next_step(T0, schedule, 3, T0 + timedelta(days=1)) is None


def _view(*, status: str = "completed", http_status: int | None = 200,
          reason: str | None = None, outcomes: dict[str, object] | None = None) -> Capture:
    fields = {f: None for f in Capture.__dataclass_fields__}
    fields.update(id="c1", url="https://x/p", requested_by="a", requested_via="revisit",
                  requested_at="2026-05-01T12:00:00.000000Z", status=status, reason=reason,
                  http_status=http_status, artifacts=())
    if "outcomes" in fields:
        fields["outcomes"] = outcomes or {}
    return Capture(**fields)  # type: ignore[arg-type]


def test_what_counts_as_gone() -> None:
    """404 and 410 answers, and a `removed` reason (the capture's or a fetcher's, as
    yt-dlp reports a removed video); a 200, a 500 or a network failure do not."""
    assert gone_by_status(_view(http_status=404)) == GoneVerdict("http-404")
    assert gone_by_status(_view(http_status=410)) == GoneVerdict("http-410")
    assert gone_by_status(_view(status="failed", http_status=None, reason="removed")) == \
        GoneVerdict("removed")
    assert gone_by_status(_view(http_status=500)) is None
    assert gone_by_status(_view(status="failed", http_status=None, reason="network")) is None
    if "outcomes" in Capture.__dataclass_fields__:
        media_removed = _view(outcomes={"media": {"status": "failed", "reason": "removed"}})
        assert gone_by_status(media_removed) == GoneVerdict("removed")


def test_removal_markers_match_final_url_or_page_text() -> None:
    """A platform's removal page: matched by where the revisit ended up, or by its text."""
    markers = (RemovalMarker(name="redirected", final_url=r"/unavailable$"),
               RemovalMarker(name="notice", body=r"(?i)this post was removed"))
    assert match_marker(markers, "https://x/unavailable", None) == markers[0]
    assert match_marker(markers, "https://x/p", "<p>This post was REMOVED</p>") == markers[1]
    assert match_marker(markers, "https://x/p", "<p>still here</p>") is None
    with pytest.raises(ValueError, match="not a regular expression"):
        RemovalMarker(name="bad", body="(")


def test_poll_lateness_is_measured_from_the_last_due_time() -> None:
    """Polls are due at anchor + k x every: lateness is the time since the last of those
    (a coalesced run after downtime is late by the latest missed due time, as APScheduler
    runs it), and zero before the anchor."""
    assert lateness(T0 + timedelta(seconds=905), T0, 900) == 5
    assert lateness(T0 + timedelta(seconds=30), T0, 900) == 30
    assert lateness(T0 - timedelta(seconds=5), T0, 900) == 0


def test_json_logs_carry_the_event_and_its_fields() -> None:
    """One JSON object per line: time, level, logger, event name, pid, then the fields."""
    stream = io.StringIO()
    configure(level="info", log_format="auto", stream=stream)  # StringIO is no TTY
    logger = logging.getLogger("archiver.test")
    event(logger, "poll.finished", watch=3, new=2)
    event(logger, "hidden", level=logging.DEBUG, x=1)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "poll.finished"
    assert (record["watch"], record["new"], record["level"]) == (3, 2, "info")
    assert record["logger"] == "archiver.test"
    assert record["time"].endswith("Z")


def test_text_logs_on_a_terminal_and_no_duplicate_handlers() -> None:
    """On a TTY the same event reads as text; configuring again replaces the handler."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    configure(stream=stream)
    configure(stream=stream)
    event(logging.getLogger("archiver.test"), "job.finished", job=7)
    (line,) = stream.getvalue().splitlines()
    assert "info    job.finished job=7" in line
    logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                    if h.get_name() != "evidence-archiver"]


def test_json_formatter_keeps_exceptions() -> None:
    """An exception logged with a record is rendered into the JSON, not lost."""
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "crash", None,
                                   exc_info=__import__("sys").exc_info())
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_migration_0002_creates_exactly_the_daemon_tables(database_url: str) -> None:
    """The tables the code uses (archiver.models) are the ones migration 0002 makes:
    no missing or differing column or index between the two."""
    engine = make_engine(database_url)
    try:
        schema.upgrade(engine)
        ours = {"watches", "watch_posts", "jobs", "job_attempts", "job_hosts", "revisits",
                "daemon_processes"}
        with engine.connect() as conn:
            def ours_only(obj: object, name: str | None, kind: str, *_: object) -> bool:
                table = name if kind == "table" else getattr(getattr(obj, "table", None),
                                                             "name", None)
                return table in ours

            context = MigrationContext.configure(conn, opts={"include_object": ours_only})
            differences = compare_metadata(context, models.metadata)
            tables = set(sa.inspect(conn).get_table_names())
        assert differences == []
        assert ours | {models.APSCHEDULER_TABLE} <= tables
    finally:
        engine.dispose()


def test_example_config_documents_every_daemon_setting() -> None:
    """config/default.toml names every [daemon], [watch] and [revisit] setting."""
    text = (Path(__file__).resolve().parents[2] / "config" / "default.toml").read_text()
    for section, model in (("daemon", Settings.model_fields["daemon"]),
                           ("watch", Settings.model_fields["watch"]),
                           ("revisit", Settings.model_fields["revisit"])):
        assert f"[{section}]" in text
        block = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
        annotation = model.annotation
        assert annotation is not None
        for name in annotation.model_fields:
            assert name in block, f"{section}.{name} is not documented"


def test_a_stop_asked_for_while_the_daemon_opens_the_archive_ends_it_cleanly(
    cli: Cli, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM while the daemon is still opening the archive (closing abandoned captures,
    decrypting the key: seconds on a busy machine) is kept and honoured: the daemon
    returns 0 without starting work, instead of dying by the signal."""
    import signal as signals

    from archiver.archive import Archive
    from archiver.watch import daemon as daemon_module

    real_open = Archive.open
    handlers: list[object] = []

    def open_and_be_stopped(*args: Any, **kwargs: Any) -> Archive:
        handler = signals.getsignal(signals.SIGTERM)
        handlers.append(handler)
        assert callable(handler), "no SIGTERM handler while the archive is opened"
        handler(signals.SIGTERM, None)  # what the kernel would do on `kill -TERM`
        return real_open(*args, **kwargs)

    previous = signals.getsignal(signals.SIGTERM), signals.getsignal(signals.SIGINT)
    monkeypatch.setattr(Archive, "open", open_and_be_stopped)
    try:
        assert daemon_module.run_daemon(cli.settings(), workers=1) == 0
    finally:
        signals.signal(signals.SIGTERM, previous[0])
        signals.signal(signals.SIGINT, previous[1])
    assert len(handlers) == 1
