"""The pages of signing in and of one's own account.

``GET/POST /login``       the sign-in form (a plain form post: it works before any script)
``GET/POST /mfa``         the second factor, or the enrolment a person must make (QR code)
``POST /mfa/enrol``       a new TOTP secret, shown as a QR code drawn here (segno)
``POST /mfa/confirm``     the first code of the new secret
``POST /logout``          end this session
``GET /me``               who I am, my cases, my second factor, a new password
``GET/POST /me/tokens``   my API tokens: the list, a new one (its secret shown once)

Every step calls the API's own route function (:mod:`archiver.web.api.auth`), which
opens, rotates and closes sessions and writes the ledger; these routes only turn its
answers into pages and carry its ``Set-Cookie`` over.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

import segno
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from archiver.people.access import Action, Scope
from archiver.web.api import auth as api
from archiver.web.auth import people_for
from archiver.web.errors import ApiError, bad_request
from archiver.web.gate import GateDep, route
from archiver.web.pages.render import PAGE_SIZE, go, render, safe_next

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=1024)]
Next = Annotated[str | None, Query(max_length=2000)]


def _with_cookies(answer: Response, given: Response) -> Response:
    """``answer`` carrying the session cookie ``given`` set or cleared."""
    for value in given.headers.getlist("set-cookie"):
        answer.headers.append("set-cookie", value)
    return answer


def _body(given: Response) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bytes(given.body))
    return data


def _checked(model: type[Any], **values: Any) -> Any:
    """A body of the API from form fields; 400 saying which field is wrong."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise bad_request(f"{where}: {first.get('msg', 'invalid')}", code="bad-input") from None


@route(router, "GET", "/", action=Action.SELF_VIEW, response_class=RedirectResponse)
def home(gate: GateDep) -> RedirectResponse:
    """The start page is the list of one's cases."""
    return RedirectResponse("/cases", status_code=303)


@route(router, "GET", "/login", action=Action.LOGIN, response_class=HTMLResponse)
def login_page(request: Request, next: Next = None) -> HTMLResponse:
    """The sign-in form."""
    return render(request, "login.html", next=safe_next(next), message=None)


