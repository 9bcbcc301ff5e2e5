"""The admin's and the auditor's pages.

Admin: ``/admin`` (people), ``/admin/users/{login}`` (one person: roles, tokens, disable
or enable), ``/admin/cases`` and ``/admin/cases/{name}`` (members: grant, revoke),
``/admin/tokens`` (every token: revoke). Auditor: ``/audit`` (the ledger's latest signed
checkpoint with its timestamps, the keys, verify the ledger now) and
``/audit/people/{login}`` (one person's acts: time, act and subject, never an entry's
payload: nothing of the evidence content).

Each page asks through the API's route functions (:mod:`archiver.web.api.admin`,
:mod:`archiver.web.api.ledger`) with its own action, as the API routes do.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from archiver.people.access import Action
from archiver.web.api import admin as api
from archiver.web.api import ledger as ledger_api
from archiver.web.api.auth import _case_names as case_names
from archiver.web.api.captures import archive_of as api_archive
from archiver.web.auth import people_for
from archiver.web.errors import ApiError, bad_request
from archiver.web.gate import GateDep, route
from archiver.web.pages.render import PAGE_SIZE, as_action, go, render

router = APIRouter(include_in_schema=False)

CursorQ = Annotated[str | None, Query(max_length=512)]
Login = Annotated[str, Form(max_length=200)]


def _next(path: str, cursor: str | None) -> str | None:
    return None if cursor is None else f"{path}?{urlencode({'cursor': cursor})}"


@route(router, "GET", "/admin", action=Action.USER_MANAGE, response_class=HTMLResponse)
def people_page(request: Request, gate: GateDep, cursor: CursorQ = None) -> HTMLResponse:
    """Every person, by login (100 a page)."""
    page = api.list_users(request, gate, cursor=cursor, limit=PAGE_SIZE)
    return render(request, "admin/people.html", users=page.items,
                  next_url=_next("/admin", page.next))


@route(router, "POST", "/admin/users", action=Action.USER_MANAGE,
       response_class=HTMLResponse)
def add_person(request: Request, gate: GateDep, login: Login,
               password: Annotated[str, Form(max_length=1024)],
               display_name: Annotated[str, Form(max_length=200)] = "",
               archive_role: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Create a person (``user.created``), then show them. The password rules are the
    API's and the CLI's (length, common passwords, not the login)."""
    try:
        body = api.NewUserBody(login=login.strip(), password=password,
                               display_name=display_name.strip() or None,
                               archive_role=archive_role or None)  # type: ignore[arg-type]
    except ValidationError:
        raise bad_request("a login name, a password, and an archive role of admin, "
                          "auditor or none", code="bad-input") from None
    created = api.add_user(request, gate, body)
    return go(f"/admin/users/{quote(created.login, safe='')}")


@route(router, "POST", "/admin/cases", action=Action.CASE_MANAGE,
       response_class=HTMLResponse)
def add_case(request: Request, gate: GateDep,
             name: Annotated[str, Form(max_length=200)]) -> Response:
    """Create a case (``case.created``), then show its members (none yet)."""
    try:
        body = api.NewCaseBody(name=name.strip())
    except ValidationError:
        raise bad_request("a case needs a name", code="bad-input") from None
    created = api.add_case(request, gate, body)
    return go(f"/admin/cases/{quote(created.name, safe='')}")


@route(router, "GET", "/admin/users/{login}", action=Action.USER_MANAGE,
       response_class=HTMLResponse)
def person_page(request: Request, gate: GateDep, login: str) -> HTMLResponse:
    """One person: state, roles per case, tokens (100), disable or enable."""
    user = api.show_user(request, gate, login[:200])
    tokens = api.list_tokens(request, as_action(gate, Action.TOKEN_MANAGE), user=user.login,
                             cursor=None, limit=PAGE_SIZE)
    held = people_for(request, gate.person).case_roles(user.id)
    names = case_names(api_archive(request), sorted(held))
    roles = sorted((names.get(i, f"#{i}"), role.value) for i, role in held.items())
    return render(request, "admin/person.html", user=user, tokens=tokens.items, roles=roles,
                  more_tokens=tokens.next is not None)


@route(router, "POST", "/admin/users/{login}/{what}", action=Action.USER_MANAGE,
       response_class=HTMLResponse)
def person_change(request: Request, gate: GateDep, login: str, what: str) -> Response:
    """Disable (their sessions and tokens stop at once) or enable a person."""
    if what == "disable":
        api.disable_user(request, gate, login[:200])
    elif what == "enable":
        api.enable_user(request, gate, login[:200])
    else:
        raise bad_request("disable or enable", code="bad-input")
    return go(f"/admin/users/{quote(login[:200], safe='')}")


@route(router, "GET", "/admin/cases", action=Action.CASE_MANAGE, response_class=HTMLResponse)
def cases_page(request: Request, gate: GateDep, cursor: CursorQ = None) -> HTMLResponse:
    """Every case with its number of members."""
    page = api.list_cases(request, as_action(gate, Action.SELF_VIEW), cursor=cursor,
                          limit=PAGE_SIZE)
    return render(request, "admin/cases.html", cases=page.items,
                  next_url=_next("/admin/cases", page.next))


@route(router, "GET", "/admin/cases/{name}", action=Action.CASE_MANAGE,
       response_class=HTMLResponse)
