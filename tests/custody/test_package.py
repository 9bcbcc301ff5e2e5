"""The package's small public surface, loaded lazily, and its one time format."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import chain_of_custody
from chain_of_custody.times import rfc3339


def test_rfc3339_is_one_format_with_a_seconds_form_for_display() -> None:
    moment = datetime(2026, 11, 24, 15, 3, 12, 5, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-24T15:03:12.000005Z"
    assert rfc3339(moment, timespec="seconds") == "2026-11-24T15:03:12Z"
    elsewhere = moment.astimezone(timezone(timedelta(hours=-5)))
    assert rfc3339(elsewhere) == "2026-11-24T15:03:12.000005Z"  # always UTC


def test_the_public_names_resolve_to_their_modules() -> None:
    from chain_of_custody.bundle import verify_bundle
    from chain_of_custody.manifest import Manifest

    assert chain_of_custody.Manifest is Manifest
    assert chain_of_custody.verify_bundle is verify_bundle
    assert set(chain_of_custody.__all__) <= set(dir(chain_of_custody))
    for name in chain_of_custody.__all__:
        getattr(chain_of_custody, name)


def test_importing_the_package_loads_nothing_heavy() -> None:
    """``import chain_of_custody`` (and its digests) must not load SQLAlchemy, x509 or the
    RFC 3161 client: the reading commands start in a blink."""
    probe = ("import sys, chain_of_custody, chain_of_custody.digest; "
             "print(sorted(m for m in ('sqlalchemy', 'rfc3161_client', 'cryptography') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
