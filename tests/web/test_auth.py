"""Signing in to the HTTP API: sessions (cookie, CSRF, rotation, timeouts), bearer
tokens, login refusals and limits, TOTP, and what reaches the ledger; over the real app
on a real port (tests/fixtures/api.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from api_fixtures import Api


def test_session_login_and_me(api: Api) -> None:
    """A person signs in by password and the session answers /api/me as them."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    http = bob.client()
    me = http.get("/api/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["user"]["login"] == "bob"
    assert body["cases"] == [{"case": "Case 7", "role": "investigator"}]
