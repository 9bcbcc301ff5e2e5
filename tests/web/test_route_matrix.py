"""No route escapes the check: the route table, and every route x every kind of person.

1. The real app's route table: every route is an ``APIRoute`` registered through
   :func:`archiver.web.gate.route` (its endpoint declares an action, ``_enforce`` runs
   in front of it), and every route has a row in :data:`ROWS` (a route added without
   extending this matrix fails here).
2. The matrix, on SQLite and PostgreSQL: one archive per database (case A with a capture
   submitted through the API and captured by the real ``archiver daemon``, a watch, an
   export done; case B), fifteen personas, and for EVERY route x persona the exact
   status. The expectations are written out below (who is allowed, and the rule for the
   others), not computed by :func:`archiver.people.access.decide`, so that this test can
   disagree with the code. An allowed call that is an act (a view, a download, a
   submission, an export, a watch or account change, a login) must add its ledger entry
   naming the person (``user:<login>``) and the token or session they came with; a
   refused one must not.
3. Every 404 a non-member gets for a resource of case A is byte for byte the 404 of a
   random id of the same kind.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from api_fixtures import Api, Person, start_api
from daemon_process import Daemon, wait_until
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from archiver.archive import Archive
from archiver.people.access import Action, Scope
from archiver.settings import Settings, load_settings
from archiver.web import gate as gate_module
from archiver.web.app import create_app
from archiver.web.auth import CSRF_HEADER, SESSION_COOKIE
from chain_of_custody.ledger import entries_table

CASE_A = "Case A"
CASE_B = "Case B"
POSTGRES_BASE_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# -- the personas -------------------------------------------------------------------------

ANON = "anonymous"
INV = "investigator of A"
LEGAL = "legal of A"
VIEWER = "viewer of A"
AUDITOR = "auditor (no case)"
ADMIN = "admin (TOTP, no case)"
OTHER = "investigator of B"
DIS_S = "disabled user's session"
DIS_T = "disabled user's token"
EXPIRED = "expired token"
INV_READ = "A's investigator, read token"
INV_SUBMIT = "A's investigator, submit token"
LEGAL_READ = "A's legal, read token"
LEGAL_EXPORT = "A's legal, export token"
B_ONLY = "token limited to B (of an investigator of A and B)"

PERSONAS = (ANON, INV, LEGAL, VIEWER, AUDITOR, ADMIN, OTHER, DIS_S, DIS_T, EXPIRED,
            INV_READ, INV_SUBMIT, LEGAL_READ, LEGAL_EXPORT, B_ONLY)
SESSIONS = frozenset({INV, LEGAL, VIEWER, AUDITOR, ADMIN, OTHER})
TOKENS = frozenset({INV_READ, INV_SUBMIT, LEGAL_READ, LEGAL_EXPORT, B_ONLY})
SIGNED_IN = SESSIONS | TOKENS
A_READERS = frozenset({INV, LEGAL, VIEWER, INV_READ, INV_SUBMIT, LEGAL_READ, LEGAL_EXPORT})
A_SUBMITTERS = frozenset({INV, INV_SUBMIT})
A_EXPORTERS = frozenset({LEGAL, LEGAL_EXPORT})
EVERYONE = frozenset(PERSONAS)

# -- the rules for the refused ------------------------------------------------------------

SIGNED_OUT: Mapping[str, int] = {ANON: 401, DIS_S: 401, DIS_T: 401, EXPIRED: 401}
"""Nobody signed in, or credentials refused: 401, whatever the route."""

CASE_RULE: Mapping[str, int] = {
    **SIGNED_OUT,
    # not members of A (the admin is not a backdoor; a token limited to B is not on A):
    # A's resource does not exist for them
    OTHER: 404, ADMIN: 404, B_ONLY: 404,
    # the auditor may verify any capture, so knows it exists: the honest 403
    AUDITOR: 403,
    # members whose role, or tokens whose scope, is short
    INV: 403, LEGAL: 403, VIEWER: 403,
    INV_READ: 403, INV_SUBMIT: 403, LEGAL_READ: 403, LEGAL_EXPORT: 403,
}
"""One resource of case A (or case A named in the path or body)."""

CASE_LIST_RULE: Mapping[str, int] = {**CASE_RULE, AUDITOR: 404}
"""A list filtered to ``?case=Case A``: a case one cannot list is an unknown case (404),
for the auditor too (no case is listed to them)."""

ARCHIVE_RULE: Mapping[str, int] = {**SIGNED_OUT, **{p: 403 for p in SIGNED_IN}}
"""Archive-wide actions: the role is short (or a token, which never manages): 403."""

SELF_RULE: Mapping[str, int] = {**SIGNED_OUT, **{p: 403 for p in TOKENS}}
"""About oneself, managed: a signed-in session only; a token is refused (403)."""

PUBLIC_RULE: Mapping[str, int] = {}

REFUSAL_CODES: Mapping[str, str] = {ANON: "unauthenticated", DIS_S: "session-ended",
                                    DIS_T: "invalid-token", EXPIRED: "invalid-token"}
"""The error code of each 401 (a refusal for a reason other than the one expected, a
cleared cookie taken for a disabled one, must not pass); a 403 is ``forbidden`` (not a
missing CSRF header), a 404 ``not-found``."""


# -- the world ----------------------------------------------------------------------------


@dataclass
class Persona:
    """One kind of caller: its client, whose credentials, and what the ledger should name
    (``token`` id or ``session`` id) for its acts."""

    name: str
    http: httpx.Client
    person: Person | None = None
    token_id: str | None = None
    session: str | None = None
    acted_as: str | None = None  # the session an act came through, when not ``session``
    pinned_cookie: str | None = None  # a session cookie sent again on every call

    @property
    def actor(self) -> str:
        assert self.person is not None
        return f"user:{self.person.login}"

    def refresh_session(self, answer: httpx.Response) -> None:
        """After a step that opened a new session on this client (its cookie is set):
        the new CSRF token, and the session's id as the ledger names it."""
        self.http.headers[CSRF_HEADER] = answer.json()["csrf_token"]
        self.session = self.http.get("/api/me").json()["session"]


@dataclass
class Ids:
    """The resources a request names: case A's, or random ones of the same kinds."""

    capture: str
    artifact: str
    job: int
    watch: int
    export: str
    case: str


@dataclass
class World:
    api: Api
    site: Any
    personas: dict[str, Persona]
    a: Ids
    seq: int  # an entry the latest checkpoint covers
    victim: str  # a person the refused admin calls name
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def as_inv(self) -> httpx.Client:
        return self.personas[INV].http


