"""What a person may see, as SQL: the one translation of a :class:`~archiver.web.gate.
CaseFilter` (and an optional ``?case=NAME``) into conditions on captures and jobs.

A list is the union of *branches*: one per case the person may see (captures of that
case), one for the unfiled pseudo-case when they hold a role on it (every capture with
no case), or one for the unfiled captures they submitted themselves. A list of captures
runs each branch as its own indexed range scan (``ix_captures_case_requested``) and
merges them, so its first page and its thousandth cost the same few index reads.

Threat model: a case the person cannot see must not shape an answer, not even its
existence. A ``?case=`` naming such a case, or no case at all, gets the same 404 as the
gate gives (``errors.not_found()``); the cases and jobs tables are looked up by name only
after the person's own cases were known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from archiver import models
from archiver.cases import UNFILED as UNFILED  # how the API names captures of no case
from archiver.models import UNFILED_CASE_ID
from archiver.web.errors import not_found
from archiver.web.gate import CaseFilter

NO_CASE = -1
"""A case id no one holds a role on: a case name that does not exist is judged as a
case the person is not in (the same 404, by construction)."""


@dataclass(frozen=True, slots=True)
class Branch:
    """One part of what a list may show."""

    case_id: int | None
    """The case, or None for unfiled captures."""
    case_name: str | None
    submitted_by: str | None = None
    """For unfiled captures: only those this actor submitted (None: all of them)."""


def case_id_for(conn: sa.Connection, name: str | None) -> int | None:
    """The id of case ``name`` for :meth:`Gate.require` (None: unfiled, the name
    ``unfiled`` too); :data:`NO_CASE` for a name no case has."""
    if name is None or name == UNFILED:
        return None
    found = conn.execute(
        sa.select(models.cases.c.id).where(models.cases.c.name == name)
    ).scalar_one_or_none()
    return NO_CASE if found is None else int(found)


def branches(conn: sa.Connection, seen: CaseFilter, case: str | None = None) -> list[Branch]:
    """The branches of a list for a person who may see ``seen``, narrowed to ``case``
    (a name, or ``unfiled``) when given. Raises 404 for a case they may not see or that
    does not exist (the same answer)."""
    ids = sorted(i for i in seen.case_ids if i != UNFILED_CASE_ID)
    names: dict[int, str] = {}
    if ids:
        c = models.cases
        names = {int(row.id): str(row.name) for row in conn.execute(
            sa.select(c.c.id, c.c.name).where(c.c.id.in_(ids)))}
    unfiled: list[Branch] = []
    if seen.unfiled:
        unfiled = [Branch(None, None)]
    elif seen.own_unfiled_actor is not None:
        unfiled = [Branch(None, None, seen.own_unfiled_actor)]
    if case is None:
        return [Branch(i, names[i]) for i in ids if i in names] + unfiled
    if case == UNFILED:
        if not unfiled:
            raise not_found()
        return unfiled
    chosen = [Branch(i, n) for i, n in names.items() if n == case]
    if not chosen:
        raise not_found()
    return chosen


def capture_condition(branch: Branch, table: sa.Table | Any = models.captures) -> Any:
    """The rows of ``table`` (captures, or anything with ``case_id`` and
    ``requested_by``) that ``branch`` shows."""
    col = table.c
    if branch.case_id is not None:
        return col.case_id == branch.case_id
    if branch.submitted_by is None:
        return col.case_id.is_(None)
    return sa.and_(col.case_id.is_(None), col.requested_by == branch.submitted_by)


def captures_visible(shown: Sequence[Branch], table: sa.Table | Any = models.captures) -> Any:
    """Every row of ``table`` that one of ``shown`` shows (false when none)."""
    if not shown:
        return sa.false()
    return sa.or_(*(capture_condition(b, table) for b in shown))


def jobs_visible(shown: Sequence[Branch]) -> Any:
    """The jobs one of ``shown`` shows (a job names its case by name)."""
    j = models.jobs.c
    parts: list[Any] = []
    named = [b.case_name for b in shown if b.case_id is not None and b.case_name]
    if named:
        parts.append(j.case_name.in_(named))
    for b in shown:
        if b.case_id is None:
            parts.append(j.case_name.is_(None) if b.submitted_by is None else
                         sa.and_(j.case_name.is_(None), j.requested_by == b.submitted_by))
    return sa.or_(*parts) if parts else sa.false()
