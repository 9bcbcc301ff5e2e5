"""Recorder tests: the fixture site and the WARC judges, plus small helpers.

``tests/fixtures/*.py`` are loaded by path: pywb installs a top-level ``tests`` package
into site-packages, which shadows this repository's ``tests`` namespace, so
``import tests.fixtures.site`` (or ``pytest_plugins = ["tests.fixtures.site"]``) cannot
work until ``tests/__init__.py`` exists. The modules are registered in ``sys.modules`` as
``fixture_site`` and ``warc_judges`` so test modules can import them by those names.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_site = _load("fixture_site", FIXTURES / "site.py")
_load("warc_judges", FIXTURES / "warc_judges.py")

fixture_site = _site.fixture_site  # registers the session fixture for this package


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