def random_ids() -> Ids:
    return Ids(capture=str(uuid.uuid4()), artifact="nothing/here.bin",
               job=int(uuid.uuid4().int % 10**12) + 10**12,
               watch=int(uuid.uuid4().int % 10**9) + 10**9,
               export="exp_" + uuid.uuid4().hex[:16], case="Case " + uuid.uuid4().hex[:8])


def sign_in(api: Api, person: Person) -> httpx.Client:
    """A new session of ``person`` (the second factor given when enrolled)."""
    http: httpx.Client = person.client()
    return http


def session_id(http: httpx.Client) -> str:
    answer = http.get("/api/me")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["session"])


def last_seq(api: Api) -> int:
    with api.archive.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(entries_table.c.seq))).scalar() or 0)


@dataclass(frozen=True)
class Entry:
    seq: int
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]


def entries_after(api: Api, seq: int) -> list[Entry]:
    e = entries_table.c
    with api.archive.engine.connect() as conn:
        rows = conn.execute(sa.select(e.seq, e.actor, e.action, e.subject, e.payload)
                            .where(e.seq > seq).order_by(e.seq)).all()
    return [Entry(r.seq, r.actor, r.action, r.subject, json.loads(r.payload)) for r in rows]


class _NoCapture:
    """What :class:`archive_cli.Cli` reads its output through, for a module-scoped
    archive (pytest's capsys is per test; the output still goes to pytest's capture)."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


def _fast_daemon_settings() -> dict[str, str]:
    settings = {
        "ARCHIVER_CAPTURE__FETCH_SUBRESOURCES": "false",
        "ARCHIVER_DAEMON__WORKERS": "1",
        "ARCHIVER_DAEMON__IDLE_POLL_SECONDS": "0.1",
        "ARCHIVER_DAEMON__SYNC_SECONDS": "0.3",
        "ARCHIVER_DAEMON__LEASE_SECONDS": "3",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
        "ARCHIVER_DAEMON__LOG_FORMAT": "json",
    }
    if "media" in Settings.model_fields:
        settings["ARCHIVER_MEDIA__ENABLED"] = "false"
    return settings


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          fixture_site: Any) -> Iterator[World]:
    """One archive per database for every call of the matrix (see the module's
    docstring)."""
    base = tmp_path_factory.mktemp(f"matrix-{request.param}")
    with _database(request, base) as url, pytest.MonkeyPatch.context() as mp:
        running = start_api(url, base / "archive", mp,
                            cast(pytest.CaptureFixture[str], _NoCapture()),
                            _fast_daemon_settings())
        api = next(running)
        try:
            yield _build_world(api, fixture_site, base)
        finally:
            running.close()


class _database:
    """A fresh database for the module: a SQLite file, or a new PostgreSQL schema."""

    def __init__(self, request: pytest.FixtureRequest, base: Path) -> None:
        self.request = request
        self.base = base
        self.schema: str | None = None
        self.engine: sa.Engine | None = None

    def __enter__(self) -> str:
        if self.request.param == "sqlite":
            return f"sqlite:///{self.base / 'archive.db'}"
        reason = self.request.getfixturevalue("postgres_available")
        if reason is not None:
            if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
                pytest.fail(reason)
            pytest.skip(reason)
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.engine = sa.create_engine(POSTGRES_BASE_URL)
        with self.engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        return f"{POSTGRES_BASE_URL}?options=-csearch_path%3D{self.schema}"

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self.engine.dispose()


def _build_world(api: Api, site: Any, base: Path) -> World:
    inv = api.user("inv", cases={CASE_A: "investigator"})
    legal = api.user("legal", cases={CASE_A: "legal"})
    viewer = api.user("viewer", cases={CASE_A: "viewer"})
    auditor = api.user("auditor", "auditor", cases={})
    admin = api.user("admin", "admin", cases={}, mfa=True)
    other = api.user("other", cases={CASE_B: "investigator"})
    both = api.user("both", cases={CASE_A: "investigator", CASE_B: "investigator"})
    gone = api.user("gone", cases={CASE_A: "investigator"})

    # A capture of case A: submitted through the API, captured by the real daemon.
    inv_http = sign_in(api, inv)
    answer = inv_http.post("/api/captures", json={"urls": [site.url("/page.html")],
                                                  "case": CASE_A})
    assert answer.status_code == 202, answer.text
    (job,) = answer.json()["jobs"]
    daemon = Daemon(api.cli.home, base / "daemon.log")
    try:
        wait_until(lambda: inv_http.get(f"/api/jobs/{job['job_id']}").json()["state"]
                   in ("done", "failed"), timeout=90, what="the daemon's capture")
    finally:
        code = daemon.terminate()
        print("daemon log (tail):", daemon.log_text()[-5000:])  # shown when set-up fails
    assert code == 0
    capture = api.archive.get_capture(job["capture_id"])
    assert capture.status == "completed", capture
    assert capture.case == CASE_A

    # A watch of case A, and an export of case A, done.
    answer = inv_http.post("/api/watches", json={"url": site.url("/feeds/a.xml"),
                                                 "case": CASE_A, "kind": "feed"})
    assert answer.status_code == 201, answer.text
    watch = answer.json()["id"]
    legal_http = sign_in(api, legal)
    answer = legal_http.post(f"/api/cases/{quote(CASE_A)}/exports")
    assert answer.status_code == 202, answer.text
    export = answer.json()["export_id"]
    wait_until(lambda: legal_http.get(f"/api/exports/{export}").json()["state"] == "done",
               timeout=60, what="the export")

    def token(person: Person, scope: Scope, cases: list[str] | None = None,
              expires: timedelta | None = None) -> tuple[str, str]:
        view, secret = api.people.create_token(
            person.login, scope=scope, cases=cases,
            expires_in="never" if expires is None else expires)
        return view.id, secret

    # The disabled person: a session and a token that worked, then the account disabled.
    gone_http = sign_in(api, gone)
    assert gone_http.get("/api/me").status_code == 200
    gone_cookie = gone_http.cookies[SESSION_COOKIE]
    gone_token, gone_secret = token(gone, Scope.SUBMIT)
    api.people.disable_user("gone")
    expired_id, expired_secret = token(inv, Scope.SUBMIT, expires=timedelta(minutes=5))
    api.clock.advance(minutes=6)

    api.archive.checkpoint()
    personas: dict[str, Persona] = {ANON: Persona(ANON, api.anonymous())}
    for name, person in ((INV, inv), (LEGAL, legal), (VIEWER, viewer), (AUDITOR, auditor),
                         (ADMIN, admin), (OTHER, other)):
        http = sign_in(api, person)
        personas[name] = Persona(name, http, person, session=session_id(http))
    personas[DIS_S] = Persona(DIS_S, gone_http, gone, pinned_cookie=gone_cookie)
    personas[DIS_T] = Persona(DIS_T, api.anonymous(bearer=gone_secret), gone, gone_token)
    personas[EXPIRED] = Persona(EXPIRED, api.anonymous(bearer=expired_secret), inv,
                                expired_id)
    for name, person, scope, cases in (
            (INV_READ, inv, Scope.READ, None), (INV_SUBMIT, inv, Scope.SUBMIT, None),
            (LEGAL_READ, legal, Scope.READ, None), (LEGAL_EXPORT, legal, Scope.EXPORT, None),
            (B_ONLY, both, Scope.SUBMIT, [CASE_B])):
        token_id, secret = token(person, scope, cases)
        personas[name] = Persona(name, api.anonymous(bearer=secret), person, token_id)
    assert set(personas) == set(PERSONAS)

    (artifact, *_) = capture.artifacts
    assert capture.ledger_seq is not None
    victim = api.user("victim", cases={})
    return World(api=api, site=site, personas=personas,
                 a=Ids(capture=capture.id, artifact=artifact.name, job=int(job["job_id"]),
                       watch=int(watch), export=export, case=CASE_A),
                 seq=capture.ledger_seq, victim=victim.login)


# -- the requests -------------------------------------------------------------------------

Send = Callable[[World, Persona, Ids, bool], httpx.Response]
"""Sends a route's example request as the persona, naming ``ids`` (case A's, or random
ones); ``allowed``: the call is expected to act, so it names fresh resources where the
act consumes them (a watch to remove, a person to disable)."""


def get(path: Callable[[Ids], str], **params: Any) -> Send:
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        return p.http.get(path(ids), params=params or None)
    return send


def post(path: Callable[[Ids], str], body: Any = None) -> Send:
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        return p.http.post(path(ids), json=body)
    return send


def fresh_watch(w: World, *, paused: bool = False) -> int:
    """A new watch of case A (added by A's investigator)."""
    http = w.as_inv()
    answer = http.post("/api/watches", json={
        "url": w.site.url(f"/feeds/{w.fresh('w')}.xml"), "case": CASE_A, "kind": "feed"})
    assert answer.status_code == 201, answer.text
    watch = int(answer.json()["id"])
    if paused:
        assert http.post(f"/api/watches/{watch}/pause").status_code == 200
    return watch


def watch_change(what: str, *, paused: bool = False) -> Send:
    method = "DELETE" if what == "remove" else "POST"

    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        watch = fresh_watch(w, paused=paused) if allowed else ids.watch
        path = f"/api/watches/{watch}" + ("" if what == "remove" else f"/{what}")
        return p.http.request(method, path)
    return send


def submit(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    url = w.site.url(f"/page.html?matrix={w.fresh('s')}")
    return p.http.post("/api/captures", json={"urls": [url], "case": ids.case})


def add_watch(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/api/watches", json={
        "url": w.site.url(f"/feeds/{w.fresh('n')}.xml"), "case": ids.case, "kind": "feed"})


def import_watches(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    url = w.site.url(f"/feeds/{w.fresh('i')}.xml")
    csv = f"url,kind,every,case,pattern\n{url},feed,,,\n"
    return p.http.post("/api/watches/import", params={"case": ids.case},
                       content=csv.encode(), headers={"Content-Type": "text/csv"})


def login(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    """Signing in is public: a fresh client sends the persona's person's credentials
    (anonymous: an unknown login); a bearer token it holds changes nothing."""
    headers = {"Authorization": p.http.headers["Authorization"]} \
        if "Authorization" in p.http.headers else None
    http: httpx.Client = w.api.anonymous(headers=headers)
    if p.person is None:
        return http.post("/api/auth/login", json={"login": "nobody", "password": "x" * 20})
    body: dict[str, Any] = {"login": p.person.login, "password": p.person.password}
    if p.person.totp is not None:
        body["totp"] = p.person.code()
    return http.post("/api/auth/login", json=body)


def logout(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    """Logs out a second session of the person (the persona's own stays signed in)."""
    if not allowed:
        return p.http.post("/api/auth/logout")
    assert p.person is not None
    http = sign_in(w.api, p.person)
    p.acted_as = session_id(http)
    return http.post("/api/auth/logout")


def change_password(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    if p.person is None or not allowed:
        return p.http.post("/api/me/password", json={"old": "x" * 20, "new": "y" * 20})
    new = f"{p.person.login}-another-horse-{w.fresh('p')}"
    answer = p.http.post("/api/me/password", json={"old": p.person.password, "new": new})
    if answer.status_code == 200:
        old_session = p.session
        p.person.password = new
        p.refresh_session(answer)
        p.acted_as = old_session
    return answer


def mfa_confirm(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    """Enrols a second factor for real (begin, then the code of the new secret)."""
    if not allowed or p.person is None or p.person.totp is not None:
        return p.http.post("/api/me/mfa/confirm", json={"code": "123456"})
    begun = p.http.post("/api/me/mfa/begin")
    assert begun.status_code == 200, begun.text
    (secret,) = parse_qs(urlparse(begun.json()["otpauth_uri"]).query)["secret"]
    totp = pyotp.TOTP(secret)
    p.person.totp = totp
    answer = p.http.post("/api/me/mfa/confirm", json={"code": p.person.code()})
    if answer.status_code == 200:
        old_session = p.session
        p.refresh_session(answer)
        p.acted_as = old_session
    else:
        p.person.totp = None
    return answer


def revoke_my_token(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    token_id = "tok_0000000000"
    if allowed and p.person is not None:
        view, _ = w.api.people.create_token(p.person.login, scope=Scope.READ)
        token_id = view.id
    return p.http.delete(f"/api/me/tokens/{token_id}")


def fresh_person(w: World, *, mfa: bool = False, disabled: bool = False,
                 case_role: str | None = None) -> str:
    login = w.fresh("someone")
    w.api.user(login, cases={} if case_role is None else {CASE_A: case_role}, mfa=mfa)
    if disabled:
        w.api.people.disable_user(login)
    return login


def on_person(what: str, *, mfa: bool = False, disabled: bool = False,
              body: Any = None) -> Send:
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        login_ = fresh_person(w, mfa=mfa, disabled=disabled) if allowed else w.victim
        return p.http.post(f"/api/users/{login_}/{what}", json=body)
    return send


def add_user(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/api/users", json={"login": w.fresh("newbie"),
                                           "password": "a-long-enough-passphrase-7"})


def add_case(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/api/cases", json={"name": w.fresh("Case N")})


def grant(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    login_ = fresh_person(w) if allowed else w.victim
    return p.http.put(f"/api/cases/{quote(ids.case)}/members/{login_}",
                      json={"role": "viewer"})


def revoke(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    login_ = fresh_person(w, case_role="viewer") if allowed else "viewer"
    return p.http.delete(f"/api/cases/{quote(ids.case)}/members/{login_}")


def create_token(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/api/tokens", json={"user": w.victim, "scope": "read"})


def revoke_token(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    token_id = "tok_0000000000"
    if allowed:
        view, _ = w.api.people.create_token(w.victim, scope=Scope.READ)
        token_id = view.id
    return p.http.delete(f"/api/tokens/{token_id}")


def export_case(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post(f"/api/cases/{quote(ids.case)}/exports")


# -- the pages' requests ------------------------------------------------------------------

PAGE_SIGNED_OUT: Mapping[str, int] = {ANON: 303, DIS_S: 303, DIS_T: 303, EXPIRED: 303}
"""A page (GET) for nobody signed in, or for refused credentials: 303 to /login."""

SUBMIT_PAGE_RULE: Mapping[str, int] = {**SIGNED_OUT, INV_READ: 403, LEGAL_READ: 403,
                                       LEGAL_EXPORT: 403}
"""The submit form: every session (the unfiled pseudo-case is everyone's own), a token
only with the submit scope."""


def page(rule: Mapping[str, int]) -> Mapping[str, int]:
    """The rule of a page GET: as ``rule``, but signed out is a 303 to the sign-in page."""
    return {**rule, **PAGE_SIGNED_OUT}


def refusal_code(answer: httpx.Response) -> str | None:
    """The error code of a refusal: the JSON's, the HTML page's ``data-error``, or
    ``sign-in`` for the redirect to the sign-in page."""
    if answer.status_code == 303:
        where = answer.headers.get("location", "")
        return "sign-in" if where.startswith("/login?next=") else where
    if answer.headers.get("content-type", "").startswith("text/html"):
        found = re.search(r'data-error="([^"]+)"', answer.text)
        return None if found is None else found.group(1)
    code: str | None = answer.json().get("error", {}).get("code")
    return code


def form(path: Callable[[Ids], str], data: Mapping[str, Any] | None = None) -> Send:
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        return p.http.post(path(ids), data=dict(data or {}))
    return send


def logout_at(path: str) -> Send:
    """Logs out a second session of the person (the persona's own stays signed in)."""
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        if not allowed:
            return p.http.post(path)
        assert p.person is not None
        http = sign_in(w.api, p.person)
        p.acted_as = session_id(http)
        return http.post(path)
    return send


def page_csrf(http: httpx.Client) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', http.get("/me").text)
    assert found is not None
    return found.group(1)


def page_login(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    """The sign-in form, posted by a fresh client with the persona's person's password
    (anonymous: an unknown login); a person with TOTP is sent on to /mfa."""
    http: httpx.Client = w.api.anonymous()
    if p.person is None:
        return http.post("/login", data={"login": "nobody", "password": "x" * 20})
    return http.post("/login", data={"login": p.person.login, "password": p.person.password})


def page_change_password(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    if p.person is None or not allowed:
        return p.http.post("/me/password", data={"old": "x" * 20, "new": "y" * 20})
    new = f"{p.person.login}-another-horse-{w.fresh('p')}"
    answer = p.http.post("/me/password", data={"old": p.person.password, "new": new})
    if answer.status_code == 200:
        old_session = p.session
        p.person.password = new
        p.http.headers[CSRF_HEADER] = page_csrf(p.http)
        p.session = session_id(p.http)
        p.acted_as = old_session
    return answer


def page_revoke_my_token(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    token_id = "tok_0000000000"
    if allowed and p.person is not None:
        view, _ = w.api.people.create_token(p.person.login, scope=Scope.READ)
        token_id = view.id
    return p.http.post(f"/me/tokens/{token_id}/revoke")


def page_submit(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    url = w.site.url(f"/page.html?matrix={w.fresh('s')}")
    return p.http.post("/submit", data={"urls": url, "case": ids.case})


def page_add_watch(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/watches", data={
        "url": w.site.url(f"/feeds/{w.fresh('n')}.xml"), "case": ids.case, "kind": "feed"})


def page_watch_change(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    watch = fresh_watch(w) if allowed else ids.watch
    return p.http.post(f"/watches/{watch}/pause")


def page_import_watches(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    url = w.site.url(f"/feeds/{w.fresh('i')}.xml")
    csv = f"url,kind,every,case,pattern\n{url},feed,,,\n"
    return p.http.post("/watches/import", data={"case": ids.case},
                       files={"watchlist": ("list.csv", csv.encode(), "text/csv")})


def on_person_page(what: str) -> Send:
    def send(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
        login_ = fresh_person(w) if allowed else w.victim
        return p.http.post(f"/admin/users/{login_}/{what}")
    return send


def page_add_person(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/admin/users", data={"login": w.fresh("pagenewbie"),
                                             "password": "a-long-enough-passphrase-7"})


def page_add_case(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    return p.http.post("/admin/cases", data={"name": w.fresh("Page case")})


def page_grant(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    login_ = fresh_person(w) if allowed else w.victim
    return p.http.post(f"/admin/cases/{quote(ids.case)}/members",
                       data={"login": login_, "role": "viewer"})


def page_revoke(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    login_ = fresh_person(w, case_role="viewer") if allowed else "viewer"
    return p.http.post(f"/admin/cases/{quote(ids.case)}/members/{login_}/revoke")


def page_revoke_token(w: World, p: Persona, ids: Ids, allowed: bool) -> httpx.Response:
    token_id = "tok_0000000000"
    if allowed:
        view, _ = w.api.people.create_token(w.victim, scope=Scope.READ)
        token_id = view.id
    return p.http.post(f"/admin/tokens/{token_id}/revoke")


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A route's example request; who may make it (``allowed``) and with what answer
    (``status``; ``statuses`` per persona); the rule for everyone else (``rule``, with
    ``denials`` per persona); the ledger action an allowed call adds (``ledger``)."""

    method: str
    path: str
    allowed: frozenset[str]
    rule: Mapping[str, int]
    send: Send
    status: int = 200
    statuses: Mapping[str, int] = field(default_factory=dict)
    denials: Mapping[str, int] = field(default_factory=dict)
    ledger: str | None = None

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def expected(self, persona: str) -> int:
        if persona in self.allowed:
            return self.statuses.get(persona, self.status)
        if persona in self.denials:
            return self.denials[persona]
        assert persona in self.rule, f"{self.key}: no rule for {persona}"
        return self.rule[persona]


def _c(ids: Ids) -> str:
    return f"/api/captures/{ids.capture}"


_SCOPE_SHORT_FOR_B_ONLY = {B_ONLY: 403}  # a submit token asked to export or read exports

ROWS: tuple[Row, ...] = (
    # public
    Row("GET", "/healthz", EVERYONE, PUBLIC_RULE, get(lambda i: "/healthz")),
    Row("GET", "/api/openapi.json", EVERYONE, PUBLIC_RULE, get(lambda i: "/api/openapi.json")),
    Row("GET", "/assets/{name:path}", EVERYONE, PUBLIC_RULE,
        get(lambda i: "/assets/htmx.min.js")),
    Row("POST", "/api/auth/login", EVERYONE, PUBLIC_RULE, login,
        statuses={ANON: 401, DIS_S: 401, DIS_T: 401}, ledger="auth.login"),
    # about oneself
    Row("GET", "/api/me", SIGNED_IN, SELF_RULE, get(lambda i: "/api/me")),
    Row("GET", "/api/cases", SIGNED_IN, SELF_RULE, get(lambda i: "/api/cases")),
    Row("POST", "/api/auth/mfa", SESSIONS, SELF_RULE,
        post(lambda i: "/api/auth/mfa", {"code": "123456"}), status=409),
    Row("POST", "/api/auth/logout", SESSIONS, SELF_RULE, logout, ledger="auth.logout"),
    Row("POST", "/api/me/password", SESSIONS, SELF_RULE, change_password,
        ledger="user.password_reset"),
    Row("GET", "/api/me/tokens", SESSIONS, SELF_RULE, get(lambda i: "/api/me/tokens")),
    Row("POST", "/api/me/tokens", SESSIONS, SELF_RULE,
        post(lambda i: "/api/me/tokens", {"scope": "read"}), status=201,
        ledger="token.created"),
    Row("DELETE", "/api/me/tokens/{token_id}", SESSIONS, SELF_RULE, revoke_my_token,
        ledger="token.revoked"),
    # (the admin enrolled at creation: a second enrolment is refused)
    Row("POST", "/api/me/mfa/begin", SESSIONS, SELF_RULE, post(lambda i: "/api/me/mfa/begin"),
        statuses={ADMIN: 400}),
    Row("POST", "/api/me/mfa/confirm", SESSIONS, SELF_RULE, mfa_confirm,
        statuses={ADMIN: 400}, ledger="auth.mfa_enrolled"),
    # evidence of case A
    Row("POST", "/api/captures", A_SUBMITTERS, CASE_RULE, submit, status=202,
        ledger="capture.queued"),
    Row("GET", "/api/captures", A_READERS, CASE_LIST_RULE,
        lambda w, p, i, a: p.http.get("/api/captures", params={"case": i.case})),
    Row("GET", "/api/captures/{capture_id}", A_READERS, CASE_RULE, get(_c),
        ledger="access.viewed"),
    Row("POST", "/api/captures/{capture_id}/verify", A_READERS | {AUDITOR}, CASE_RULE,
        post(lambda i: _c(i) + "/verify")),
    Row("GET", "/api/captures/{capture_id}/similar", A_READERS, CASE_RULE,
        get(lambda i: _c(i) + "/similar")),
    Row("GET", "/api/captures/{capture_id}/artifacts/{name:path}", A_READERS, CASE_RULE,
        get(lambda i: f"{_c(i)}/artifacts/{i.artifact}"), ledger="access.downloaded"),
    Row("GET", "/api/jobs/{job_id}", A_READERS, CASE_RULE, get(lambda i: f"/api/jobs/{i.job}")),
    Row("GET", "/api/jobs", A_READERS, CASE_LIST_RULE,
        lambda w, p, i, a: p.http.get("/api/jobs", params={"case": i.case})),
    Row("GET", "/api/takedowns", A_READERS, CASE_LIST_RULE,
        lambda w, p, i, a: p.http.get("/api/takedowns", params={"case": i.case})),
    Row("GET", "/api/status", SIGNED_IN, ARCHIVE_RULE, get(lambda i: "/api/status")),
    # watches of case A
    Row("GET", "/api/watches", A_READERS, CASE_LIST_RULE,
        lambda w, p, i, a: p.http.get("/api/watches", params={"case": i.case})),
    Row("GET", "/api/watches/{watch_id}", A_READERS, CASE_RULE,
        get(lambda i: f"/api/watches/{i.watch}")),
    Row("POST", "/api/watches", A_SUBMITTERS, CASE_RULE, add_watch, status=201,
        ledger="watch.added"),
    Row("POST", "/api/watches/{watch_id}/pause", A_SUBMITTERS, CASE_RULE,
        watch_change("pause"), ledger="watch.paused"),
    Row("POST", "/api/watches/{watch_id}/resume", A_SUBMITTERS, CASE_RULE,
        watch_change("resume", paused=True), ledger="watch.resumed"),
    Row("DELETE", "/api/watches/{watch_id}", A_SUBMITTERS, CASE_RULE, watch_change("remove"),
        ledger="watch.removed"),
    Row("POST", "/api/watches/import", A_SUBMITTERS, CASE_RULE, import_watches,
        ledger="watch.added"),
    # exports of case A
    Row("POST", "/api/cases/{name}/exports", A_EXPORTERS, CASE_RULE, export_case,
        status=202, denials=_SCOPE_SHORT_FOR_B_ONLY, ledger="export.requested"),
    Row("GET", "/api/cases/{name}/exports", A_EXPORTERS, CASE_RULE,
        get(lambda i: f"/api/cases/{quote(i.case)}/exports"), denials=_SCOPE_SHORT_FOR_B_ONLY),
    Row("GET", "/api/exports/{export_id}", A_EXPORTERS, CASE_RULE,
        get(lambda i: f"/api/exports/{i.export}"), denials=_SCOPE_SHORT_FOR_B_ONLY),
    Row("GET", "/api/exports/{export_id}/bundle", A_EXPORTERS, CASE_RULE,
        get(lambda i: f"/api/exports/{i.export}/bundle"), denials=_SCOPE_SHORT_FOR_B_ONLY,
        ledger="access.downloaded"),
    # the ledger
    Row("GET", "/api/ledger/checkpoint", SIGNED_IN, ARCHIVE_RULE,
        get(lambda i: "/api/ledger/checkpoint")),
    Row("GET", "/api/keys", SIGNED_IN, ARCHIVE_RULE, get(lambda i: "/api/keys")),
    Row("GET", "/api/ledger/entries", frozenset({AUDITOR}), ARCHIVE_RULE,
        get(lambda i: "/api/ledger/entries")),
    Row("GET", "/api/ledger/entries/{seq}", frozenset({AUDITOR}), ARCHIVE_RULE,
        lambda w, p, i, a: p.http.get(f"/api/ledger/entries/{w.seq}")),
    Row("GET", "/api/ledger/proof/{seq}", frozenset({AUDITOR}), ARCHIVE_RULE,
        lambda w, p, i, a: p.http.get(f"/api/ledger/proof/{w.seq}")),
    Row("POST", "/api/ledger/verify", frozenset({AUDITOR}), ARCHIVE_RULE,
        post(lambda i: "/api/ledger/verify"), ledger="ledger.verified"),
    Row("GET", "/api/users/{login}/activity", frozenset({AUDITOR}), ARCHIVE_RULE,
        get(lambda i: "/api/users/inv/activity")),
    # administration
    Row("GET", "/api/users", frozenset({ADMIN}), ARCHIVE_RULE, get(lambda i: "/api/users")),
    Row("POST", "/api/users", frozenset({ADMIN}), ARCHIVE_RULE, add_user, status=201,
        ledger="user.created"),
    Row("GET", "/api/users/{login}", frozenset({ADMIN}), ARCHIVE_RULE,
        get(lambda i: "/api/users/inv")),
    Row("POST", "/api/users/{login}/disable", frozenset({ADMIN}), ARCHIVE_RULE,
        on_person("disable"), ledger="user.disabled"),
    Row("POST", "/api/users/{login}/enable", frozenset({ADMIN}), ARCHIVE_RULE,
        on_person("enable", disabled=True), ledger="user.enabled"),
    Row("POST", "/api/users/{login}/reset-password", frozenset({ADMIN}), ARCHIVE_RULE,
        on_person("reset-password", body={"password": "a-new-long-passphrase-8"}),
        ledger="user.password_reset"),
    Row("POST", "/api/users/{login}/mfa-reset", frozenset({ADMIN}), ARCHIVE_RULE,
        on_person("mfa-reset", mfa=True), ledger="user.mfa_reset"),
    Row("POST", "/api/cases", frozenset({ADMIN}), ARCHIVE_RULE, add_case, status=201,
        ledger="case.created"),
    Row("GET", "/api/cases/{name}/members", frozenset({ADMIN}), ARCHIVE_RULE,
        get(lambda i: f"/api/cases/{quote(i.case)}/members")),
    Row("PUT", "/api/cases/{name}/members/{login}", frozenset({ADMIN}), ARCHIVE_RULE, grant,
        ledger="role.granted"),
    Row("DELETE", "/api/cases/{name}/members/{login}", frozenset({ADMIN}), ARCHIVE_RULE,
        revoke, ledger="role.revoked"),
    Row("GET", "/api/tokens", frozenset({ADMIN}), ARCHIVE_RULE, get(lambda i: "/api/tokens")),
    Row("POST", "/api/tokens", frozenset({ADMIN}), ARCHIVE_RULE, create_token, status=201,
        ledger="token.created"),
    Row("DELETE", "/api/tokens/{token_id}", frozenset({ADMIN}), ARCHIVE_RULE, revoke_token,
        ledger="token.revoked"),
    # -- the pages (archiver.web.pages): the same actions; nobody signed in is sent to
    # the sign-in page (303) from a GET, refusals are HTML pages with the same codes
    Row("GET", "/static/{name}", EVERYONE, PUBLIC_RULE, get(lambda i: "/static/app.js")),
    Row("GET", "/login", EVERYONE, PUBLIC_RULE, get(lambda i: "/login")),
    Row("POST", "/login", EVERYONE, PUBLIC_RULE, page_login, status=303,
        statuses={ANON: 401, DIS_S: 401, DIS_T: 401}, ledger="auth.login"),
    Row("GET", "/", SIGNED_IN, page(SELF_RULE), get(lambda i: "/"), status=303),
    Row("GET", "/me", SIGNED_IN, page(SELF_RULE), get(lambda i: "/me")),
    Row("GET", "/cases", SIGNED_IN, page(SELF_RULE), get(lambda i: "/cases")),
    # (every session passed or enrolled its second factor by now: /mfa sends it on, a
    # code or a second enrolment is refused)
    Row("GET", "/mfa", SESSIONS, page(SELF_RULE), get(lambda i: "/mfa"), status=303),
    Row("POST", "/mfa", SESSIONS, SELF_RULE, form(lambda i: "/mfa", {"code": "123456"}),
        status=409),
    Row("POST", "/mfa/enrol", SESSIONS, SELF_RULE, form(lambda i: "/mfa/enrol"), status=400),
    Row("POST", "/mfa/confirm", SESSIONS, SELF_RULE,
        form(lambda i: "/mfa/confirm", {"code": "123456"}), status=400),
    Row("POST", "/logout", SESSIONS, SELF_RULE, logout_at("/logout"), ledger="auth.logout"),
    Row("POST", "/me/password", SESSIONS, SELF_RULE, page_change_password,
        ledger="user.password_reset"),
    Row("GET", "/me/tokens", SESSIONS, page(SELF_RULE), get(lambda i: "/me/tokens")),
    Row("POST", "/me/tokens", SESSIONS, SELF_RULE,
        form(lambda i: "/me/tokens", {"scope": "read"}), ledger="token.created"),
    Row("POST", "/me/tokens/{token_id}/revoke", SESSIONS, SELF_RULE, page_revoke_my_token,
        ledger="token.revoked"),
    Row("GET", "/cases/{name}", A_READERS, page(CASE_LIST_RULE),
        get(lambda i: f"/cases/{quote(i.case)}")),
    Row("GET", "/submit", SESSIONS | {INV_SUBMIT, B_ONLY}, page(SUBMIT_PAGE_RULE),
        get(lambda i: "/submit")),
    Row("POST", "/submit", A_SUBMITTERS, CASE_RULE, page_submit, ledger="capture.queued"),
    Row("GET", "/submit/jobs", A_READERS, page(CASE_RULE),
        lambda w, p, i, a: p.http.get("/submit/jobs", params={"ids": str(i.job)})),
    Row("GET", "/captures/{capture_id}", A_READERS, page(CASE_RULE),
        get(lambda i: f"/captures/{i.capture}"), ledger="access.viewed"),
    Row("GET", "/captures/{capture_id}/custody", A_READERS, page(CASE_RULE),
        get(lambda i: f"/captures/{i.capture}/custody")),
    Row("POST", "/captures/{capture_id}/verify", A_READERS | {AUDITOR}, CASE_RULE,
        form(lambda i: f"/captures/{i.capture}/verify")),
    Row("GET", "/watches", A_READERS, page(CASE_LIST_RULE),
        lambda w, p, i, a: p.http.get("/watches", params={"case": i.case})),
    Row("POST", "/watches", A_SUBMITTERS, CASE_RULE, page_add_watch, ledger="watch.added"),
    Row("POST", "/watches/{watch_id}/{what}", A_SUBMITTERS, CASE_RULE, page_watch_change,
        ledger="watch.paused"),
    Row("POST", "/watches/import", A_SUBMITTERS, CASE_RULE, page_import_watches,
        ledger="watch.added"),
    Row("GET", "/takedowns", A_READERS, page(CASE_LIST_RULE),
        lambda w, p, i, a: p.http.get("/takedowns", params={"case": i.case})),
    Row("GET", "/cases/{name}/exports", A_EXPORTERS, page(CASE_RULE),
        get(lambda i: f"/cases/{quote(i.case)}/exports"), denials=_SCOPE_SHORT_FOR_B_ONLY),
    Row("POST", "/cases/{name}/exports", A_EXPORTERS, CASE_RULE,
        form(lambda i: f"/cases/{quote(i.case)}/exports"), denials=_SCOPE_SHORT_FOR_B_ONLY,
        ledger="export.requested"),
    Row("GET", "/exports/{export_id}", A_EXPORTERS, page(CASE_RULE),
        get(lambda i: f"/exports/{i.export}"), denials=_SCOPE_SHORT_FOR_B_ONLY),
    Row("GET", "/admin", frozenset({ADMIN}), page(ARCHIVE_RULE), get(lambda i: "/admin")),
    Row("POST", "/admin/users", frozenset({ADMIN}), ARCHIVE_RULE, page_add_person,
        ledger="user.created"),
    Row("POST", "/admin/cases", frozenset({ADMIN}), ARCHIVE_RULE, page_add_case,
        ledger="case.created"),
    Row("GET", "/admin/users/{login}", frozenset({ADMIN}), page(ARCHIVE_RULE),
        get(lambda i: "/admin/users/inv")),
    Row("GET", "/admin/users/{login}/activity", frozenset({ADMIN}), page(ARCHIVE_RULE),
        get(lambda i: "/admin/users/inv/activity")),
    Row("POST", "/admin/users/{login}/{what}", frozenset({ADMIN}), ARCHIVE_RULE,
        on_person_page("disable"), ledger="user.disabled"),
    Row("GET", "/admin/cases", frozenset({ADMIN}), page(ARCHIVE_RULE),
        get(lambda i: "/admin/cases")),
    Row("GET", "/admin/cases/{name}", frozenset({ADMIN}), page(ARCHIVE_RULE),
        get(lambda i: f"/admin/cases/{quote(i.case)}")),
    Row("POST", "/admin/cases/{name}/members", frozenset({ADMIN}), ARCHIVE_RULE, page_grant,
        ledger="role.granted"),
    Row("POST", "/admin/cases/{name}/members/{login}/revoke", frozenset({ADMIN}),
        ARCHIVE_RULE, page_revoke, ledger="role.revoked"),
    Row("GET", "/admin/tokens", frozenset({ADMIN}), page(ARCHIVE_RULE),
        get(lambda i: "/admin/tokens")),
    Row("POST", "/admin/tokens/{token_id}/revoke", frozenset({ADMIN}), ARCHIVE_RULE,
        page_revoke_token, ledger="token.revoked"),
    Row("GET", "/audit", frozenset({AUDITOR}), page(ARCHIVE_RULE), get(lambda i: "/audit")),
    Row("POST", "/audit/verify", frozenset({AUDITOR}), ARCHIVE_RULE,
        form(lambda i: "/audit/verify"), ledger="ledger.verified"),
    Row("GET", "/audit/people", frozenset({AUDITOR}), page(ARCHIVE_RULE),
        lambda w, p, i, a: p.http.get("/audit/people", params={"login": "inv"}), status=303),
    Row("GET", "/audit/people/{login}", frozenset({AUDITOR}), page(ARCHIVE_RULE),
        get(lambda i: "/audit/people/inv")),
)


# -- 1. the route table -------------------------------------------------------------------


def undeclared(app: FastAPI) -> list[str]:
    """The routes not registered through :func:`archiver.web.gate.route`: not an
    ``APIRoute``, or an endpoint without a declared action, or no ``_enforce`` in front."""
    found = []
    for r in app.routes:
        if not isinstance(r, APIRoute):
            found.append(f"{getattr(r, 'path', r)!s} (not an API route)")
            continue
        name = f"{','.join(sorted(r.methods or ()))} {r.path}"
        if not isinstance(getattr(r.endpoint, "__action__", None), Action):
            found.append(f"{name} (declares no action)")
        elif not any(d.call is gate_module._enforce for d in r.dependant.dependencies):
            found.append(f"{name} (the gate does not run in front of it)")
    return found


def unexamined(app: FastAPI) -> list[str]:
    """The routes of the app that have no row in the matrix."""
    rows = {row.key for row in ROWS}
    served: list[str] = []
    for r in app.routes:
        methods = sorted(getattr(r, "methods", None) or ["?"])
        served.extend(f"{m} {getattr(r, 'path', r)}" for m in methods)
    return [key for key in served if key not in rows]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Iterator[FastAPI]:
    """The real app over a fresh archive (built, not served)."""
    from archive_cli import Cli, archive_environment

    from archiver.people.webkey import web_secret

    archive_environment(monkeypatch, tmp_path / "archive", f"sqlite:///{tmp_path / 'a.db'}")
    Cli(tmp_path / "archive", capsys).ok("init")
    archive = Archive.open(load_settings())
    try:
        yield create_app(archive, secret=web_secret(archive.settings))
    finally:
        archive.close()


def test_every_route_declares_its_action_and_has_a_row_in_the_matrix(app: FastAPI) -> None:
    """The real route table: every route is the gate's and is examined below; no row of
    the matrix names a route the app does not serve."""
    assert undeclared(app) == []
    assert unexamined(app) == []
    served = {f"{m} {r.path}" for r in app.routes if isinstance(r, APIRoute)
              for m in r.methods or ()}
    assert sorted(row.key for row in ROWS if row.key not in served) == []
    assert len({row.key for row in ROWS}) == len(ROWS)


def test_a_route_added_around_the_gate_or_the_matrix_is_named(app: FastAPI) -> None:
    """The checks can fail: a bare route added to the app is named by both; a route made
    through the gate but left out of the matrix is named as unexamined."""

    def bare() -> dict[str, str]:
        return {}

    app.router.add_api_route("/api/bare", bare, methods=["GET"])
    router = APIRouter()

    @gate_module.route(router, "GET", "/api/unlisted", action=Action.STATUS_VIEW)
    def unlisted() -> dict[str, str]:
        return {}

    app.router.routes.extend(router.routes)
    assert undeclared(app) == ["GET /api/bare (declares no action)"]
    assert unexamined(app) == ["GET /api/bare", "GET /api/unlisted"]


# -- 2. the matrix ------------------------------------------------------------------------


def _check_ledger(w: World, row: Row, p: Persona, before: int, status: int,
                  expected: int, allowed: bool) -> list[str]:
    if row.ledger is None:
        return []
    new = entries_after(w.api, before)
    acts = [e for e in new if e.action == row.ledger]
    # (a page's success may be a 303: the sign-in form sends the browser on)
    if not (allowed and status == expected and (200 <= status < 300 or status == 303)):
        mine = [e for e in acts if p.person is not None and e.actor == p.actor]
        return [f"{row.key} as {p.name}: refused ({status}) yet the ledger gained "
                f"{[(e.action, e.actor) for e in mine]}"] if mine else []
    if not acts:
        return [f"{row.key} as {p.name}: no {row.ledger} entry (new: "
                f"{[(e.action, e.actor) for e in new]})"]
    entry = acts[-1]
    problems = []
    if entry.actor != p.actor:
        problems.append(f"{row.key} as {p.name}: {row.ledger} names {entry.actor}, "
                        f"not {p.actor}")
    context = entry.payload.get("context") or {}
    wanted: tuple[str, str | None] = ("token", p.token_id) if p.token_id is not None \
        else ("session", p.acted_as or p.session)
    # a login names the session it opens (a new one: any session will do)
    ok = "session" in context if row.ledger == "auth.login" \
        else context.get(wanted[0]) == wanted[1]
    if not ok:
        problems.append(f"{row.key} as {p.name}: {row.ledger} context {context} does not "
                        f"name {wanted[0]} {wanted[1]}")
    return problems


def test_every_route_answers_every_persona_exactly(world: World) -> None:
    """EVERY route x persona: the exact status; each allowed act on the ledger with the
    person and the token or session; no refused act on it."""
    problems: list[str] = []
    calls = 0
    for row in ROWS:
        for name in PERSONAS:
            p = world.personas[name]
            p.acted_as = None
            if p.pinned_cookie is not None:  # the cookie is cleared at its first refusal
                p.http.cookies.set(SESSION_COOKIE, p.pinned_cookie)
            expected = row.expected(name)
            allowed = name in row.allowed
            before = last_seq(world.api)
            answer = row.send(world, p, world.a, allowed)
            calls += 1
            if answer.status_code != expected:
                problems.append(f"{row.key} as {name}: expected {expected}, got "
                                f"{answer.status_code} {answer.text[:200]}")
                continue
            if not allowed:
                code = refusal_code(answer)
                wanted = {401: REFUSAL_CODES.get(name), 403: "forbidden",
                          404: "not-found", 303: "sign-in"}[expected]
                if code != wanted:
                    problems.append(f"{row.key} as {name}: {expected} with code {code!r}, "
                                    f"not {wanted!r}: {answer.text[:200]}")
            problems += _check_ledger(world, row, p, before, answer.status_code, expected,
                                      allowed)
    assert calls == len(ROWS) * len(PERSONAS)
    assert problems == [], "\n".join(problems)


def test_allowed_reads_show_case_a(world: World) -> None:
    """The allowed lists and pages hold case A's capture, job, watch and export (an
    empty 200 would pass the status check and show nothing)."""
    w = world
    for name in (INV, VIEWER, LEGAL_READ):
        http = w.personas[name].http
        items = http.get("/api/captures", params={"case": CASE_A}).json()["items"]
        assert w.a.capture in {i["id"] for i in items}, name
        jobs = http.get("/api/jobs", params={"case": CASE_A}).json()["items"]
        assert w.a.job in {j["id"] for j in jobs}, name
        watches = http.get("/api/watches", params={"case": CASE_A}).json()["items"]
        assert w.a.watch in {x["id"] for x in watches}, name
    exports = w.personas[LEGAL].http.get(f"/api/cases/{quote(CASE_A)}/exports").json()
    assert w.a.export in {e["export_id"] for e in exports["items"]}
    verified = w.personas[AUDITOR].http.post(f"/api/captures/{w.a.capture}/verify").json()
    assert verified["ok"] is True, verified
    # the unfiltered lists of people outside A hold nothing of A's
    for name in (OTHER, ADMIN, AUDITOR, B_ONLY):
        http = w.personas[name].http
        ids = {i["id"] for i in http.get("/api/captures").json()["items"]}
        assert w.a.capture not in ids, name


# -- 3. a non-member's 404 is the 404 of nothing -------------------------------------------


def test_a_non_members_404_is_byte_identical_to_a_random_ids(world: World) -> None:
    """For every request about case A that a non-member is answered 404, the answer is
    the same status, type and bytes as for a random id (or case name) of that kind."""
    compared = 0
    for row in ROWS:
        for name in (OTHER, ADMIN, B_ONLY):
            if row.expected(name) != 404:
                continue
            p = world.personas[name]
            for_a = row.send(world, p, world.a, False)
            for_random = row.send(world, p, random_ids(), False)
            assert for_a.status_code == 404, (row.key, name, for_a.text)
            assert (for_random.status_code, for_random.headers.get("content-type"),
                    for_random.content) == (
                404, for_a.headers.get("content-type"), for_a.content), (row.key, name)
            compared += 1
    assert compared >= 40, compared
