"""Durations as people write them in watchlists and config: ``90s``, ``15m``, ``1h30m``, ``7d``.

Pure functions, no clock: parsing and printing only. Units: ``s`` seconds, ``m`` minutes,
``h`` hours, ``d`` days, ``w`` weeks; a bare number is seconds.
"""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str | float | int) -> float:
    """Seconds in ``text`` (``"15m"``, ``"1h30m"``, ``"2s"``, ``"45"``, or a number).

    Raises ``ValueError`` naming the text when it is not a positive, finite duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        compact = text.strip().lower().replace(" ", "")
        if not compact:
            raise ValueError("an empty duration")
        try:
            seconds = float(compact)
        except ValueError:
            seconds = 0.0
            position = 0
            for match in _PART.finditer(compact):
                if match.start() != position:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                position = match.end()
            if position != len(compact) or position == 0:
                raise ValueError(
                    f"not a duration: {text!r} (write e.g. 90s, 15m, 1h30m, 7d)"
                ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: ``900`` → ``15m``, ``5400`` → ``1h30m``, ``1.5`` → ``1.5s``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    left = int(seconds)
    if left == 0:
        return "0s"
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if left >= size:
            count, left = divmod(left, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)
