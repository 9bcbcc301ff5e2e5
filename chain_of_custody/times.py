"""The one way this package writes a moment: RFC 3339, in UTC, with a ``Z``.

Ledger entries, checkpoints, timestamp tokens and bundle reports all stamp times with
:func:`rfc3339`, so that a time read in one of them compares, as text, with a time read
in another (``archiver.clock`` re-exports it for the application).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

_FORMATS = {
    "microseconds": "%Y-%m-%dT%H:%M:%S.%fZ",
    "seconds": "%Y-%m-%dT%H:%M:%SZ",
}


def rfc3339(
    moment: datetime, *, timespec: Literal["microseconds", "seconds"] = "microseconds"
) -> str:
    """``moment`` in UTC as RFC 3339 text ending in ``Z``.

    ``timespec="microseconds"`` (the default) is the format of everything recorded:
    ledger entries, checkpoints, tokens, manifests. ``"seconds"`` drops the fraction, for
    text shown to people (a token's genTime in a verification report). A naive
    ``moment`` is taken as local time, as :meth:`datetime.astimezone` does.
    """
    return moment.astimezone(UTC).strftime(_FORMATS[timespec])
