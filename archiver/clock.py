"""Time and identifiers, injected wherever something is stamped (tests pin them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """UTC, microseconds, 'Z': the one time format of manifests, ledger and CLI."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_capture_id() -> str:
    return str(uuid.uuid4())
