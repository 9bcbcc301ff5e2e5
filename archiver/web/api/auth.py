"""Signing in and out, and what a person manages about themselves.

``POST /api/auth/login`` opens a session (cookie ``ea_session``, see
:mod:`archiver.web.auth`) and answers the CSRF token the client sends back in
``X-CSRF-Token`` on every state-changing request. A person with a second factor gives
its code in the login (``totp``) or right after it (``POST /api/auth/mfa``); a person
who must have one and has none enrols it (``/api/me/mfa/begin`` and ``/confirm``)
before anything else. Each step that raises what a session may do opens a new session
(new cookie, new CSRF token): a session id seen before the step is worth nothing after.

Admins' management of other people's accounts, memberships and tokens is elsewhere
(:mod:`archiver.web.api.admin`); these routes are about the signed-in person only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from archiver import models
from archiver.archive import Archive
from archiver.people.access import Action, Principal, Scope
from archiver.people.accounts import NEVER, UNFILED, TokenView, UserView
from archiver.people.errors import LoginRefused, UnknownToken
from archiver.web.auth import (
    SESSION_COOKIE,
    Session,
    Sessions,
    clear_session_cookie,
    client_address,
    people_for,
    rate_limited,
    session_hash,
    session_id,
    set_session_cookie,
)
from archiver.web.errors import ApiError, forbidden, not_found
from archiver.web.gate import GateDep, route
from archiver.web.pagination import Cursor, Limit, Page

router = APIRouter(tags=["auth"])

_SECRET = Field(min_length=1, max_length=1024)
_CODE = Field(min_length=1, max_length=16)


# -- bodies and answers -----------------------------------------------------------------------


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    login: str = Field(min_length=1, max_length=200)
    password: str = _SECRET
    totp: str | None = Field(default=None, min_length=1, max_length=16)


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = _CODE


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old: str = _SECRET
    new: str = _SECRET


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope = Scope.READ
    cases: list[str] | None = Field(default=None, max_length=100)
    expires_days: int | Literal["never"] | None = Field(default=None)
    label: str | None = Field(default=None, max_length=200)


class UserOut(BaseModel):
    id: int
    login: str
    display_name: str
    archive_role: str | None
    mfa_enrolled: bool
    mfa_required: bool


class SessionOut(BaseModel):
    """The answer of a step that opens a session."""

    user: UserOut
    csrf_token: str
    mfa_pending: bool
    """True: only the second-factor routes (or enrolment) answer until it is passed."""


class CaseRoleOut(BaseModel):
    case: str
    role: str


class TokenGrantOut(BaseModel):
    id: str
    scope: str
    cases: list[str] | None


class MfaOut(BaseModel):
    enrolled: bool
    required: bool
    pending: bool


class MeOut(BaseModel):
    user: UserOut
    cases: list[CaseRoleOut]
    mfa: MfaOut
    token: TokenGrantOut | None
    """The token this request came with (never its secret)."""
    session: str | None
    """The public id of the session this request came with."""


class OtpauthOut(BaseModel):
    otpauth_uri: str


class TokenOut(BaseModel):
    id: str
    label: str | None
    scope: str
    cases: list[str] | None
    created: str
    expires: str | None
    revoked: str | None
    last_used: str | None
    state: Literal["active", "expired", "revoked"]


class NewTokenOut(BaseModel):
    token: TokenOut
    secret: str
    """Shown this once: the archive keeps only its SHA-256."""


class TokenPage(Page):
    items: list[TokenOut]


class Done(BaseModel):
    ok: bool = True


# -- helpers --------------------------------------------------------------------------------


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _user_out(view: UserView) -> UserOut:
    return UserOut(id=view.id, login=view.login, display_name=view.display_name,
                   archive_role=None if view.archive_role is None else view.archive_role.value,
                   mfa_enrolled=view.mfa_enrolled, mfa_required=view.mfa_required)


def _session(request: Request) -> Session:
    """The session of the request (SELF_MANAGE refuses tokens before a route runs)."""
    session: Session | None = getattr(request.state, "session", None)
    if session is None:  # pragma: no cover - decide() refuses tokens these actions
        raise forbidden("this needs a signed-in session")
    return session


def _opened(request: Request, view: UserView, *, mfa_pending: bool,
            cookie: str | None = None) -> JSONResponse:
    """Open a new session of ``view`` (dropping the request's own), answer it."""
    new = Sessions(_archive(request)).open(
        view.id, mfa_passed=not mfa_pending, client=client_address(request),
        replacing=request.cookies.get(SESSION_COOKIE), cookie=cookie)
    body = SessionOut(user=_user_out(view), csrf_token=new.csrf, mfa_pending=mfa_pending)
    response = JSONResponse(body.model_dump())
    set_session_cookie(response, request, new.cookie)
    return response


def _refused(exc: LoginRefused) -> ApiError:
    if exc.reason == "rate-limited":
        return rate_limited(str(exc))
    return ApiError(401, "login-failed", str(exc))


def _token_out(view: TokenView, now: Any) -> TokenOut:
    state = view.state(now)
    return TokenOut(id=view.id, label=view.label, scope=view.scope.value,
                    cases=None if view.cases is None else list(view.cases),
                    created=view.created, expires=view.expires, revoked=view.revoked,
                    last_used=view.last_used,
                    state=state)  # type: ignore[arg-type]


# -- signing in and out ---------------------------------------------------------------------


@route(router, "POST", "/api/auth/login", action=Action.LOGIN, response_model=SessionOut,
       responses={401: {"description": "wrong login name or password (the same answer "
                                       "for an unknown login)"},
                  429: {"description": "too many failed attempts from this address"}})
def login(body: LoginBody, request: Request) -> JSONResponse:
    """Sign in with a login name and password (and the TOTP code, if the person enrolled
    one and has it at hand; else ``mfa_pending`` and ``POST /api/auth/mfa``). Sets the
    session cookie; answers the CSRF token. Ledger ``auth.login`` (or ``auth.failed``
    with the reason), naming the session the login opens."""
    cookie = Sessions.new_cookie()
    people = people_for(request, session=session_id(session_hash(cookie)))
    try:
        view = people.login(body.login, body.password, client=client_address(request),
                            totp=body.totp, defer_totp=True)
    except LoginRefused as exc:
        raise _refused(exc) from None
    pending = (view.mfa_enrolled and body.totp is None) or (
        view.mfa_required and not view.mfa_enrolled)
    return _opened(request, view, mfa_pending=pending, cookie=cookie)


@route(router, "POST", "/api/auth/mfa", action=Action.SELF_MANAGE, response_model=SessionOut)
def second_factor(body: CodeBody, request: Request, gate: GateDep) -> JSONResponse:
    """The second step of a login: the current code of the person's authenticator app.
    Opens a new session with the second factor passed. Ledger ``auth.mfa_passed`` (or
    ``auth.failed`` ``wrong-totp``; repeated failures lock the account like wrong
    passwords)."""
    session = _session(request)
    people = people_for(request, gate.person)
    view = people.get_user_by_id(session.user_id)
    if not view.mfa_enrolled:
        raise ApiError(409, "mfa-not-enrolled", "you have no second factor yet: enrol one "
                                                "(POST /api/me/mfa/begin)")
    if not session.restricted:
        raise ApiError(409, "mfa-passed", "this session passed its second factor already")
    try:
        view = people.second_factor(session.user_id, body.code,
                                    client=client_address(request))
    except LoginRefused as exc:
        raise _refused(exc) from None
    return _opened(request, view, mfa_pending=False)


@route(router, "POST", "/api/auth/logout", action=Action.SELF_MANAGE, response_model=Done)
def logout(request: Request, gate: GateDep) -> JSONResponse:
    """End this session (the cookie is cleared). Ledger ``auth.logout``."""
    session = _session(request)
    archive = _archive(request)
    archive.ledger.signing_key()  # before the row goes: no change unrecorded
    with archive.engine.begin() as conn:
        conn.execute(sa.delete(models.web_sessions)
                     .where(models.web_sessions.c.sha256 == session.hashed))
        archive.ledger.append(actor=gate.actor, action="auth.logout",
                              subject=f"user:{gate.person.login}",
                              payload={"context": gate.context()}, connection=conn)
    response = JSONResponse(Done().model_dump())
    clear_session_cookie(response, request)
    return response


# -- about oneself --------------------------------------------------------------------------


def _case_names(archive: Archive, ids: list[int]) -> dict[int, str]:
    names = {models.UNFILED_CASE_ID: UNFILED}
    wanted = [i for i in ids if i != models.UNFILED_CASE_ID]
    if wanted:
        c = models.cases
        with archive.reader.connect() as conn:
            for row in conn.execute(sa.select(c.c.id, c.c.name).where(c.c.id.in_(wanted))):
                names[int(row.id)] = str(row.name)
    return names


def _my_cases(archive: Archive, person: Principal) -> list[CaseRoleOut]:
    """The person's cases and roles, within the limits of the token used."""
    ids = sorted(person.case_roles)
    names = _case_names(archive, ids)
    out = []
    for case_id in ids:
        role = person.role_on(case_id)
        if role is not None and case_id in names:
            out.append(CaseRoleOut(case=names[case_id], role=role.value))
    return sorted(out, key=lambda c: c.case)


@route(router, "GET", "/api/me", action=Action.SELF_VIEW, response_model=MeOut)
def me(request: Request, gate: GateDep) -> MeOut:
    """Who is signed in: login, display name, archive role, cases with roles, the state
    of the second factor, and the token or session this request came with."""
    person = gate.person
    archive = _archive(request)
    view = people_for(request, person).get_user_by_id(person.user_id)
    session: Session | None = getattr(request.state, "session", None)
    token = None
    if person.token is not None:
        limited = person.token.case_ids
        token = TokenGrantOut(
            id=person.token.id, scope=person.token.scope.value,
            cases=None if limited is None else sorted(
                _case_names(archive, sorted(limited)).get(i, f"#{i}") for i in limited))
    return MeOut(
        user=_user_out(view), cases=_my_cases(archive, person),
        mfa=MfaOut(enrolled=view.mfa_enrolled, required=view.mfa_required,
                   pending=session is not None and session.restricted),
        token=token, session=person.session_id)


@route(router, "POST", "/api/me/password", action=Action.SELF_MANAGE,
       response_model=SessionOut)
def change_password(body: PasswordBody, request: Request, gate: GateDep) -> JSONResponse:
    """Change one's own password, proving the old one. Every session of the person ends;
    this one is replaced by a new session (new cookie and CSRF token). Ledger
    ``user.password_reset`` ``by: self``."""
    session = _session(request)
    people = people_for(request, gate.person)
    try:
        people.change_password(gate.person.user_id, body.old, body.new)
    except LoginRefused as exc:
        raise ApiError(403, "wrong-password", str(exc)) from None
    view = people.get_user_by_id(gate.person.user_id)
    return _opened(request, view, mfa_pending=session.restricted)


@route(router, "POST", "/api/me/mfa/begin", action=Action.SELF_MANAGE,
       response_model=OtpauthOut)
def mfa_begin(request: Request, gate: GateDep) -> OtpauthOut:
    """Start enrolling a second factor: the ``otpauth://`` URI to show as a QR code
    (it holds the new secret; answered this once). Confirm with a code."""
    _session(request)
    uri = people_for(request, gate.person).begin_totp(gate.person.user_id)
    return OtpauthOut(otpauth_uri=uri)


@route(router, "POST", "/api/me/mfa/confirm", action=Action.SELF_MANAGE,
       response_model=SessionOut)
def mfa_confirm(body: CodeBody, request: Request, gate: GateDep) -> JSONResponse:
    """Finish enrolling with the current code of the new secret; the session is replaced
    by one that passed its second factor. Ledger ``auth.mfa_enrolled``."""
    _session(request)
    view = people_for(request, gate.person).confirm_totp(gate.person.user_id, body.code)
    return _opened(request, view, mfa_pending=False)


# -- one's own API tokens --------------------------------------------------------------------


@route(router, "GET", "/api/me/tokens", action=Action.SELF_MANAGE, response_model=TokenPage)
def my_tokens(request: Request, gate: GateDep, limit: Limit = 50,
              cursor: Cursor = None) -> TokenPage:
    """One's own API tokens, oldest first (never a secret or a hash)."""
    archive = _archive(request)
    cursors = request.app.state.cursors
    after = cursors.decode("me.tokens", cursor)
    t = models.api_tokens
    query = (sa.select(t.c.id, t.c.created).where(t.c.user_id == gate.person.user_id)
             .order_by(t.c.created, t.c.id).limit(limit + 1))
    if after is not None:
        created, last_id = str(after[0]), str(after[1])
        query = query.where(sa.or_(t.c.created > created,
                                   sa.and_(t.c.created == created, t.c.id > last_id)))
    with archive.reader.connect() as conn:
        rows = conn.execute(query).all()
    views = {v.id: v for v in people_for(request, gate.person).list_tokens(gate.person.login)}
    now = archive.clock()
    page = cursors.page("me.tokens", rows, limit, lambda r: [r.created, r.id],
                        lambda r: _token_out(views[r.id], now))
    return TokenPage(items=page.items, next=page.next)


@route(router, "POST", "/api/me/tokens", action=Action.SELF_MANAGE, response_model=NewTokenOut,
       status_code=201)
def create_my_token(body: TokenBody, request: Request, gate: GateDep) -> NewTokenOut:
    """A new API token of one's own: scope ``read``, ``submit`` or ``export``, optional
    case limits (names of one's own cases, or ``unfiled``), lifetime in days
    (``auth.token_days`` by default; ``"never"`` only when asked). The secret is in
    this answer only. Ledger ``token.created``."""
    person = gate.person
    archive = _archive(request)
    if body.cases is not None:
        mine = {c.case for c in _my_cases(archive, person)} | {UNFILED}
        for name in body.cases:
            if name not in mine:  # an unknown case and another's answer alike
                raise not_found(f"no case {name!r}")
    expires: timedelta | Literal["never"] | None
    if body.expires_days is None:
        expires = None
    elif body.expires_days == NEVER:
        expires = NEVER
    elif isinstance(body.expires_days, int) and 1 <= body.expires_days <= 36500:
        expires = timedelta(days=body.expires_days)
    else:
        raise ApiError(400, "bad-input", "expires_days: a number of days from 1 to 36500, "
                                         "or \"never\"")
    view, secret = people_for(request, person).create_token(
        person.login, scope=body.scope, cases=body.cases, expires_in=expires,
        label=body.label)
    return NewTokenOut(token=_token_out(view, archive.clock()), secret=secret)


@route(router, "DELETE", "/api/me/tokens/{token_id}", action=Action.SELF_MANAGE,
       response_model=TokenOut)
def revoke_my_token(token_id: str, request: Request, gate: GateDep) -> TokenOut:
    """Revoke one of one's own tokens (another's, or none: 404 alike). Ledger
    ``token.revoked``."""
    person = gate.person
    people = people_for(request, person)
    if token_id not in {v.id for v in people.list_tokens(person.login)}:
        raise not_found(f"no token {token_id[:80]!r}")
    try:
        view = people.revoke_token(token_id)
    except UnknownToken:  # pragma: no cover - listed a moment ago
        raise not_found(f"no token {token_id[:80]!r}") from None
    return _token_out(view, _archive(request).clock())

