"""Case names: the one name no case may have.

``unfiled`` names the pseudo-case of captures filed under no case: the API's
``?case=unfiled``, a role granted on it (``case_members.case_id`` 0), the watches and
jobs with no case. A real case of that name, in any letter case, would be taken for it
(or it for the real case) by people and by code alike, so every place a case can come
into being refuses it: ``archiver capture --case`` (now or ``--queue``), ``watch add``
and ``watch import``, ``case add``, and the API's submissions, watches and cases.
Cases are otherwise created on first use (``archiver.capture.commit.case_id_for``).
"""

from __future__ import annotations

from typing import Final

from archiver.errors import BadInput
from archiver.urls import printable

UNFILED: Final = "unfiled"
"""The name of the pseudo-case of captures with no case."""


class ReservedCaseName(BadInput):
    """A case name that is ``unfiled`` in some letter case."""


def is_unfiled(name: str) -> bool:
    """Whether ``name`` would be read as the unfiled pseudo-case's name."""
    return name.strip().casefold() == UNFILED


def check_case_name(name: str) -> str:
    """``name``, unless it is the pseudo-case's name in any letter case (spaces around it
    too). Raises :class:`ReservedCaseName`."""
    if is_unfiled(name):
        raise ReservedCaseName(
            f"{printable(name[:80])!r} cannot be the name of a case: {UNFILED!r} (in any "
            "letter case) names the captures filed under no case; leave the case out to "
            "file them there, or choose another name")
    return name


__all__ = ["UNFILED", "ReservedCaseName", "check_case_name", "is_unfiled"]
