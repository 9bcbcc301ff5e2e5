"""Signing in to the HTTP API: sessions (cookie flags, CSRF, rotation, timeouts), bearer
tokens, login refusals and limits, TOTP, the client address behind a proxy, and what
reaches the ledger; over the real app on a real port (tests/fixtures/api.py), on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from api_fixtures import Api, Person, start_api

from archiver import models
from archiver.web.app import MAX_BODY_BYTES, SECURITY_HEADERS, WebOptions
from archiver.web.auth import CSRF_HEADER, SESSION_COOKIE, session_hash

WRONG = {"error": {"code": "login-failed", "message": "wrong login name or password"}}
ENDED = {"error": {"code": "session-ended", "message": "your session has ended; sign in again"}}
BAD_TOKEN = {"error": {"code": "invalid-token",
                       "message": "the API token is not valid (expired, revoked, unknown)"}}


def entries(api: Api, count: int) -> list[Any]:
    """The last ``count`` ledger entries, oldest first."""
    size = api.archive.ledger.size()
    return list(api.archive.ledger.entries(start=size - count))


def entries_since(api: Api, start: int) -> list[Any]:
    return list(api.archive.ledger.entries(start=start))


def login(http: httpx.Client, person: Person, **extra: Any) -> httpx.Response:
    return http.post("/api/auth/login",
                     json={"login": person.login, "password": person.password, **extra})


def cookie_of(answer: httpx.Response) -> str:
    (header,) = answer.headers.get_list("set-cookie")
    name, _, rest = header.partition("=")
    assert name == SESSION_COOKIE
    return rest.split(";")[0]


def cookie_flags(answer: httpx.Response) -> set[str]:
    (header,) = answer.headers.get_list("set-cookie")
    return {part.strip().lower() for part in header.split(";")[1:]}


def with_cookie(api: Api, cookie: str, csrf: str | None = None) -> httpx.Client:
    http = api.anonymous(headers={CSRF_HEADER: csrf} if csrf else None)
    http.cookies.set(SESSION_COOKIE, cookie)
    return http


@pytest.fixture
def strict_api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> Iterator[Api]:
    """The API with small limits: 3 failures a minute per client, lockout after 3."""
    yield from start_api(database_url, tmp_path / "archive", monkeypatch, capsys, {
        "ARCHIVER_AUTH__CLIENT_FAILURES_PER_MINUTE": "3",
        "ARCHIVER_AUTH__LOCKOUT_AFTER": "3",
    })


# -- sessions ---------------------------------------------------------------------------------


def test_login_sets_a_strict_httponly_cookie_and_answers_csrf(api: Api) -> None:
    """The session cookie is HttpOnly, SameSite=Strict, Path=/, and not Secure on plain
    HTTP on loopback; the answer carries the CSRF token and the person; /api/me answers
    as them with their cases and roles."""
    bob = api.user("bob", cases={"Case 7": "investigator", "Case 9": "viewer"})
    answer = login(api.anonymous(), bob)
    assert answer.status_code == 200, answer.text
    flags = cookie_flags(answer)
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags
    assert "secure" not in flags
    body = answer.json()
    assert body["mfa_pending"] is False
    assert len(body["csrf_token"]) >= 43
    assert body["user"] == {"id": bob.view.id, "login": "bob", "display_name": "bob",
                            "archive_role": None, "mfa_enrolled": False,
                            "mfa_required": False}
    me = with_cookie(api, cookie_of(answer)).get("/api/me")
    assert me.status_code == 200, me.text
    assert me.json()["cases"] == [{"case": "Case 7", "role": "investigator"},
                                  {"case": "Case 9", "role": "viewer"}]
    assert me.json()["token"] is None
    assert me.json()["session"].startswith("ses_")


def test_cookie_is_secure_unless_insecure_http(api: Api) -> None:
    """Served with secure cookies (TLS or behind a proxy), the cookie carries Secure."""
    bob = api.user("bob")
    server = api.start(WebOptions(secure_cookies=True))
    answer = login(api.anonymous(url=server.url), bob)
    assert answer.status_code == 200, answer.text
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= cookie_flags(answer)


def test_the_session_is_stored_hashed_with_its_csrf_and_client(api: Api) -> None:
    """The server keeps the SHA-256 of the cookie, never the cookie."""
    bob = api.user("bob")
    answer = login(api.anonymous(), bob)
    cookie = cookie_of(answer)
    with api.archive.engine.connect() as conn:
        rows = conn.execute(sa.select(models.web_sessions)).all()
    assert [(r.sha256, r.user_id, r.csrf, r.client, r.mfa_passed) for r in rows] == [
        (session_hash(cookie), bob.view.id, answer.json()["csrf_token"], "127.0.0.1", True)]
    assert cookie not in {r.sha256 for r in rows}


def test_login_rotates_the_session(api: Api) -> None:
    """A login opens a new session and drops the one the request came with: the old
    cookie (even one planted before login) is refused afterwards."""
    bob = api.user("bob")
    http = api.anonymous()
    first = cookie_of(login(http, bob))
    second_answer = login(http, bob)  # the client sends the first cookie along
    second = cookie_of(second_answer)
    assert second != first
    assert with_cookie(api, first).get("/api/me").json() == ENDED
    assert with_cookie(api, second).get("/api/me").status_code == 200
    # a cookie value chosen by someone else is never adopted
    planted = api.anonymous()
    planted.cookies.set(SESSION_COOKIE, "planted-by-an-attacker")
    assert cookie_of(login(planted, bob)) != "planted-by-an-attacker"
    assert with_cookie(api, "planted-by-an-attacker").get("/api/me").status_code == 401


def test_idle_timeout_ends_the_session(api: Api) -> None:
    """Unused for auth.session_idle_minutes (30), a session ends: 401 session-ended, the
    cookie cleared, the row gone. Used within it, it lives on."""
    bob = api.user("bob")
    cookie = cookie_of(login(api.anonymous(), bob))
    http = with_cookie(api, cookie)
    api.clock.advance(minutes=29)
    assert http.get("/api/me").status_code == 200
    api.clock.advance(minutes=29)
    assert http.get("/api/me").status_code == 200
    api.clock.advance(minutes=30)
    answer = with_cookie(api, cookie).get("/api/me")
    assert (answer.status_code, answer.json()) == (401, ENDED)
    assert "max-age=0" in cookie_flags(answer)
    with api.archive.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models.web_sessions)
                            ).scalar_one() == 0


def test_absolute_timeout_ends_a_busy_session(api: Api) -> None:
    """However busy, a session ends auth.session_absolute_hours (12) after its login."""
    bob = api.user("bob")
    http = with_cookie(api, cookie_of(login(api.anonymous(), bob)))
    for _ in range(28):  # 28 x 25 min = 11 h 40 min
        api.clock.advance(minutes=25)
        assert http.get("/api/me").status_code == 200
    api.clock.advance(minutes=25)
    answer = http.get("/api/me")
    assert (answer.status_code, answer.json()) == (401, ENDED)


def test_last_seen_is_written_at_most_once_a_minute(api: Api) -> None:
    """A busy session writes last_seen once a minute, not on every request."""
    bob = api.user("bob")
    cookie = cookie_of(login(api.anonymous(), bob))
    http = with_cookie(api, cookie)

    def last_seen() -> str:
        with api.archive.engine.connect() as conn:
            return str(conn.execute(sa.select(models.web_sessions.c.last_seen)).scalar_one())

    opened = last_seen()
    api.clock.advance(seconds=50)
    http.get("/api/me")
    assert last_seen() == opened
    api.clock.advance(seconds=20)
    http.get("/api/me")
    assert last_seen() > opened


def test_logout_ends_the_session_and_is_on_the_ledger(api: Api) -> None:
    """Logging out clears the cookie, ends the session (its cookie refused after) and
    appends auth.logout naming the person and the session."""
    bob = api.user("bob")
    http = bob.client()
    cookie = http.cookies[SESSION_COOKIE]
    session = http.get("/api/me").json()["session"]
    answer = http.post("/api/auth/logout")
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert "max-age=0" in cookie_flags(answer)
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action, entry.subject, entry.payload) == (
        "user:bob", "auth.logout", "user:bob",
        {"context": {"session": session, "client": "127.0.0.1"}})
    assert with_cookie(api, cookie).get("/api/me").json() == ENDED


# -- CSRF -------------------------------------------------------------------------------------


def test_state_changing_requests_by_cookie_need_the_csrf_token(api: Api) -> None:
    """POST/DELETE authenticated by the cookie without X-CSRF-Token, or with another
    session's, answer 403 csrf and change nothing; with it they work. GET needs none."""
    bob = api.user("bob")
    answer = login(api.anonymous(), bob)
    cookie, csrf = cookie_of(answer), answer.json()["csrf_token"]
    other_csrf = login(api.anonymous(), bob).json()["csrf_token"]
    refused = {"error": {"code": "csrf", "message": "this request needs the X-CSRF-Token "
                                                    "header of your session (as returned at "
                                                    "login)"}}
    for sent in (None, "", other_csrf, csrf[:-1]):
        http = with_cookie(api, cookie, sent)
        made = http.post("/api/me/tokens", json={"scope": "read"})
        assert (made.status_code, made.json()) == (403, refused), sent
        gone = http.post("/api/auth/logout")
        assert (gone.status_code, gone.json()) == (403, refused), sent
    assert api.people.list_tokens("bob") == []
    assert with_cookie(api, cookie).get("/api/me").status_code == 200
    made = with_cookie(api, cookie, csrf).post("/api/me/tokens", json={"scope": "read"})
    assert made.status_code == 201, made.text


