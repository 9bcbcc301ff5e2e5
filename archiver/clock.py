"""Time and identifiers, injected wherever something is stamped (tests pin them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from chain_of_custody.times import rfc3339

Clock = Callable[[], datetime]
IdFactory = Callable[[], str]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_capture_id() -> str:
    return str(uuid.uuid4())


__all__ = ["Clock", "IdFactory", "new_capture_id", "rfc3339", "utc_now"]
