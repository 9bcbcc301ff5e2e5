"""Recorder tests: a pinned clock and pinned record ids (the fixture site and the WARC
judges are registered by ``tests/conftest.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture
def fixed_clock() -> Callable[[], datetime]:
    """A clock that starts at 2024-05-01T12:00:00Z and advances 1 ms per call."""
    ticks = itertools.count()
    start = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    return lambda: start + timedelta(milliseconds=next(ticks))


@pytest.fixture
def counting_ids() -> Callable[[], str]:
    """Record ids <urn:uuid:00000000-0000-0000-0000-000000000001>, …2, … in order."""
    counter = itertools.count(1)
    return lambda: f"<urn:uuid:00000000-0000-0000-0000-{next(counter):012d}>"