def test_bearer_requests_need_no_csrf_token(api: Api) -> None:
    """A bearer token is no ambient credential: a POST with it needs no CSRF header."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    http = api.anonymous(bearer=bob.token("submit", ["Case 7"]))
    answer = http.post("/api/captures", json={"urls": ["https://example.org/post/1"],
                                              "case": "Case 7"})
    assert answer.status_code == 202, answer.text


# -- bearer tokens -------------------------------------------------------------------------------


def test_bearer_token_signs_in_and_the_cookie_is_then_ignored(api: Api) -> None:
    """With a bearer token the request is the token's person, whatever cookie it also
    carries; a refused bearer is refused even with a good cookie."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    carol = api.user("carol", cases={"Case 9": "legal"})
    secret = carol.token("read", ["Case 9"])
    http = bob.client()
    http.headers["Authorization"] = f"Bearer {secret}"
    me = http.get("/api/me").json()
    assert me["user"]["login"] == "carol"
    assert me["token"]["scope"] == "read"
    assert me["token"]["cases"] == ["Case 9"]
    assert me["session"] is None
    http.headers["Authorization"] = "Bearer ea_not-a-token"
    answer = http.get("/api/me")
    assert (answer.status_code, answer.json()) == (401, BAD_TOKEN)


def test_refused_tokens_get_one_answer_and_the_ledger_gets_the_reason(api: Api) -> None:
    """Unknown, revoked, expired tokens and a disabled owner's token: the same 401
    invalid-token body; auth.failed records each reason, the token id and the client."""
    bob = api.user("bob")
    carol = api.user("carol")
    revoked = bob.token("read")
    api.people.revoke_token(api.people.list_tokens("bob")[0].id)
    from datetime import timedelta

    expiring = bob.token("read", expires=timedelta(minutes=5))
    disabled = carol.token("read")
    api.people.disable_user("carol")
    api.clock.advance(minutes=6)
    start = api.archive.ledger.size()
    for secret in ("ea_unknown", revoked, expiring, disabled):
        answer = api.anonymous(bearer=secret).get("/api/me")
        assert (answer.status_code, answer.json()) == (401, BAD_TOKEN)
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    failed = entries_since(api, start)
    assert [(e.actor, e.action, e.payload["reason"], e.payload["context"]) for e in failed] == [
        ("anonymous", "auth.failed", reason, {"client": "127.0.0.1"})
        for reason in ("token-unknown", "token-revoked", "token-expired", "disabled")]
    assert [e.payload.get("login") for e in failed] == [None, "bob", "bob", "carol"]


