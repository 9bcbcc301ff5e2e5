"""The README's permission table is the one archiver.people.access decides by, and the
rules hold the promises the README makes about admins, auditors and tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.people.access import (
    ALLOWED,
    FORBIDDEN,
    KIND,
    NOT_FOUND,
    UNAUTHENTICATED,
    Action,
    ArchiveRole,
    CaseRole,
    Kind,
    Principal,
    Scope,
    TokenGrant,
    decide,
    decide_unfiled_own,
    permission_table,
)

README = Path(__file__).resolve().parents[2] / "README.md"
CASE, OTHER = 7, 8


def render() -> str:
    """The markdown table, as the README must hold it."""
    columns = [*[r.value for r in CaseRole], *[r.value for r in ArchiveRole]]
    lines = ["| action | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for action, row in permission_table():
        cells = ["yes" if row[c] else "" for c in columns]
        lines.append(f"| `{action}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def test_readme_holds_the_permission_table_the_code_decides_by() -> None:
    assert render() in README.read_text(encoding="utf-8"), (
        "README.md's permission table differs from archiver.people.access; paste:\n"
        + render())


def person(case_role: CaseRole | None = None, archive_role: ArchiveRole | None = None,
           token: TokenGrant | None = None) -> Principal:
    roles = {CASE: case_role} if case_role else {}
    return Principal(user_id=1, login="p", archive_role=archive_role, case_roles=roles,
                     token=token)


def test_nobody_signed_in_gets_401_for_everything_but_public_actions() -> None:
    for action in Action:
        expected = ALLOWED if KIND[action] is Kind.PUBLIC else UNAUTHENTICATED
        assert decide(None, action, CASE) is expected, action


@pytest.mark.parametrize("archive_role", [ArchiveRole.ADMIN, ArchiveRole.AUDITOR, None])
def test_a_non_member_never_sees_content_and_learns_nothing_of_the_case(
        archive_role: ArchiveRole | None) -> None:
    """Admin is not a backdoor; an auditor verifies but reads no content; a plain
    non-member is answered as if the case did not exist (404)."""
    p = person(archive_role=archive_role)
    for action in (Action.CAPTURE_VIEW, Action.ARTIFACT_DOWNLOAD, Action.CASE_EXPORT,
                   Action.CAPTURE_LIST, Action.WATCH_VIEW):
        got = decide(p, action, CASE)
        assert got is (FORBIDDEN if archive_role is ArchiveRole.AUDITOR else NOT_FOUND), action
    verify = decide(p, Action.CAPTURE_VERIFY, CASE)
    assert verify is (ALLOWED if archive_role is ArchiveRole.AUDITOR else NOT_FOUND)


def test_a_member_of_one_case_gets_404_on_another() -> None:
    p = person(CaseRole.INVESTIGATOR)
    assert decide(p, Action.CAPTURE_VIEW, CASE) is ALLOWED
    assert decide(p, Action.CAPTURE_VIEW, OTHER) is NOT_FOUND
    assert decide(p, Action.CASE_EXPORT, CASE) is FORBIDDEN  # a member: no secret to keep


def test_tokens_are_bounded_by_scope_and_cases_and_never_manage() -> None:
    read = TokenGrant(id="tok_1", scope=Scope.READ)
    p = person(CaseRole.INVESTIGATOR, ArchiveRole.ADMIN, token=read)
    assert decide(p, Action.CAPTURE_VIEW, CASE) is ALLOWED
    assert decide(p, Action.CAPTURE_SUBMIT, CASE) is FORBIDDEN
    assert decide(p, Action.USER_MANAGE) is FORBIDDEN
    assert decide(p, Action.SELF_MANAGE) is FORBIDDEN
    limited = TokenGrant(id="tok_2", scope=Scope.SUBMIT, case_ids=frozenset({OTHER}))
    q = Principal(user_id=1, login="p", archive_role=None,
                  case_roles={CASE: CaseRole.INVESTIGATOR, OTHER: CaseRole.INVESTIGATOR},
                  token=limited)
    assert decide(q, Action.CAPTURE_SUBMIT, OTHER) is ALLOWED
    assert decide(q, Action.CAPTURE_VIEW, CASE) is NOT_FOUND


def test_the_submitter_of_an_unfiled_capture_keeps_an_investigators_view_of_it() -> None:
    p = person()
    assert decide_unfiled_own(p, Action.CAPTURE_VIEW) is ALLOWED
    assert decide_unfiled_own(p, Action.CASE_EXPORT) is NOT_FOUND
    assert decide(p, Action.CAPTURE_VIEW, 0) is NOT_FOUND  # someone else's unfiled capture
