"""Administration: people, cases and their members, API tokens; a person's activity.

``GET  /api/users`` · ``POST /api/users`` · ``GET /api/users/{login}``
``POST /api/users/{login}/disable`` · ``/enable`` · ``/reset-password`` · ``/mfa-reset``
``GET  /api/users/{login}/activity``         the person's ledger entries (auditors)
``GET  /api/cases`` · ``POST /api/cases``
``GET  /api/cases/{name}/members`` · ``PUT|DELETE /api/cases/{name}/members/{login}``
``GET  /api/tokens?user=`` · ``POST /api/tokens`` · ``DELETE /api/tokens/{id}``

Managing needs ``user.manage``, ``case.manage`` or ``token.manage`` (``admin``), which
no API token carries: only a signed-in session, with its second factor, manages. Every
change goes through :class:`~archiver.people.accounts.People` as the admin, so the
ledger entry (``user.created``, ``role.granted``, ``token.created``…) names them and the
session and address they acted from. No answer holds a password hash, a token's hash,
a TOTP secret; a new token's secret is in the answer that creates it, once.

Two choices, and why:

- ``GET /api/cases`` is ``self.view`` (anyone signed in), filtered: an admin (a session
  that may ``case.manage``) sees every case with its member count, anyone else only the
  cases they hold a role on (within their token's limits), with that role. Case names
  a person holds no role on are never listed to them.
- ``GET /api/users/{login}/activity`` is ``ledger.read`` (auditors), not
  ``user.manage``: a person's entries name the captures they viewed and the URLs they
  submitted in cases an admin may not be a member of, and admin is not a backdoor to
  the evidence. An admin who needs it asks an auditor, or is one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from archiver import models
from archiver.archive import Archive
from archiver.people.access import ALLOWED, Action, ArchiveRole, CaseRole, Scope, decide
from archiver.people.accounts import NEVER, UNFILED, Member, People, TokenView, UserView
from archiver.people.errors import NameTaken
from archiver.web.api.ledger import EntryPage, entries_page
from archiver.web.errors import ApiError
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pagination import Cursor, Limit

router = APIRouter(tags=["admin"])

MAX_NAME = 200
MAX_LOGIN = 64
_SECRET = Field(min_length=1, max_length=1024)


# -- shapes -------------------------------------------------------------------------------


class UserOut(BaseModel):
    """A person as an admin sees them (never a password hash or a TOTP secret)."""

    id: int
    login: str
    display_name: str
    archive_role: str | None
    disabled: bool
    created: str
    created_by: str
    password_changed: str
    locked_until: str | None
    mfa_enrolled: bool
    mfa_required: bool


class UserPage(BaseModel):
    items: list[UserOut]
    next: str | None


class NewUserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=1, max_length=MAX_LOGIN)
    display_name: str | None = Field(default=None, max_length=MAX_NAME)
    password: str = _SECRET
    archive_role: Literal["admin", "auditor"] | None = None


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = _SECRET


class CaseOut(BaseModel):
    name: str
    created: str | None
    members: int | None = Field(description="how many people hold a role (admins only)")
    role: str | None = Field(description="the asker's own role on it")


class CasePage(BaseModel):
    items: list[CaseOut]
    next: str | None


class NewCaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)


class MemberOut(BaseModel):
    case: str
    login: str
    display_name: str
    role: str
    granted: str
    granted_by: str
    disabled: bool


class MemberPage(BaseModel):
    items: list[MemberOut]
    next: str | None


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: CaseRole


class Revoked(BaseModel):
    case: str
    login: str
    role: str = Field(description="the role they had")


class TokenOut(BaseModel):
    """An API token as listed: never its secret or its hash."""

    id: str
    login: str
    label: str | None
    scope: str
    cases: list[str] | None
    created: str
    created_by: str
    expires: str | None
    revoked: str | None
    last_used: str | None
    state: Literal["active", "expired", "revoked"]


class TokenPage(BaseModel):
    items: list[TokenOut]
    next: str | None


class NewTokenBody(BaseModel):
    """A token for ``user``: scope, case limits (names, ``unfiled`` allowed; null: every
    case the person holds a role on), lifetime in days (null: ``auth.token_days``;
    ``"never"`` only when asked), a label."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=MAX_LOGIN)
    scope: Scope = Scope.READ
    cases: list[Annotated[str, Field(max_length=MAX_NAME)]] | None = Field(
        default=None, max_length=100)
    expires_days: Annotated[int, Field(ge=1, le=36500)] | Literal["never"] | None = None
    label: str | None = Field(default=None, max_length=200)