def test_authorization_header_other_than_bearer_is_refused(api: Api) -> None:
    """``Authorization: Basic ...`` or an empty bearer: 401, not anonymous access."""
    for value in ("Basic Ym9iOnB3", "Bearer", "Token ea_x"):
        answer = api.anonymous(headers={"Authorization": value}).get("/api/me")
        assert answer.status_code == 401, value
        assert answer.json() == {"error": {
            "code": "invalid-token",
            "message": "the Authorization header must be 'Bearer <token>'"}}


def test_disabled_persons_session_and_token_are_refused(api: Api) -> None:
    """Disabling a person ends their session and refuses their token at once."""
    bob = api.user("bob")
    http = bob.client()
    bearer = api.anonymous(bearer=bob.token("read"))
    assert http.get("/api/me").status_code == 200
    assert bearer.get("/api/me").status_code == 200
    api.people.disable_user("bob")
    answer = http.get("/api/me")
    assert (answer.status_code, answer.json()) == (401, ENDED)
    assert bearer.get("/api/me").json() == BAD_TOKEN
    # and the password no longer signs in
    assert login(api.anonymous(), bob).json() == WRONG


# -- login refusals and limits ---------------------------------------------------------------


def test_unknown_login_and_wrong_password_get_byte_identical_answers(api: Api) -> None:
    """The same status, headers and body bytes for an unknown login as for a wrong
    password; the ledger tells them apart (actor anonymous, client, session that would
    have opened)."""
    api.user("bob")
    start = api.archive.ledger.size()
    unknown = api.anonymous().post("/api/auth/login",
                                   json={"login": "nobody", "password": "whatever-it-is-1"})
    wrong = api.anonymous().post("/api/auth/login",
                                 json={"login": "bob", "password": "whatever-it-is-1"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    assert unknown.json() == WRONG

    def headers(answer: httpx.Response) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in answer.headers.items() if k != "date")

    assert headers(unknown) == headers(wrong)
    assert "set-cookie" not in unknown.headers
    first, second = entries_since(api, start)
    for entry, (login_name, reason) in zip((first, second), (("nobody", "unknown-user"),
                                                             ("bob", "wrong-password")),
                                           strict=True):
        assert (entry.actor, entry.action, entry.subject) == (
            "anonymous", "auth.failed", f"user:{login_name}")
        assert (entry.payload["login"], entry.payload["reason"]) == (login_name, reason)
        assert entry.payload["context"]["client"] == "127.0.0.1"
        assert entry.payload["context"]["session"].startswith("ses_")
        assert "whatever-it-is-1" not in str(entry.payload)


def test_login_is_on_the_ledger_with_the_session_it_opened(api: Api) -> None:
    """auth.login names the person as actor, the method, the session and the client."""
    bob = api.user("bob")
    http = bob.client()
    (entry,) = entries(api, 1)
    session = http.get("/api/me").json()["session"]
    assert (entry.actor, entry.action, entry.subject, entry.payload) == (
        "user:bob", "auth.login", "user:bob",
        {"method": "password", "context": {"session": session, "client": "127.0.0.1"}})


def test_client_rate_limit_answers_429_with_retry_after(strict_api: Api) -> None:
    """Past auth.client_failures_per_minute failures from one address, even the right
    password is refused (429, Retry-After) unchecked; a minute later it is let in."""
    api = strict_api
    bob = api.user("bob")
    for name in ("x1", "x2", "x3"):
        answer = api.anonymous().post("/api/auth/login",
                                      json={"login": name, "password": "not-the-password"})
        assert answer.json() == WRONG
    answer = login(api.anonymous(), bob)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "60"
    assert answer.json() == {"error": {
        "code": "rate-limited",
        "message": "too many failed attempts from this address; try again in a minute"}}
    (entry,) = entries(api, 1)
    assert (entry.action, entry.payload["login"], entry.payload["reason"]) == (
        "auth.failed", "bob", "rate-limited")
    api.clock.advance(seconds=61)
    assert login(api.anonymous(), bob).status_code == 200


def test_lockout_after_repeated_wrong_passwords(strict_api: Api) -> None:
    """auth.lockout_after wrong passwords lock the login: the right password then gets
    the same 401 answer (reason locked on the ledger) until the lock passes."""
    api = strict_api
    bob = api.user("bob")
    for _ in range(3):
        wrong = api.anonymous().post("/api/auth/login",
                                     json={"login": "bob", "password": "not-the-password"})
        assert wrong.json() == WRONG
        api.clock.advance(seconds=30)  # stay under the client's limit
    api.clock.advance(seconds=61)
    locked = login(api.anonymous(), bob)
    assert (locked.status_code, locked.content) == (401, wrong.content)
    (entry,) = entries(api, 1)
    assert (entry.action, entry.payload["reason"]) == ("auth.failed", "locked")
    api.clock.advance(minutes=16)
    assert login(api.anonymous(), bob).status_code == 200


def test_login_body_is_checked(api: Api) -> None:
    """Unknown fields, missing or oversized fields: 422 invalid-request naming them."""
    http = api.anonymous()
    answer = http.post("/api/auth/login", json={"login": "bob", "password": "x" * 12,
                                                "remember": True})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid-request"
    assert "remember" in answer.json()["error"]["message"]
    answer = http.post("/api/auth/login", json={"login": "bob"})
    assert answer.status_code == 422
    assert "password" in answer.json()["error"]["message"]
    answer = http.post("/api/auth/login", json={"login": "b" * 201, "password": "x" * 12})
    assert answer.status_code == 422
    assert "login" in answer.json()["error"]["message"]


# -- the second factor -------------------------------------------------------------------------


def test_totp_login_in_two_steps(api: Api) -> None:
    """A person with TOTP who logs in by password alone gets a session that answers
    only the second-factor routes (403 mfa-required elsewhere); a wrong code is 401 and
    on the ledger; the right code opens a new session (the pending cookie then refused)
    and everything answers."""
    dana = api.user("dana", mfa=True)
    http = api.anonymous()
    first = login(http, dana)
    assert first.status_code == 200, first.text
    assert first.json()["mfa_pending"] is True
    pending_cookie = cookie_of(first)
    http.headers[CSRF_HEADER] = first.json()["csrf_token"]
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action, entry.payload["method"], entry.payload["mfa"]) == (
        "user:dana", "auth.login", "password", "pending")
    blocked = http.get("/api/captures")
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (403, "mfa-required")
    assert http.get("/api/me/tokens").json()["error"]["code"] == "mfa-required"
    me = http.get("/api/me")
    assert me.status_code == 200
    assert me.json()["mfa"] == {"enrolled": True, "required": False, "pending": True}
    wrong = http.post("/api/auth/mfa", json={"code": "000000"})
    assert (wrong.status_code, wrong.json()) == (
        401, {"error": {"code": "login-failed", "message": "wrong one-time code"}})
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action, entry.subject, entry.payload["reason"]) == (
        "user:dana", "auth.failed", "user:dana", "wrong-totp")
    passed = http.post("/api/auth/mfa", json={"code": dana.code()})
    assert passed.status_code == 200, passed.text
    assert passed.json()["mfa_pending"] is False
    assert cookie_of(passed) != pending_cookie
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action, entry.payload["method"]) == (
        "user:dana", "auth.mfa_passed", "totp")
    http.headers[CSRF_HEADER] = passed.json()["csrf_token"]
    assert http.get("/api/captures").status_code == 200
    assert with_cookie(api, pending_cookie).get("/api/me").json() == ENDED