def case_page(request: Request, gate: GateDep, name: str,
              cursor: CursorQ = None) -> HTMLResponse:
    """A case's members and their roles (100 a page); grant and revoke."""
    page = api.list_members(request, gate, name[:200], cursor=cursor, limit=PAGE_SIZE)
    return render(request, "admin/case.html", name=name, members=page.items,
                  next_url=_next(f"/admin/cases/{quote(name, safe='')}", page.next))


@route(router, "POST", "/admin/cases/{name}/members", action=Action.CASE_MANAGE,
       response_class=HTMLResponse)
def grant(request: Request, gate: GateDep, name: str, login: Login,
          role: Annotated[str, Form(max_length=20)]) -> Response:
    """Give a person a role on the case (``role.granted``)."""
    try:
        body = api.RoleBody(role=role)  # type: ignore[arg-type]
    except ValidationError:
        raise bad_request("role: investigator, legal or viewer", code="bad-input") from None
    api.grant(request, gate, name[:200], login.strip(), body)
    return go(f"/admin/cases/{quote(name[:200], safe='')}")


@route(router, "POST", "/admin/cases/{name}/members/{login}/revoke",
       action=Action.CASE_MANAGE, response_class=HTMLResponse)
def revoke(request: Request, gate: GateDep, name: str, login: str) -> Response:
    """Take a person's role on the case away (``role.revoked``)."""
    api.revoke(request, gate, name[:200], login[:200])
    return go(f"/admin/cases/{quote(name[:200], safe='')}")


@route(router, "GET", "/admin/tokens", action=Action.TOKEN_MANAGE, response_class=HTMLResponse)
def tokens_page(request: Request, gate: GateDep, cursor: CursorQ = None,
                user: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    """Every API token (never a secret), or one person's, newest first (100 a page)."""
    page = api.list_tokens(request, gate, user=user, cursor=cursor, limit=PAGE_SIZE)
    path = "/admin/tokens" if user is None else f"/admin/tokens?{urlencode({'user': user})}"
    next_url = None if page.next is None else \
        f"{path}{'&' if user is not None else '?'}{urlencode({'cursor': page.next})}"
    return render(request, "admin/tokens.html", tokens=page.items, user=user,
                  next_url=next_url)


@route(router, "POST", "/admin/tokens/{token_id}/revoke", action=Action.TOKEN_MANAGE,
       response_class=HTMLResponse)
def revoke_token(request: Request, gate: GateDep, token_id: str) -> HTMLResponse:
    """Revoke a token (``token.revoked``); answers its row."""
    token = api.revoke_token(request, gate, token_id[:100])
    return render(request, "admin/token_row.html", t=token)


@route(router, "GET", "/audit", action=Action.LEDGER_READ, response_class=HTMLResponse)
def audit_page(request: Request, gate: GateDep) -> HTMLResponse:
    """The latest signed checkpoint and its timestamps, the signing keys, and verifying
    the whole ledger now; nothing of any capture's content."""
    public = as_action(gate, Action.LEDGER_PUBLIC)
    try:
        checkpoint = ledger_api.latest_checkpoint(request, public)
    except ApiError as exc:
        if exc.status != 404:
            raise
        checkpoint = None
    keys = ledger_api.keys(request, public, cursor=None, limit=PAGE_SIZE)
    return render(request, "audit.html", checkpoint=checkpoint, keys=keys.items)


@route(router, "POST", "/audit/verify", action=Action.LEDGER_VERIFY,
       response_class=HTMLResponse)
def audit_verify(request: Request, gate: GateDep) -> HTMLResponse:
    """Verify the whole ledger now (``ledger.verified``): the result, each count."""
    return render(request, "fragments/ledger_verified.html",
                  result=ledger_api.verify(request, gate))


@route(router, "GET", "/admin/users/{login}/activity", action=Action.USER_MANAGE,
       response_class=HTMLResponse)
def admin_activity_page(request: Request, gate: GateDep, login: str,
                        cursor: CursorQ = None) -> HTMLResponse:
    """One person's acts, for an admin: time, act and subject only, as on the auditor's
    page. An entry's payload (a submitted URL, a note) is evidence content, which an
    admin does not read; the subject names a capture by id only."""
    people_for(request, gate.person).get_user(login[:200])
    page = ledger_api.entries_page(request, actor=f"user:{login[:200]}", action=None,
                                   subject=None, after_seq=None, cursor=cursor,
                                   limit=PAGE_SIZE)
    return render(request, "audit_person.html", login=login, entries=page.items,
                  next_url=_next(f"/admin/users/{quote(login, safe='')}/activity",
                                 page.next))


@route(router, "GET", "/audit/people", action=Action.LEDGER_READ,
       response_class=RedirectResponse)
def activity_find(gate: GateDep, login: Annotated[str, Query(max_length=200)]
                  ) -> RedirectResponse:
    """The form of the audit page: to that person's activity."""
    return RedirectResponse(f"/audit/people/{quote(login.strip(), safe='')}",
                            status_code=303)


@route(router, "GET", "/audit/people/{login}", action=Action.LEDGER_READ,
       response_class=HTMLResponse)
def activity_page(request: Request, gate: GateDep, login: str,
                  cursor: CursorQ = None) -> HTMLResponse:
    """One person's acts on the ledger, in order (100 a page): time, act, subject."""
    page = api.user_activity(request, gate, login[:200], action=None, after_seq=None,
                             cursor=cursor, limit=PAGE_SIZE)
    return render(request, "audit_person.html", login=login, entries=page.items,
                  next_url=_next(f"/audit/people/{quote(login, safe='')}", page.next))