@route(router, "POST", "/login", action=Action.LOGIN, response_class=HTMLResponse)
def login(request: Request, login: Annotated[str, Form(max_length=200)], password: Text,
          next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """Sign in (the API's login: ledger ``auth.login`` or ``auth.failed``); then the
    second factor when the person has or needs one, else ``next``."""
    target = safe_next(next)
    try:
        body = _checked(api.LoginBody, login=login, password=password)
        given = api.login(body, request)
    except ApiError as exc:
        # The one answer for an unknown login and a wrong password (as the API's).
        headers = {"Retry-After": exc.headers["Retry-After"]} if exc.headers and \
            "Retry-After" in exc.headers else None
        return render(request, "login.html", status=exc.status, headers=headers,
                      next=target, message=exc.message)
    answer = _body(given)
    where = "/mfa?" + urlencode({"next": target}) if answer["mfa_pending"] else target
    return _with_cookies(RedirectResponse(where, status_code=303), given)


@route(router, "GET", "/mfa", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def mfa_page(request: Request, gate: GateDep, next: Next = None) -> Response:
    """The second step of signing in (a code), or enrolling a second factor (which an
    admin, or everyone when ``auth.require_mfa``, must do before anything else)."""
    view = people_for(request, gate.person).get_user_by_id(gate.person.user_id)
    session = getattr(request.state, "session", None)
    pending = session is not None and session.restricted
    if view.mfa_enrolled and not pending:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "mfa.html", next=safe_next(next), enrolled=view.mfa_enrolled,
                  required=view.mfa_required)


@route(router, "POST", "/mfa", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def mfa(request: Request, gate: GateDep, code: Annotated[str, Form(max_length=16)],
        next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """The code of the person's authenticator app (the API's second factor)."""
    given = api.second_factor(_checked(api.CodeBody, code=code.strip()), request, gate)
    return _with_cookies(go(safe_next(next)), given)


@route(router, "POST", "/mfa/enrol", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def mfa_enrol(request: Request, gate: GateDep,
              next: Annotated[str, Form(max_length=2000)] = "/") -> HTMLResponse:
    """A new secret: its QR code (drawn here, as an SVG image in the page: the secret
    goes to no other site) and the form for its first code."""
    uri = api.mfa_begin(request, gate).otpauth_uri
    qr = segno.make(uri, error="m")
    secret = uri.split("secret=", 1)[1].split("&", 1)[0] if "secret=" in uri else ""
    return render(request, "fragments/enrol.html",
                  qr=qr.svg_data_uri(scale=5, dark="#000", light="#fff"),
                  secret=secret, next=safe_next(next))


@route(router, "POST", "/mfa/confirm", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def mfa_confirm(request: Request, gate: GateDep, code: Annotated[str, Form(max_length=16)],
                next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
    """The first code of the new secret: enrolled (ledger ``auth.mfa_enrolled``)."""
    given = api.mfa_confirm(_checked(api.CodeBody, code=code.strip()), request, gate)
    return _with_cookies(go(safe_next(next)), given)


@route(router, "POST", "/logout", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def logout(request: Request, gate: GateDep) -> Response:
    """End this session (ledger ``auth.logout``); back to the sign-in page."""
    return _with_cookies(go("/login"), api.logout(request, gate))


@route(router, "GET", "/me", action=Action.SELF_VIEW, response_class=HTMLResponse)
def me_page(request: Request, gate: GateDep) -> HTMLResponse:
    """Who I am, my cases and roles, my second factor, and changing my password."""
    me = api.me(request, gate)
    return render(request, "me.html", me=me,
                  changed=request.query_params.get("changed") == "1")


@route(router, "POST", "/me/password", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def change_password(request: Request, gate: GateDep, old: Text, new: Text) -> Response:
    """A new password, proving the old one: every other session ends, this one is
    replaced (a new CSRF token: the page is loaded again)."""
    body = _checked(api.PasswordBody, old=old, new=new)
    return _with_cookies(go("/me?changed=1"), api.change_password(body, request, gate))


@route(router, "GET", "/me/tokens", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def tokens_page(request: Request, gate: GateDep,
                cursor: Annotated[str | None, Query(max_length=512)] = None) -> HTMLResponse:
    """My API tokens (100 a page), and a form for a new one."""
    page = api.my_tokens(request, gate, limit=PAGE_SIZE, cursor=cursor)
    me = api.me(request, gate)
    return render(request, "tokens.html", tokens=page.items,
                  next_url=f"/me/tokens?cursor={page.next}" if page.next else None,
                  cases=[c.case for c in me.cases], scopes=[s.value for s in Scope])


@route(router, "POST", "/me/tokens", action=Action.SELF_MANAGE, response_class=HTMLResponse)
def create_token(request: Request, gate: GateDep,
                 scope: Annotated[str, Form(max_length=20)] = "read",
                 label: Annotated[str, Form(max_length=200)] = "",
                 expires_days: Annotated[str, Form(max_length=10)] = "",
                 cases: Annotated[list[str] | None, Form(max_length=100)] = None
                 ) -> HTMLResponse:
    """A new token of mine: its secret is in this answer only."""
    days: Any = None
    if expires_days.strip() == "never":
        days = "never"
    elif expires_days.strip():
        if not expires_days.strip().isdigit():
            raise bad_request("expires_days: a number of days from 1 to 36500, or never",
                              code="bad-input")
        days = int(expires_days)
    body = _checked(api.TokenBody, scope=scope, label=label or None, expires_days=days,
                    cases=cases or None)
    made = api.create_my_token(body, request, gate)
    return render(request, "fragments/token_created.html", made=made)


@route(router, "POST", "/me/tokens/{token_id}/revoke", action=Action.SELF_MANAGE,
       response_class=HTMLResponse)
def revoke_token(request: Request, gate: GateDep, token_id: str) -> HTMLResponse:
    """Revoke a token of mine (ledger ``token.revoked``)."""
    token = api.revoke_my_token(token_id[:100], request, gate)
    return render(request, "fragments/token_row.html", token=token)