def test_totp_code_in_the_login_itself(api: Api) -> None:
    """The code given with the password signs in at once (method password+totp); a
    code used once is refused the second time."""
    dana = api.user("dana", mfa=True)
    code = dana.code()
    answer = login(api.anonymous(), dana, totp=code)
    assert (answer.status_code, answer.json()["mfa_pending"]) == (200, False)
    (entry,) = entries(api, 1)
    assert (entry.action, entry.payload["method"]) == ("auth.login", "password+totp")
    again = login(api.anonymous(), dana, totp=code)
    assert (again.status_code, again.json()["error"]["message"]) == (
        401, "wrong one-time code")


def test_admin_without_totp_may_only_enrol(api: Api) -> None:
    """An admin with no second factor signs in to a session that may only enrol one:
    the admin routes answer 403 mfa-required; begin gives an otpauth URI whose secret
    pyotp turns into the code that confirms; then the admin routes answer."""
    alice = api.user("alice", role="admin", cases={})
    http = api.anonymous()
    answer = login(http, alice)
    assert answer.json()["mfa_pending"] is True
    assert answer.json()["user"]["mfa_required"] is True
    http.headers[CSRF_HEADER] = answer.json()["csrf_token"]
    refused = http.get("/api/users")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "mfa-required")
    assert http.post("/api/me/tokens", json={}).json()["error"]["code"] == "mfa-required"
    assert http.post("/api/auth/mfa", json={"code": "123456"}).json()["error"]["code"] == \
        "mfa-not-enrolled"
    begun = http.post("/api/me/mfa/begin")
    assert begun.status_code == 200, begun.text
    uri = begun.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/")
    (secret,) = parse_qs(urlparse(uri).query)["secret"]
    totp = pyotp.TOTP(secret)
    bad = http.post("/api/me/mfa/confirm", json={"code": "000000"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad-input")
    confirmed = http.post("/api/me/mfa/confirm", json={"code": totp.at(api.clock())})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["mfa_pending"] is False
    assert confirmed.json()["user"]["mfa_enrolled"] is True
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action) == ("user:alice", "auth.mfa_enrolled")
    http.headers[CSRF_HEADER] = confirmed.json()["csrf_token"]
    assert http.get("/api/users").status_code == 200


# -- about oneself ------------------------------------------------------------------------------


def test_own_tokens_created_listed_revoked(api: Api) -> None:
    """A person makes a token (the secret answered once, never listed), limited to their
    own case; a case that is not theirs is 404 like an unknown one; another person's
    token cannot be revoked (404); the token works until revoked."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    api.case("Secret case")
    http = bob.client()
    made = http.post("/api/me/tokens", json={"scope": "submit", "cases": ["Case 7"],
                                             "expires_days": 30, "label": "laptop"})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    token = made.json()["token"]
    assert secret.startswith("ea_")
    assert (token["scope"], token["cases"], token["label"], token["state"]) == (
        "submit", ["Case 7"], "laptop", "active")
    (entry,) = entries(api, 1)
    assert (entry.actor, entry.action, entry.payload["token_id"]) == (
        "user:bob", "token.created", token["id"])
    listed = http.get("/api/me/tokens").json()
    assert [t["id"] for t in listed["items"]] == [token["id"]]
    assert secret not in str(listed)
    assert api.anonymous(bearer=secret).get("/api/me").json()["user"]["login"] == "bob"
    for case in ("Secret case", "No such case"):
        answer = http.post("/api/me/tokens", json={"cases": [case]})
        assert (answer.status_code, answer.json()) == (
            404, {"error": {"code": "not-found", "message": f"no case {case!r}"}})
    carol = api.user("carol")
    carols = carol.client().post("/api/me/tokens", json={}).json()["token"]["id"]
    answer = http.delete(f"/api/me/tokens/{carols}")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not-found")
    revoked = http.delete(f"/api/me/tokens/{token['id']}")
    assert (revoked.status_code, revoked.json()["state"]) == (200, "revoked")
    assert api.anonymous(bearer=secret).get("/api/me").json() == BAD_TOKEN


def test_tokens_cannot_manage_their_person(api: Api) -> None:
    """A token (any scope) may read /api/me but not log out, change the password or
    make tokens (403: those need a signed-in session)."""
    bob = api.user("bob")
    http = api.anonymous(bearer=bob.token("export"))
    assert http.get("/api/me").status_code == 200
    for path in ("/api/me/tokens", "/api/auth/logout", "/api/me/mfa/begin"):
        answer = http.post(path, json={})
        assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")


def test_change_password_rotates_the_session(api: Api) -> None:
    """The old password is proved; every session of the person ends, this one replaced
    by a new one; the new password signs in; a wrong old one is 403."""
    bob = api.user("bob")
    http = bob.client()
    other = bob.client()
    wrong = http.post("/api/me/password", json={"old": "not-it-at-all", "new": "x" * 16})
    assert (wrong.status_code, wrong.json()) == (
        403, {"error": {"code": "wrong-password", "message": "the current password is wrong"}})
    weak = http.post("/api/me/password", json={"old": bob.password, "new": "short"})
    assert (weak.status_code, weak.json()["error"]["code"]) == (400, "bad-input")
    old_cookie = http.cookies[SESSION_COOKIE]
    changed = http.post("/api/me/password",
                        json={"old": bob.password, "new": "a-brand-new-passphrase"})
    assert changed.status_code == 200, changed.text
    assert cookie_of(changed) != old_cookie
    assert other.get("/api/me").json() == ENDED
    assert with_cookie(api, old_cookie).get("/api/me").json() == ENDED
    assert with_cookie(api, cookie_of(changed)).get("/api/me").status_code == 200
    bob.password = "a-brand-new-passphrase"
    assert login(api.anonymous(), bob).status_code == 200


# -- headers, limits, the client address --------------------------------------------------------


def test_security_headers_on_every_answer_errors_included(api: Api) -> None:
    """200, 401, 403, 404, 405, 413, 422 and 429-free answers all carry the headers."""
    bob = api.user("bob")
    http = api.anonymous()
    answers = [
        http.get("/healthz"),
        http.get("/api/me"),
        with_cookie(api, cookie_of(login(api.anonymous(), bob))).post("/api/auth/logout"),
        http.get("/api/nothing-here"),
        http.put("/api/auth/login"),
        http.post("/api/auth/login", content=b"x" * (MAX_BODY_BYTES + 1)),
        http.post("/api/auth/login", json={}),
    ]
    assert [a.status_code for a in answers] == [200, 401, 403, 404, 405, 413, 422]
    for answer in answers:
        for name, value in SECURITY_HEADERS:
            assert answer.headers.get(name.decode()) == value.decode(), (answer.url, name)


def test_body_over_the_limit_is_413_announced_or_streamed(api: Api) -> None:
    """A body past 1 MiB is refused 413 too-large, by Content-Length or chunked."""
    http = api.anonymous()
    announced = http.post("/api/auth/login", content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                          headers={"content-type": "application/json"})
    assert (announced.status_code, announced.json()["error"]["code"]) == (413, "too-large")

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * 65536

    streamed = http.post("/api/auth/login", content=chunks(),
                         headers={"content-type": "application/json"})
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "too-large")


def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(api: Api) -> None:
    """Behind a trusted proxy (127.0.0.1), the client is the rightmost untrusted
    X-Forwarded-For hop, recorded on auth.login; from an untrusted peer the header is
    ignored and the socket peer is recorded."""
    bob = api.user("bob")
    proxied = api.start(WebOptions(secure_cookies=False, trusted_proxies=("127.0.0.1",)))
    forged = {"X-Forwarded-For": "198.51.100.66, 203.0.113.7, 127.0.0.1"}
    answer = login(api.anonymous(url=proxied.url, headers=forged), bob)
    assert answer.status_code == 200
    (entry,) = entries(api, 1)
    assert entry.payload["context"]["client"] == "203.0.113.7"
    answer = login(api.anonymous(headers=forged), bob)  # the fixture's server trusts none
    (entry,) = entries(api, 1)
    assert entry.payload["context"]["client"] == "127.0.0.1"
    elsewhere = api.start(WebOptions(secure_cookies=False, trusted_proxies=("10.0.0.0/8",)))
    login(api.anonymous(url=elsewhere.url, headers=forged), bob)
    (entry,) = entries(api, 1)
    assert entry.payload["context"]["client"] == "127.0.0.1"
    garbage = {"X-Forwarded-For": "not-an-address"}
    login(api.anonymous(url=proxied.url, headers=garbage), bob)
    (entry,) = entries(api, 1)
    assert entry.payload["context"]["client"] == "127.0.0.1"