class NewTokenOut(BaseModel):
    token: TokenOut
    secret: str = Field(description="shown this once: the archive keeps only its SHA-256")


# -- helpers ------------------------------------------------------------------------------


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _people(request: Request, gate: Gate) -> People:
    return People(_archive(request), actor=gate.actor, context=gate.context())


def _user_out(view: UserView) -> UserOut:
    return UserOut(**view.as_json())


def _member_out(member: Member) -> MemberOut:
    return MemberOut(**member.as_json())


def _token_out(view: TokenView, request: Request) -> TokenOut:
    state = view.state(_archive(request).clock())
    assert state in ("active", "expired", "revoked")
    return TokenOut(**view.as_json(), state=state)  # type: ignore[arg-type]


def _paged(request: Request, list_name: str, items: list[Any], key: Any,
           cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """A page of a short list held in memory (people, cases, members, tokens: hundreds,
    not millions), in the order given, after the cursor's key."""
    cursors = request.app.state.cursors
    after = cursors.decode(list_name, cursor)
    keys = [key(item) for item in items]
    start = 0
    if after is not None:
        start = next((i for i, k in enumerate(keys) if _after(k, after)), len(items))
    rows = list(zip(keys, items, strict=True))[start:start + limit + 1]
    page = cursors.page(list_name, rows, limit, lambda r: r[0], lambda r: r[1])
    return page.items, page.next


def _after(key: list[Any], after: list[Any]) -> bool:
    return key > after


def _conflict(exc: NameTaken) -> ApiError:
    return ApiError(409, "exists", str(exc))


# -- people -------------------------------------------------------------------------------


@route(router, "GET", "/api/users", action=Action.USER_MANAGE, response_model=UserPage)
def list_users(request: Request, gate: GateDep, cursor: Cursor = None,
               limit: Limit = 50) -> UserPage:
    """Every person, by login."""
    users = [_user_out(v) for v in _people(request, gate).list_users()]
    items, more = _paged(request, "users", users, lambda u: [u.login], cursor, limit)
    return UserPage(items=items, next=more)


@route(router, "POST", "/api/users", action=Action.USER_MANAGE, status_code=201,
       response_model=UserOut)
def add_user(request: Request, gate: GateDep, body: NewUserBody) -> UserOut:
    """Create a person (``user.created``). 400: a login, display name or password the
    archive refuses (too short, too common, the login itself); 409: the login is
    taken. An admin must enrol a second factor at their first login."""
    try:
        view = _people(request, gate).add_user(
            body.login, display_name=body.display_name, password=body.password,
            archive_role=None if body.archive_role is None else ArchiveRole(body.archive_role))
    except NameTaken as exc:
        raise _conflict(exc) from None
    return _user_out(view)


@route(router, "GET", "/api/users/{login}", action=Action.USER_MANAGE,
       response_model=UserOut)
def show_user(request: Request, gate: GateDep, login: str) -> UserOut:
    """One person. 404: no such login."""
    return _user_out(_people(request, gate).get_user(login))


@route(router, "POST", "/api/users/{login}/disable", action=Action.USER_MANAGE,
       response_model=UserOut)
def disable_user(request: Request, gate: GateDep, login: str) -> UserOut:
    """Disable a person (``user.disabled``): their sessions end, their tokens are
    refused. 409: one's own account (an admin who locked themselves out would need the
    server's operator)."""
    if login == gate.person.login:
        raise ApiError(409, "refused", "you cannot disable your own account")
    return _user_out(_people(request, gate).disable_user(login))


@route(router, "POST", "/api/users/{login}/enable", action=Action.USER_MANAGE,
       response_model=UserOut)
def enable_user(request: Request, gate: GateDep, login: str) -> UserOut:
    """Enable a disabled person again (``user.enabled``)."""
    return _user_out(_people(request, gate).enable_user(login))


@route(router, "POST", "/api/users/{login}/reset-password", action=Action.USER_MANAGE,
       response_model=UserOut)
def reset_password(request: Request, gate: GateDep, login: str,
                   body: PasswordBody) -> UserOut:
    """Set a new password (``user.password_reset``); the person's sessions end. 400: a
    password the archive refuses."""
    people = _people(request, gate)
    people.reset_password(login, body.password)
    return _user_out(people.get_user(login))


@route(router, "POST", "/api/users/{login}/mfa-reset", action=Action.USER_MANAGE,
       response_model=UserOut)
def reset_mfa(request: Request, gate: GateDep, login: str) -> UserOut:
    """Remove a person's second factor (``user.mfa_reset``), e.g. a lost phone; they
    enrol again at their next login where one is required."""
    return _user_out(_people(request, gate).reset_mfa(login))


@route(router, "GET", "/api/users/{login}/activity", action=Action.LEDGER_READ,
       response_model=EntryPage)
def user_activity(
    request: Request, gate: GateDep, login: str,
    action: Annotated[str | None, Query(max_length=300)] = None,
    after_seq: Annotated[int | None, Query(ge=-1)] = None,
    cursor: Cursor = None, limit: Limit = 50,
) -> EntryPage:
    """The ledger entries the person is the actor of (``user:<login>``), by seq:
    sign-ins, submissions, views, downloads, exports, and for admins what they managed.
    404: no such login."""
    _people(request, gate).get_user(login)
    return entries_page(request, actor=f"user:{login}", action=action, after_seq=after_seq,
                        cursor=cursor, limit=limit)


# -- cases and members --------------------------------------------------------------------


@route(router, "GET", "/api/cases", action=Action.SELF_VIEW, response_model=CasePage)
def list_cases(request: Request, gate: GateDep, cursor: Cursor = None,
               limit: Limit = 50) -> CasePage:
    """The cases, by name: every case for an admin (with member counts, and the
    ``unfiled`` pseudo-case), only one's own (with one's role) for anyone else."""
    person = gate.person
    people = _people(request, gate)
    mine = {case_id: role.value for case_id in person.case_roles
            if (role := person.role_on(case_id)) is not None}
    if decide(person, Action.CASE_MANAGE) is ALLOWED:
        every = [people.get_case(UNFILED), *people.list_cases()]
        cases = [CaseOut(name=c.name, created=c.created, members=c.members,
                         role=mine.get(c.id)) for c in every]
    else:
        names = _case_rows(request, sorted(mine))
        cases = [CaseOut(name=name, created=created, members=None, role=mine[case_id])
                 for case_id, (name, created) in names.items()]
    cases.sort(key=lambda c: c.name)
    items, more = _paged(request, "cases", cases, lambda c: [c.name], cursor, limit)
    return CasePage(items=items, next=more)


def _case_rows(request: Request, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    found: dict[int, tuple[str, str | None]] = {}
    if models.UNFILED_CASE_ID in ids:
        found[models.UNFILED_CASE_ID] = (UNFILED, None)
    wanted = [i for i in ids if i != models.UNFILED_CASE_ID]
    if wanted:
        c = models.cases
        with _archive(request).reader.connect() as conn:
            for row in conn.execute(sa.select(c.c.id, c.c.name, c.c.created)
                                    .where(c.c.id.in_(wanted))):
                found[int(row.id)] = (str(row.name), str(row.created))
    return found


@route(router, "POST", "/api/cases", action=Action.CASE_MANAGE, status_code=201,
       response_model=CaseOut)
def add_case(request: Request, gate: GateDep, body: NewCaseBody) -> CaseOut:
    """Create a case (``case.created``). 400: a name the archive refuses (``unfiled``
    is the pseudo-case's); 409: the name is taken."""
    try:
        view = _people(request, gate).add_case(body.name)
    except NameTaken as exc:
        raise _conflict(exc) from None
    return CaseOut(name=view.name, created=view.created, members=view.members, role=None)


@route(router, "GET", "/api/cases/{name}/members", action=Action.CASE_MANAGE,
       response_model=MemberPage)
def list_members(request: Request, gate: GateDep, name: str, cursor: Cursor = None,
                 limit: Limit = 50) -> MemberPage:
    """The people with a role on a case (``unfiled``: the pseudo-case), by login."""
    members = [_member_out(m) for m in _people(request, gate).members(name)]
    items, more = _paged(request, "members", members, lambda m: [m.login], cursor, limit)
    return MemberPage(items=items, next=more)


@route(router, "PUT", "/api/cases/{name}/members/{login}", action=Action.CASE_MANAGE,
       response_model=MemberOut)
def grant(request: Request, gate: GateDep, name: str, login: str,
          body: RoleBody) -> MemberOut:
    """Give a person a role on a case, replacing the role they had (``role.granted``)."""
    return _member_out(_people(request, gate).grant(name, login, body.role))


@route(router, "DELETE", "/api/cases/{name}/members/{login}", action=Action.CASE_MANAGE,
       response_model=Revoked)
def revoke(request: Request, gate: GateDep, name: str, login: str) -> Revoked:
    """Take a person's role on a case away (``role.revoked``); their sessions end.
    404: no such case, person, or role."""
    had = _people(request, gate).revoke(name, login)
    return Revoked(case=name, login=login, role=had.value)


# -- tokens -------------------------------------------------------------------------------


@route(router, "GET", "/api/tokens", action=Action.TOKEN_MANAGE, response_model=TokenPage)
def list_tokens(
    request: Request, gate: GateDep,
    user: Annotated[str | None, Query(max_length=MAX_LOGIN)] = None,
    cursor: Cursor = None, limit: Limit = 50,
) -> TokenPage:
    """Every API token (of ``user``), newest first: never a secret or a hash."""
    tokens = [_token_out(v, request) for v in _people(request, gate).list_tokens(user)]
    # newest first: the key sorts ascending, so the creation time is turned around
    items, more = _paged(request, "tokens", tokens,
                         lambda t: [_descending(t.created), t.id], cursor, limit)
    return TokenPage(items=items, next=more)


def _descending(stamp: str) -> str:
    # RFC 3339 stamps of one fixed width: mapping each digit d to 9 - d reverses the order
    return stamp.translate(str.maketrans("0123456789", "9876543210"))


@route(router, "POST", "/api/tokens", action=Action.TOKEN_MANAGE, status_code=201,
       response_model=NewTokenOut)
def create_token(request: Request, gate: GateDep, body: NewTokenBody) -> NewTokenOut:
    """A new API token for a person (``token.created``); its secret is in this answer
    only. 404: no such person or case; 400: a disabled person."""
    if body.expires_days is None:
        expires: timedelta | Literal["never"] | None = None
    elif body.expires_days == NEVER:
        expires = NEVER
    else:
        expires = timedelta(days=int(body.expires_days))
    view, secret = _people(request, gate).create_token(
        body.user, scope=body.scope, cases=body.cases, expires_in=expires, label=body.label)
    return NewTokenOut(token=_token_out(view, request), secret=secret)


@route(router, "DELETE", "/api/tokens/{token_id}", action=Action.TOKEN_MANAGE,
       response_model=TokenOut)
def revoke_token(request: Request, gate: GateDep, token_id: str) -> TokenOut:
    """Revoke a token (``token.revoked``): refused from now on. 404: no such token; 400:
    revoked already."""
    return _token_out(_people(request, gate).revoke_token(token_id), request)
