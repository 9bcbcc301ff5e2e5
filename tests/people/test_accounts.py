"""Accounts, cases, memberships and their ledger entries (archiver.people.accounts), on a
real archive (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from archive_cli import OPERATOR

from archiver import models
from archiver.archive import Archive
from archiver.people.access import ArchiveRole, CaseRole
from archiver.people.accounts import People
from archiver.people.errors import (
    InvalidName,
    NameTaken,
    NoMembership,
    UnknownCase,
    UnknownUser,
    WeakPassword,
)

GOOD = "a long enough passphrase 7"


def last_entries(archive: Archive, count: int) -> list[Any]:
    size = archive.ledger.size()
    return list(archive.ledger.entries(start=size - count))


def test_add_user_records_user_created_without_the_password(archive: Archive,
                                                              people: People) -> None:
    """user.created names the operator and the new person; the password is nowhere in it."""
    view = people.add_user("alice", display_name="Alice A.", password=GOOD,
                           archive_role=ArchiveRole.ADMIN)
    assert (view.login, view.display_name, view.archive_role) == ("alice", "Alice A.",
                                                                  ArchiveRole.ADMIN)
    assert view.mfa_required
    assert not view.mfa_enrolled
    assert not view.disabled
    (entry,) = last_entries(archive, 1)
    assert (entry.actor, entry.action, entry.subject) == (OPERATOR, "user.created",
                                                          "user:alice")
    assert entry.payload == {"login": "alice", "display_name": "Alice A.",
                             "archive_role": "admin"}
    with archive.engine.connect() as conn:
        stored = conn.execute(sa.select(models.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert GOOD not in stored


def test_context_is_recorded_in_every_payload(archive: Archive) -> None:
    """A People made for a signed-in admin records their actor and context."""
    people = People(archive, actor="user:alice", context={"session": "s1", "client": "10.0.0.9"})
    people.add_case("Case 7")
    (entry,) = last_entries(archive, 1)
    assert entry.actor == "user:alice"
    assert entry.payload == {"case": "Case 7",
                             "context": {"session": "s1", "client": "10.0.0.9"}}


@pytest.mark.parametrize(("password", "message"), [
    ("short pw", "the password is too short: at least 12 characters"),
    ("password1234", "the password is one of the most common passwords; choose another"),
    ("QWERTYUIOP123", "the password is one of the most common passwords; choose another"),
    ("bobthebuilder", "the password is the login name; choose another"),
    ("x" * 1025, "the password is too long: at most 1024 characters"),
])
def test_password_policy(people: People, archive: Archive, password: str, message: str) -> None:
    """Too short, common (any case), the login itself, too long: refused, nothing written."""
    size = archive.ledger.size()
    with pytest.raises(WeakPassword) as caught:
        people.add_user("bobthebuilder", password=password)
    assert str(caught.value) == message
    assert password not in str(caught.value)
    assert archive.ledger.size() == size
    with pytest.raises(UnknownUser):
        people.get_user("bobthebuilder")


@pytest.mark.parametrize("login", ["Alice", "", "-x", "a b", "a" * 65, "al/ice", "élise"])
def test_invalid_login_names(people: People, login: str) -> None:
    with pytest.raises(InvalidName, match=r"^invalid login name"):
        people.add_user(login, password=GOOD)


def test_duplicate_login_and_case(people: People) -> None:
    people.add_user("bob", password=GOOD)
    with pytest.raises(NameTaken, match=r"^a user 'bob' already exists$"):
        people.add_user("bob", password=GOOD + "x")
    people.add_case("Case 7")
    with pytest.raises(NameTaken, match=r"^a case 'Case 7' already exists$"):
        people.add_case("Case 7")
    for name in ("unfiled", "Unfiled"):
        with pytest.raises(InvalidName, match=rf"^'{name}' cannot be the name of a case: "
                                              r"'unfiled' \(in any letter case\) names"):
            people.add_case(name)


def test_grant_revoke_members(archive: Archive, people: People) -> None:
    """role.granted / role.revoked with case, login, role; members lists the roles;
    unfiled is the pseudo-case 0; revoking ends the person's sessions."""
    people.add_user("bob", password=GOOD)
    people.add_case("Case 7")
    people.grant("Case 7", "bob", CaseRole.INVESTIGATOR)
    people.grant("unfiled", "bob", CaseRole.VIEWER)
    people.grant("Case 7", "bob", CaseRole.LEGAL)
    granted = last_entries(archive, 3)
    assert [(e.actor, e.action, e.subject, e.payload) for e in granted] == [
        (OPERATOR, "role.granted", "case:Case 7",
         {"case": "Case 7", "login": "bob", "role": "investigator"}),
        (OPERATOR, "role.granted", "case:unfiled",
         {"case": "unfiled", "login": "bob", "role": "viewer"}),
        (OPERATOR, "role.granted", "case:Case 7",
         {"case": "Case 7", "login": "bob", "role": "legal", "previous": "investigator"}),
    ]
    assert [(m.login, m.role) for m in people.members("Case 7")] == [("bob", CaseRole.LEGAL)]
    bob = people.get_user("bob")
    case_id = people.get_case("Case 7").id
    assert people.case_roles(bob.id) == {case_id: CaseRole.LEGAL, 0: CaseRole.VIEWER}
    _session(archive, bob.id)
    assert people.revoke("Case 7", "bob") is CaseRole.LEGAL
    (entry,) = last_entries(archive, 1)
    assert (entry.action, entry.payload) == ("role.revoked",
                                            {"case": "Case 7", "login": "bob", "role": "legal"})
    assert _sessions(archive, bob.id) == 0
    assert people.members("Case 7") == []
    with pytest.raises(NoMembership, match=r"^bob has no role on case 'Case 7'$"):
        people.revoke("Case 7", "bob")
    with pytest.raises(UnknownCase, match=r"^no case 'Case 9'$"):
        people.grant("Case 9", "bob", CaseRole.VIEWER)
    with pytest.raises(UnknownUser, match=r"^no user 'carol'$"):
        people.grant("Case 7", "carol", CaseRole.VIEWER)


def _session(archive: Archive, user_id: int) -> None:
    with archive.engine.begin() as conn:
        conn.execute(sa.insert(models.web_sessions).values(
            sha256=f"{user_id:064x}", user_id=user_id, csrf="c" * 64, created="x",
            last_seen="x", mfa_passed=False, client="127.0.0.1"))


def _sessions(archive: Archive, user_id: int) -> int:
    with archive.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(
            models.web_sessions.c.user_id == user_id)).scalar_one())


def test_disable_enable_reset(archive: Archive, people: People) -> None:
    """Disabling ends sessions (user.disabled); reset-password too (user.password_reset,
    no password on the ledger); enable gives the account back."""
    bob = people.add_user("bob", password=GOOD)
    _session(archive, bob.id)
    assert people.disable_user("bob").disabled
    assert _sessions(archive, bob.id) == 0
    assert people.enable_user("bob").disabled is False
    _session(archive, bob.id)
    people.reset_password("bob", "another long passphrase")
    assert _sessions(archive, bob.id) == 0
    entries = last_entries(archive, 3)
    assert [(e.action, e.payload) for e in entries] == [
        ("user.disabled", {"login": "bob"}), ("user.enabled", {"login": "bob"}),
        ("user.password_reset", {"login": "bob"})]
    assert people.login("bob", "another long passphrase", client="127.0.0.1").login == "bob"
    with pytest.raises(UnknownUser, match=r"^no user 'nobody'$"):
        people.disable_user("nobody")
