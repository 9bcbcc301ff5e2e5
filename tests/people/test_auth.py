"""Logging in, lockout, the per-client rate limit, TOTP and API tokens
(archiver.people.accounts), on SQLite and PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from datetime import timedelta
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from archive_cli import OPERATOR
from people_fixtures import FakeClock

from archiver import models
from archiver.archive import Archive
from archiver.errors import ArchiverError, BadInput
from archiver.people import passwords
from archiver.people.access import ArchiveRole, CaseRole, Scope
from archiver.people.accounts import NEVER, People
from archiver.people.errors import (
    AccountDisabled,
    LoginRefused,
    MfaCodeRejected,
    TokenRefused,
    UnknownCase,
    UnknownToken,
)
from archiver.people.webkey import web_secret, web_secret_path

GOOD = "a long enough passphrase 7"
CLIENT = "192.0.2.10"


def last(archive: Archive, count: int = 1) -> list[Any]:
    return list(archive.ledger.entries(start=archive.ledger.size() - count))


def refused(people: People, login: str, password: str, reason: str,
            client: str = CLIENT, **options: Any) -> LoginRefused:
    with pytest.raises(LoginRefused) as caught:
        people.login(login, password, client=client, **options)
    assert caught.value.reason == reason
    return caught.value


def test_login_records_auth_login(archive: Archive, people: People) -> None:
    """A good password: auth.login by the person themself, method password, client."""
    people.add_user("bob", password=GOOD)
    view = people.login("bob", GOOD, client=CLIENT)
    assert view.login == "bob"
    assert not view.mfa_required
    (entry,) = last(archive)
    assert (entry.actor, entry.action, entry.subject) == ("user:bob", "auth.login", "user:bob")
    assert entry.payload == {"method": "password", "context": {"client": CLIENT}}


def test_unknown_user_and_wrong_password_look_the_same(archive: Archive,
                                                        people: People) -> None:
    """Same public message; the reason is on the ledger only; never the password."""
    people.add_user("bob", password=GOOD)
    unknown = refused(people, "nobody", "guess one two three", "unknown-user")
    (entry,) = last(archive)
    wrong = refused(people, "bob", "guess one two three", "wrong-password")
    (entry2,) = last(archive)
    assert str(unknown) == str(wrong) == "wrong login name or password"
    assert (entry.actor, entry.action, entry.subject, entry.payload) == (
        OPERATOR, "auth.failed", "user:nobody",
        {"login": "nobody", "reason": "unknown-user", "context": {"client": CLIENT}})
    assert entry2.payload == {"login": "bob", "reason": "wrong-password",
                              "context": {"client": CLIENT}}
    for e in (entry, entry2):
        assert "guess one two three" not in repr(e.payload)


def test_unknown_user_takes_as_long_as_a_wrong_password(people: People) -> None:
    """Constant time: the unknown login is verified against a stand-in argon2 hash."""
    people.add_user("bob", password=GOOD)

    def median(login: str) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            with pytest.raises(LoginRefused):
                people.login(login, "guess one two three", client=f"198.51.100.{len(times)}")
            times.append(time.perf_counter() - start)
        return sorted(times)[2]

    known, unknown = median("bob"), median("nobody")
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_login_name_in_auth_failed_is_bounded_and_escaped(archive: Archive,
                                                          people: People) -> None:
    hostile = "\x1b[2Jroot\n" + "x" * 200
    refused(people, hostile, "whatever it is", "unknown-user")
    (entry,) = last(archive)
    assert entry.payload["login"] == "\\x1b[2Jroot\\x0a" + "x" * 55  # 64 characters, escaped
    assert entry.subject == "user:" + entry.payload["login"]


def test_lockout_after_repeated_failures(archive: Archive, people: People,
                                         clock: FakeClock) -> None:
    """lockout_after (10) failures within 15 minutes lock the login for 15 minutes, even
    against the right password; the public message stays the same; it lifts after."""
    people.add_user("bob", password=GOOD)
    for i in range(10):
        refused(people, "bob", f"wrong guess number {i}", "wrong-password",
                client=f"203.0.113.{i}")
    assert people.get_user("bob").locked_until == "2026-11-27T12:15:00.000000Z"
    error = refused(people, "bob", GOOD, "locked")
    assert str(error) == "wrong login name or password"
    clock.advance(minutes=15, seconds=1)
    assert people.login("bob", GOOD, client=CLIENT).locked_until is None


def test_failures_outside_the_window_do_not_lock(people: People, clock: FakeClock) -> None:
    people.add_user("bob", password=GOOD)
    for i in range(9):
        refused(people, "bob", f"wrong guess number {i}", "wrong-password")
    clock.advance(minutes=16)
    refused(people, "bob", "wrong guess again", "wrong-password")
    assert people.get_user("bob").locked_until is None
    people.login("bob", GOOD, client="198.51.100.1")


def test_client_rate_limit_refuses_without_checking(archive: Archive, people: People,
                                                    clock: FakeClock) -> None:
    """20 failures from one address in a minute: the next attempt is refused unchecked
    (the right password too), with its own message; another address is not affected;
    a minute later the address may try again."""
    people.add_user("bob", password=GOOD)
    for i in range(20):
        refused(people, f"user{i}", "wrong guess here", "unknown-user")
    error = refused(people, "bob", GOOD, "rate-limited")
    assert str(error) == "too many failed attempts from this address; try again in a minute"
    assert last(archive)[0].payload["reason"] == "rate-limited"
    people.login("bob", GOOD, client="198.51.100.7")
    clock.advance(seconds=61)
    people.login("bob", GOOD, client=CLIENT)


def test_refusals_by_the_rate_limit_are_counted_not_each_recorded(
        archive: Archive, people: People, clock: FakeClock) -> None:
    """Every attempt that was checked is an auth.failed entry; of 50 attempts refused
    unchecked by the rate limit, only the first of the minute is (count 1); another
    address gets its own; a minute later, the address's next rate-limited entry counts
    the 49 refused meanwhile and itself."""
    for i in range(20):
        refused(people, f"user{i}", "wrong guess here", "unknown-user")
    assert archive.ledger.size() == 20 + 1  # 1: the key's registration
    for _ in range(50):
        refused(people, "bob", GOOD, "rate-limited")
    (entry,) = last(archive)
    assert archive.ledger.size() == 21 + 1
    assert (entry.action, entry.subject, entry.payload) == (
        "auth.failed", "user:bob",
        {"login": "bob", "reason": "rate-limited", "count": 1,
         "context": {"client": CLIENT}})
    for i in range(20):
        refused(people, f"user{i}", "wrong guess here", "unknown-user", client="198.51.100.9")
    refused(people, "carol", GOOD, "rate-limited", client="198.51.100.9")
    assert last(archive)[0].payload["context"] == {"client": "198.51.100.9"}
    assert archive.ledger.size() == 22 + 21
    clock.advance(seconds=61)
    for i in range(20):  # checked again, each recorded, until the limit is reached again
        refused(people, f"user{i}", "wrong guess here", "unknown-user")
    refused(people, "bob", GOOD, "rate-limited")
    assert last(archive)[0].payload == {"login": "bob", "reason": "rate-limited",
                                        "count": 50, "context": {"client": CLIENT}}
    assert archive.ledger.size() == 43 + 21


def test_bad_tokens_past_the_rate_limit_are_counted_not_each_recorded(
        archive: Archive, people: People) -> None:
    """Unknown tokens: each checked one recorded (token-unknown); past the rate limit,
    50 more make one rate-limited entry."""
    start = archive.ledger.size()
    for i in range(70):
        with pytest.raises(TokenRefused) as caught:
            people.resolve_token(f"ea_not-a-token-{i}", client=CLIENT)
        assert caught.value.reason == ("token-unknown" if i < 20 else "rate-limited")
    failed = last(archive, archive.ledger.size() - start)
    assert [e.payload["reason"] for e in failed] == ["token-unknown"] * 20 + ["rate-limited"]
    assert failed[-1].payload == {"login": None, "reason": "rate-limited", "count": 1,
                                  "context": {"client": CLIENT}}


def test_old_failures_are_pruned(archive: Archive, people: People, clock: FakeClock) -> None:
    refused(people, "nobody", "wrong guess here", "unknown-user")
    clock.advance(days=1, seconds=1)
    refused(people, "nobody2", "wrong guess here", "unknown-user")
    with archive.engine.connect() as conn:
        logins = conn.execute(sa.select(models.login_failures.c.login)).scalars().all()
    assert logins == ["nobody2"]


def test_disabled_user_cannot_log_in(people: People) -> None:
    people.add_user("bob", password=GOOD)
    people.disable_user("bob")
    assert str(refused(people, "bob", GOOD, "disabled")) == "wrong login name or password"
    with pytest.raises(AccountDisabled, match=r"^the account 'bob' is disabled$"):
        people.principal(people.get_user("bob").id)


def test_old_hash_is_rehashed_at_login(archive: Archive, people: People) -> None:
    """A hash made with weaker parameters is replaced by today's at the next login."""
    from argon2 import PasswordHasher

    bob = people.add_user("bob", password=GOOD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    with archive.engine.begin() as conn:
        conn.execute(sa.update(models.users).where(models.users.c.id == bob.id)
                     .values(password_hash=weak))
    people.login("bob", GOOD, client=CLIENT)
    with archive.engine.connect() as conn:
        now = conn.execute(sa.select(models.users.c.password_hash)).scalar_one()
    assert now != weak
    assert not passwords.needs_rehash(now)
    assert passwords.verify_password(now, GOOD)


def test_change_password_needs_the_old_one(archive: Archive, people: People) -> None:
    bob = people.add_user("bob", password=GOOD)
    with pytest.raises(LoginRefused, match=r"^the current password is wrong$"):
        people.change_password(bob.id, "not my password at all", "a brand new passphrase")
    people.change_password(bob.id, GOOD, "a brand new passphrase")
    (entry,) = last(archive)
    assert entry.payload == {"login": "bob", "by": "self"}
    people.login("bob", "a brand new passphrase", client=CLIENT)


# -- TOTP ---------------------------------------------------------------------------------


def enrol(people: People, user_id: int, clock: FakeClock) -> pyotp.TOTP:
    uri = people.begin_totp(user_id)
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    people.confirm_totp(user_id, totp.at(clock.now))
    clock.advance(seconds=30)  # the enrolment used this step's code
    return totp


def test_admin_must_enrol_then_logs_in_with_a_code(archive: Archive, people: People,
                                                   clock: FakeClock) -> None:
    """An admin without TOTP logs in only to enrol (mfa_required, not enrolled);
    auth.mfa_enrolled; then the password alone is not enough (mfa-required), a wrong
    code is refused (wrong-totp), the right one logs in (password+totp)."""
    alice = people.add_user("alice", password=GOOD, archive_role=ArchiveRole.ADMIN)
    first = people.login("alice", GOOD, client=CLIENT)
    assert first.mfa_required
    assert not first.mfa_enrolled
    me = People(archive, actor="user:alice", context={"session": "s1"})
    uri = me.begin_totp(alice.id)
    assert uri.startswith("otpauth://totp/")
    assert "alice" in uri
    totp = pyotp.parse_uri(uri)
    with pytest.raises(MfaCodeRejected, match=r"^the code does not match"):
        me.confirm_totp(alice.id, "000000" if totp.at(clock.now) != "000000" else "111111")
    assert me.confirm_totp(alice.id, totp.at(clock.now)).mfa_enrolled
    (entry,) = last(archive)
    assert (entry.actor, entry.action, entry.payload) == (
        "user:alice", "auth.mfa_enrolled", {"login": "alice", "context": {"session": "s1"}})
    with archive.engine.connect() as conn:
        stored = conn.execute(sa.select(models.users.c.totp_secret)).scalar_one()
    assert totp.secret not in stored  # encrypted at rest
    clock.advance(seconds=30)
    error = refused(people, "alice", GOOD, "mfa-required")
    assert str(error) == "enter the one-time code of your authenticator app"
    wrong = "123456" if totp.at(clock.now) != "123456" else "654321"
    refused(people, "alice", GOOD, "wrong-totp", totp=wrong)
    view = people.login("alice", GOOD, client=CLIENT, totp=totp.at(clock.now))
    assert view.mfa_enrolled
    assert last(archive)[0].payload["method"] == "password+totp"


def test_totp_code_is_good_once_per_step(people: People, clock: FakeClock) -> None:
    bob = people.add_user("bob", password=GOOD)
    totp = enrol(people, bob.id, clock)
    code = totp.at(clock.now)
    assert people.check_totp(bob.id, code)
    assert not people.check_totp(bob.id, code)  # replayed
    clock.advance(seconds=30)
    assert people.check_totp(bob.id, totp.at(clock.now - timedelta(seconds=30))) is False
    assert people.check_totp(bob.id, totp.at(clock.now))


def test_totp_window_is_one_step(people: People, clock: FakeClock) -> None:
    bob = people.add_user("bob", password=GOOD)
    totp = enrol(people, bob.id, clock)
    assert people.check_totp(bob.id, totp.at(clock.now + timedelta(seconds=30)))
    assert not people.check_totp(bob.id, totp.at(clock.now + timedelta(seconds=90)))
    assert not people.check_totp(bob.id, "12345a")


def test_require_mfa_extends_to_everyone(people: People, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    people.add_user("bob", password=GOOD)
    assert not people.get_user("bob").mfa_required
    people.auth = people.auth.model_copy(update={"require_mfa": True})
    assert people.get_user("bob").mfa_required


def test_reset_mfa(archive: Archive, people: People, clock: FakeClock) -> None:
    bob = people.add_user("bob", password=GOOD)
    enrol(people, bob.id, clock)
    with pytest.raises(BadInput, match=r"^a second factor is enrolled already"):
        people.begin_totp(bob.id)
    assert not people.reset_mfa("bob").mfa_enrolled
    (entry,) = last(archive)
    assert (entry.action, entry.payload) == ("user.mfa_reset", {"login": "bob"})
    people.login("bob", GOOD, client=CLIENT)


def test_web_secret_is_private_and_guards_the_totp_secrets(archive: Archive, people: People,
                                                           clock: FakeClock) -> None:
    """init made secrets/web.key (32 bytes, 0600 in a 0700 directory); a replaced key
    leaves the enrolled secrets undecryptable, said plainly."""
    path = web_secret_path(archive.settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(web_secret(archive.settings)) == 32
    bob = people.add_user("bob", password=GOOD)
    totp = enrol(people, bob.id, clock)
    os.chmod(path, 0o600)
    path.write_bytes(b"\x01" * 32)
    with pytest.raises(ArchiverError, match=r"does not decrypt with this archive's web secret"):
        people.check_totp(bob.id, totp.at(clock.now))
    path.write_bytes(b"short")
    with pytest.raises(ArchiverError, match=r"holds 5 bytes, not 32"):
        web_secret(archive.settings)


def test_web_secret_is_created_on_first_use(archive: Archive) -> None:
    path = web_secret_path(archive.settings)
    path.unlink()
    first = web_secret(archive.settings)
    assert web_secret(archive.settings) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- API tokens ---------------------------------------------------------------------------


def test_token_create_resolve_list_revoke(archive: Archive, people: People,
                                          clock: FakeClock) -> None:
    """The secret is ea_ + 43 base64url characters, stored only as SHA-256; token.created
    and token.revoked on the ledger; resolve gives the owner's Principal within the
    token's scope and cases; a revoked token is refused (token-revoked)."""
    bob = people.add_user("bob", password=GOOD)
    people.add_case("Case 7")
    people.grant("Case 7", "bob", CaseRole.INVESTIGATOR)
    view, secret = people.create_token("bob", scope=Scope.SUBMIT, cases=["Case 7", "unfiled"],
                                       expires_in=None, label="laptop")
    assert secret.startswith("ea_")
    assert len(secret) == 46
    assert view.id.startswith("tok_")
    assert len(view.id) == 14
    assert (view.cases, view.expires) == (("Case 7", "unfiled"), "2027-02-25T12:00:00.000000Z")
    (entry,) = last(archive)
    assert (entry.actor, entry.action, entry.subject, entry.payload) == (
        OPERATOR, "token.created", f"token:{view.id}",
        {"token_id": view.id, "login": "bob", "scope": "submit",
         "cases": ["Case 7", "unfiled"], "expires": "2027-02-25T12:00:00.000000Z"})
    with archive.engine.connect() as conn:
        row = conn.execute(sa.select(models.api_tokens)).one()
    assert row.sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(tuple(row))
    (listed,) = people.list_tokens("bob")
    assert listed == view
    assert secret not in repr(listed.as_json())
    clock.advance(minutes=5)
    principal = people.resolve_token(secret, client=CLIENT)
    case_id = people.get_case("Case 7").id
    assert (principal.login, principal.token and principal.token.scope) == ("bob", Scope.SUBMIT)
    assert principal.token is not None
    assert principal.token.case_ids == frozenset({case_id, 0})
    assert principal.context() == {"token": view.id, "client": CLIENT}
    assert principal.user_id == bob.id
    assert people.list_tokens()[0].last_used == "2026-11-27T12:05:00.000000Z"
    people.revoke_token(view.id)
    (entry,) = last(archive)
    assert (entry.action, entry.payload) == ("token.revoked",
                                            {"token_id": view.id, "login": "bob"})
    with pytest.raises(TokenRefused) as caught:
        people.resolve_token(secret, client=CLIENT)
    assert caught.value.reason == "token-revoked"
    (entry,) = last(archive)
    assert (entry.action, entry.subject, entry.payload) == (
        "auth.failed", f"token:{view.id}",
        {"login": "bob", "reason": "token-revoked", "token_id": view.id,
         "context": {"client": CLIENT}})
    with pytest.raises(BadInput, match=rf"^token {view.id} was revoked already"):
        people.revoke_token(view.id)
    with pytest.raises(UnknownToken, match=r"^no token 'tok_0000000000'$"):
        people.revoke_token("tok_0000000000")


def test_token_refusals(archive: Archive, people: People, clock: FakeClock) -> None:
    """Expired (token-expired), unknown (token-unknown), owner disabled (disabled): the
    same public message; never the secret on the ledger."""
    people.add_user("bob", password=GOOD)
    _view, short = people.create_token("bob", scope=Scope.READ,
                                       expires_in=timedelta(hours=1))
    _view2, forever = people.create_token("bob", scope=Scope.READ, expires_in=NEVER)
    assert _view2.expires is None
    clock.advance(hours=1)
    reasons = []
    for secret in (short, "ea_" + "A" * 43):
        with pytest.raises(TokenRefused) as caught:
            people.resolve_token(secret, client=CLIENT)
        assert str(caught.value) == "the API token is not valid (expired, revoked, unknown)"
        reasons.append(caught.value.reason)
        assert secret not in repr(last(archive)[0].payload)
    assert reasons == ["token-expired", "token-unknown"]
    assert people.resolve_token(forever, client=CLIENT).login == "bob"
    people.disable_user("bob")
    with pytest.raises(TokenRefused) as caught:
        people.resolve_token(forever, client=CLIENT)
    assert caught.value.reason == "disabled"


def test_unknown_tokens_count_towards_the_client_limit(people: People) -> None:
    people.add_user("bob", password=GOOD)
    _view, secret = people.create_token("bob", scope=Scope.READ)
    for i in range(20):
        with pytest.raises(TokenRefused):
            people.resolve_token(f"ea_guess{i}", client=CLIENT)
    with pytest.raises(TokenRefused) as caught:
        people.resolve_token(secret, client=CLIENT)
    assert caught.value.reason == "rate-limited"
    assert people.resolve_token(secret, client="198.51.100.2").login == "bob"


def test_token_bad_input(people: People) -> None:
    people.add_user("bob", password=GOOD)
    with pytest.raises(UnknownCase, match=r"^no case 'Case 9'$"):
        people.create_token("bob", scope=Scope.READ, cases=["Case 9"])
    with pytest.raises(BadInput, match=r"^not a token lifetime"):
        people.create_token("bob", scope=Scope.READ, expires_in=timedelta(0))
    people.disable_user("bob")
    with pytest.raises(BadInput, match=r"^user bob is disabled"):
        people.create_token("bob", scope=Scope.READ)
    assert people.list_tokens() == []


def test_principal_carries_roles(people: People) -> None:
    bob = people.add_user("bob", password=GOOD, archive_role=ArchiveRole.AUDITOR)
    people.add_case("Case 7")
    people.grant("Case 7", "bob", CaseRole.VIEWER)
    principal = people.principal(bob.id, session_id="s1", client=CLIENT)
    assert principal.archive_role is ArchiveRole.AUDITOR
    assert principal.case_roles == {people.get_case("Case 7").id: CaseRole.VIEWER}
    assert principal.context() == {"session": "s1", "client": CLIENT}
