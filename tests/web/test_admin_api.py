"""Administration through the API: people, cases and members, tokens; each change on
the ledger naming the admin and their session; nothing secret in any answer; only a
signed-in admin manages (tokens and other roles are refused). Over the real app on a
real port (tests/fixtures/api.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
from api_fixtures import Api, Person

from chain_of_custody.ledger import LedgerEntry

FORBIDDEN = {"error": {"code": "forbidden", "message": "your role or token does not allow this"}}
SECRET_FIELDS = ("password_hash", "totp_secret", "sha256", "password")


def last(api: Api, action: str) -> LedgerEntry:
    found: list[LedgerEntry] = list(api.archive.ledger.entries(actions=[action]))
    assert found, f"no {action} on the ledger"
    return found[-1]


def context_of(http: httpx.Client) -> dict[str, str]:
    me = http.get("/api/me").json()
    return {"session": me["session"], "client": "127.0.0.1"}


def admin_client(api: Api) -> tuple[Person, httpx.Client]:
    ada = api.user("ada", "admin", cases={}, mfa=True)
    return ada, ada.client()


def test_admin_creates_a_user_who_then_logs_in(api: Api) -> None:
    """POST /api/users: user.created by the admin (session, address); the answer holds
    no hash; the new person signs in with the password given."""
    _ada, http = admin_client(api)
    context = context_of(http)
    made = http.post("/api/users", json={"login": "erin", "display_name": "Erin E.",
                                         "password": "a-long-enough-passphrase-7"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["login"], body["display_name"], body["archive_role"]) == (
        "erin", "Erin E.", None)
    assert not any(field in body for field in SECRET_FIELDS)
    assert "a-long-enough-passphrase-7" not in made.text
    entry = last(api, "user.created")
    assert (entry.actor, entry.subject) == ("user:ada", "user:erin")
    assert entry.payload == {"login": "erin", "display_name": "Erin E.", "archive_role": None,
                             "context": context}

    erin = api.anonymous()
    login = erin.post("/api/auth/login", json={"login": "erin",
                                               "password": "a-long-enough-passphrase-7"})
    assert login.status_code == 200, login.text
    assert login.json()["user"]["login"] == "erin"

    shown = http.get("/api/users/erin").json()
    assert shown["created_by"] == "user:ada"
    listed = http.get("/api/users", params={"limit": 1})
    assert [u["login"] for u in listed.json()["items"]] == ["ada"]
    rest = http.get("/api/users", params={"limit": 1, "cursor": listed.json()["next"]})
    assert [u["login"] for u in rest.json()["items"]] == ["erin"]
    assert rest.json()["next"] is None


def test_bad_users_are_refused_with_the_reason(api: Api) -> None:
    """A short, common or self-named password 400; a taken login 409; an unknown one 404;
    an unknown role 422; an admin may not disable themselves (409)."""
    _ada, http = admin_client(api)
    for password, message in (
            ("short", "the password is too short: at least 12 characters"),
            ("erin", "the password is too short: at least 12 characters")):
        answer = http.post("/api/users", json={"login": "erin", "password": password})
        assert answer.status_code == 400
        assert answer.json() == {"error": {"code": "bad-input", "message": message}}
    common = http.post("/api/users", json={"login": "erin", "password": "password1234"})
    assert common.status_code == 400
    assert common.json()["error"]["message"].startswith(
        "the password is one of the most common passwords")
    taken = http.post("/api/users", json={"login": "ada", "password": "another-long-one-42"})
    assert taken.status_code == 409
    assert taken.json() == {"error": {"code": "exists", "message": "a user 'ada' already exists"}}
    unknown = http.get("/api/users/nobody")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not-found", "message": "no user 'nobody'"}}
    role = http.post("/api/users", json={"login": "erin", "password": "a-long-enough-one-9",
                                         "archive_role": "root"})
    assert role.status_code == 422
    me = http.post("/api/users/ada/disable")
    assert me.status_code == 409
    assert me.json()["error"]["message"] == "you cannot disable your own account"


def test_disable_enable_reset_password_and_mfa(api: Api) -> None:
    """Disabling ends the person's session (401 after), enabling lets them in again;
    a reset password works and the old one does not; an MFA reset unenrols. Each is on
    the ledger by the admin."""
    _ada, http = admin_client(api)
    bob = api.user("bob")
    bobs = bob.client()
    assert bobs.get("/api/me").status_code == 200
    disabled = http.post("/api/users/bob/disable")
    assert disabled.status_code == 200
    assert disabled.json()["disabled"] is True
    assert bobs.get("/api/me").status_code == 401
    assert last(api, "user.disabled").actor == "user:ada"
    assert http.post("/api/users/bob/enable").json()["disabled"] is False
    assert last(api, "user.enabled").actor == "user:ada"
    reset = http.post("/api/users/bob/reset-password",
                      json={"password": "a-brand-new-passphrase-3"})
    assert reset.status_code == 200, reset.text
    assert last(api, "user.password_reset").actor == "user:ada"
    anon = api.anonymous()
    assert anon.post("/api/auth/login", json={"login": "bob", "password": bob.password}
                     ).status_code == 401
    assert anon.post("/api/auth/login", json={"login": "bob",
                                              "password": "a-brand-new-passphrase-3"}
                     ).status_code == 200
    mo = api.user("mo", mfa=True)
    assert mo.view.mfa_enrolled
    unenrolled = http.post("/api/users/mo/mfa-reset")
    assert unenrolled.json()["mfa_enrolled"] is False
    entry = last(api, "user.mfa_reset")
    assert (entry.actor, entry.subject) == ("user:ada", "user:mo")


def test_cases_members_and_who_sees_which_case(api: Api) -> None:
    """The admin creates a case and grants a role (case.created, role.granted); members
    are listed; a person's GET /api/cases lists their own cases only, the admin's all of
    them; revoking takes the role away (role.revoked)."""
    _ada, http = admin_client(api)
    context = context_of(http)
    erin = api.user("erin", cases={"Old": "viewer"})
    made = http.post("/api/cases", json={"name": "Case 9"})
    assert made.status_code == 201, made.text
    assert last(api, "case.created").payload == {"case": "Case 9", "context": context}
    granted = http.put("/api/cases/Case 9/members/erin", json={"role": "investigator"})
    assert granted.status_code == 200, granted.text
    assert granted.json()["role"] == "investigator"
    entry = last(api, "role.granted")
    assert (entry.actor, entry.subject) == ("user:ada", "case:Case 9")
    assert entry.payload == {"case": "Case 9", "login": "erin", "role": "investigator",
                             "context": context}
    members = http.get("/api/cases/Case 9/members").json()["items"]
    assert [(m["login"], m["role"]) for m in members] == [("erin", "investigator")]

    api.case("Secret")
    mine = erin.client().get("/api/cases").json()["items"]
    assert [(c["name"], c["role"], c["members"]) for c in mine] == [
        ("Case 9", "investigator", None), ("Old", "viewer", None)]
    every = http.get("/api/cases").json()["items"]
    assert [c["name"] for c in every] == ["Case 9", "Old", "Secret", "unfiled"]

    revoked = http.delete("/api/cases/Case 9/members/erin")
    assert revoked.json() == {"case": "Case 9", "login": "erin", "role": "investigator"}
    assert last(api, "role.revoked").actor == "user:ada"
    again = http.delete("/api/cases/Case 9/members/erin")
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "erin has no role on case 'Case 9'"
    taken = http.post("/api/cases", json={"name": "Case 9"})
    assert taken.status_code == 409
    reserved = http.post("/api/cases", json={"name": "unfiled"})
    assert reserved.status_code == 400
    bad_role = http.put("/api/cases/Case 9/members/erin", json={"role": "owner"})
    assert bad_role.status_code == 422


def test_tokens_shown_once_listed_without_secrets_revoked(api: Api) -> None:
    """POST /api/tokens answers the secret once (token.created by the admin); the list
    never shows it; the token works until DELETE revokes it (token.revoked)."""
    _ada, http = admin_client(api)
    api.user("erin", cases={"Case 7": "investigator"})
    made = http.post("/api/tokens", json={"user": "erin", "scope": "read",
                                          "cases": ["Case 7"], "expires_days": 30,
                                          "label": "laptop"})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    token = made.json()["token"]
    assert (token["login"], token["scope"], token["cases"], token["state"]) == (
        "erin", "read", ["Case 7"], "active")
    entry = last(api, "token.created")
    assert (entry.actor, entry.payload["login"]) == ("user:ada", "erin")
    listed = http.get("/api/tokens", params={"user": "erin"})
    assert [t["id"] for t in listed.json()["items"]] == [token["id"]]
    assert secret not in listed.text
    assert "sha256" not in listed.text
    bearer = api.anonymous(bearer=secret)
    assert bearer.get("/api/me").json()["user"]["login"] == "erin"
    revoked = http.delete(f"/api/tokens/{token['id']}")
    assert revoked.json()["state"] == "revoked"
    assert last(api, "token.revoked").actor == "user:ada"
    assert bearer.get("/api/me").status_code == 401
    never = http.post("/api/tokens", json={"user": "erin", "expires_days": "never"})
    assert never.json()["token"]["expires"] is None
    nobody = http.post("/api/tokens", json={"user": "nobody"})
    assert nobody.status_code == 404
    assert http.post("/api/tokens", json={"user": "erin", "expires_days": 0}
                     ).status_code == 422


def test_only_a_signed_in_admin_manages(api: Api) -> None:
    """An admin's own token, an auditor and an investigator get 403 on every admin
    route; anonymous gets 401."""
    ada, _http = admin_client(api)
    api.user("bob")
    olga = api.user("olga", "auditor", cases={})
    ivan = api.user("ivan")
    clients = [api.anonymous(bearer=ada.token("read")), olga.client(), ivan.client()]
    calls = [("GET", "/api/users", None), ("POST", "/api/users", {"login": "x", "password": "y"}),
             ("GET", "/api/users/bob", None), ("POST", "/api/users/bob/disable", None),
             ("POST", "/api/cases", {"name": "X"}), ("GET", "/api/cases/case/members", None),
             ("PUT", "/api/cases/case/members/bob", {"role": "viewer"}),
             ("GET", "/api/tokens", None), ("POST", "/api/tokens", {"user": "bob"})]
    for client in clients:
        for method, path, body in calls:
            answer = client.request(method, path, json=body)
            assert (answer.status_code, answer.json()) == (403, FORBIDDEN), (method, path)
    assert api.anonymous().get("/api/users").status_code == 401


def test_activity_is_for_the_ledger_readers(api: Api) -> None:
    """An auditor reads a person's entries (their sign-ins); an admin may not (403):
    activity names evidence of cases the admin may not be in."""
    _ada, admin = admin_client(api)
    olga = api.user("olga", "auditor", cases={})
    erin = api.user("erin")
    erin.client()
    activity = olga.client().get("/api/users/erin/activity")
    assert activity.status_code == 200, activity.text
    items = activity.json()["items"]
    assert items
    assert {e["actor"] for e in items} == {"user:erin"}
    assert "auth.login" in {e["action"] for e in items}
    assert admin.get("/api/users/erin/activity").status_code == 403
    assert olga.client().get("/api/users/nobody/activity").status_code == 404
