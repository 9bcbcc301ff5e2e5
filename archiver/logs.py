"""Structured logs for the long-running processes (daemon, workers).

One event = one log record whose message is a short, stable event name
(``poll.finished``, ``job.claimed``) and whose fields ride in ``extra={"fields": {...}}``;
:func:`event` builds that. :func:`configure` installs one handler on the root logger,
rendering JSON lines when stderr is not a terminal (a service manager, a container, a
file) and ``time level event key=value`` text when a person is watching. Nothing here
runs at import time: only the CLI edge calls :func:`configure`.

Secrets never reach a log record: the settings' passphrase is a ``SecretStr`` and no event
takes the settings object as a field.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from archiver.urls import printable
from chain_of_custody.times import rfc3339

LogFormat = Literal["auto", "json", "text"]
_HANDLER_NAME = "evidence-archiver"


def event(logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log event ``name`` with ``fields`` (JSON-compatible values)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def _time(record: logging.LogRecord) -> str:
    return rfc3339(datetime.fromtimestamp(record.created, UTC))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, pid, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level event key=value …`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        # Fields carry URLs, titles, case names: one line each, whatever they hold.
        parts = [_time(record)[11:23], f"{record.levelname.lower():7}",
                 printable(record.getMessage())]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{key}={printable(str(value))}" for key, value in fields.items())
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(
    *, level: str = "info", log_format: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Route every log record to ``stream`` (default stderr), JSON unless it is a TTY.

    Calling it again replaces the handler it installed before (never duplicates it).
    """
    target = stream if stream is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not _is_tty(target))
    if use_json:
        # JSON lines are for programs: past the CLI's escaping of what people read
        # (archiver.cli.output), which would turn a DEL in a field into an invalid escape.
        target = getattr(target, "unaltered", target)
    handler = logging.StreamHandler(target)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler reports every run at INFO, Alembic every schema check; our own events
    # say what matters, once.
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
