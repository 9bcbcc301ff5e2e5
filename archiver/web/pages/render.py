"""How pages are made: the Jinja2 environment, one response per page, the HTML errors.

Threat model, next to the code that defends against it:

- *Hostile captured text* (titles, visible text, URLs, notes, even case and login
  names): every template is autoescaped (``autoescape=True`` for every file, no
  ``|safe`` on anything captured); a URL is only ever shown as text or used as the
  ``href`` of a link to our own routes, never as a link to the captured address.
- *Inline script*: the CSP (``script-src 'self'``, no ``'unsafe-inline'``) refuses it;
  the pages load ``/static/app.js`` and carry no ``<script>`` body, no ``style=`` and no
  event-handler attribute.
- *Cross-site requests*: actions are POSTs sent by ``app.js`` with the session's CSRF
  token (from ``<meta name="csrf-token">``) in ``X-CSRF-Token``; the authenticator
  refuses them without it (403 ``csrf``), as for the API.

A page path is any path outside ``/api/``, ``/healthz`` and ``/assets/``: its errors are
HTML (:func:`install`), an unauthenticated GET is sent to ``/login?next=<path>``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from archiver.people.access import (
    ALLOWED,
    KIND,
    SCOPE_ACTIONS,
    Action,
    Kind,
    Principal,
    decide,
)
from archiver.web.auth import Session
from archiver.web.errors import forbidden
from archiver.web.gate import Gate

PAGE_SIZE = 100
"""Rows a page shows at most; the rest is behind the list's cursor."""

FRAGMENT_HEADER = "X-Requested-With"
"""Sent (``fetch``) by ``app.js``: the answer is a fragment of a page, not a page."""

REDIRECT_HEADER = "X-Redirect"
"""An answer to ``app.js`` that carries it makes the browser go there."""

_NOT_PAGES = ("/api/", "/assets/")


def is_page_path(path: str) -> bool:
    """Whether ``path`` is one of the pages' (its errors are HTML)."""
    return not path.startswith(_NOT_PAGES) and path != "/healthz"


def _time(value: str | None) -> Markup:
    """An RFC 3339 time as ``<time>``: shown in UTC, the viewer's local time added by
    ``app.js`` from its ``datetime``."""
    if not value:
        return Markup("—")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return escape(value)  # Markup, escaped
    shown = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{}">{}</time>').format(value, shown)


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} bytes" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} bytes"  # pragma: no cover - the loop returns


def _url_part(value: str) -> str:
    return quote(value, safe="")


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("archiver.web", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["time"] = _time
    env.filters["size"] = _size
    env.filters["urlpart"] = _url_part
    return env


ENV = _environment()


def person_of(request: Request) -> Principal | None:
    gate: Gate | None = getattr(request.state, "gate", None)
    return None if gate is None else gate.principal


def _nav(person: Principal | None) -> list[tuple[str, str]]:
    """The links of the header: what the person may reach."""
    if person is None:
        return []
    links = [("/cases", "Cases")]
    # everyone may submit into their own unfiled captures; a token only with its scope
    if person.token is None or Action.CAPTURE_SUBMIT in SCOPE_ACTIONS[person.token.scope]:
        links.append(("/submit", "Submit"))
    if person.cases_for(Action.WATCH_VIEW):
        links += [("/watches", "Watches"), ("/takedowns", "Takedowns")]
    if decide(person, Action.USER_MANAGE) is ALLOWED:
        links.append(("/admin", "Admin"))
    if decide(person, Action.LEDGER_READ) is ALLOWED:
        links.append(("/audit", "Audit"))
    links.append(("/me", "Account"))
    return links


def context(request: Request, **values: Any) -> dict[str, Any]:
    person = person_of(request)
    session: Session | None = getattr(request.state, "session", None)
    return {
        "person": person,
        "csrf": session.csrf if session is not None else "",
        "nav": _nav(person) if session is None or not session.restricted else [],
        "path": request.url.path,
        **values,
    }


def render_text(request: Request, template: str, **values: Any) -> str:
    """The HTML of ``template`` with ``values`` (a fragment put into another)."""
    return ENV.get_template(template).render(context(request, **values))


def render(request: Request, template: str, *, status: int = 200,
           headers: Mapping[str, str] | None = None, **values: Any) -> HTMLResponse:
    """The page (or fragment) ``template`` with ``values``."""
    body = render_text(request, template, **values)
    return HTMLResponse(body, status_code=status, headers=dict(headers or {}))


def go(path: str) -> Response:
    """Where ``app.js`` must take the browser after an action (a plain 303 for a
    browser that posted a form itself)."""
    return Response(status_code=200, headers={REDIRECT_HEADER: path})


def safe_next(value: str | None) -> str:
    """``next`` if it is a path of this site (``/…``, not ``//…`` nor ``/\\…``), else ``/``."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(ch) < 0x20 or ch == "\\" for ch in value) or len(value) > 2000:
        return "/"
    return value


def login_redirect(request: Request, headers: Mapping[str, str] | None = None
                   ) -> RedirectResponse:
    """303 to the sign-in page, which comes back here once signed in."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    here = raw.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
    answer = RedirectResponse(
        "/login?" + urlencode({"next": safe_next(here)}, quote_via=quote), status_code=303)
    for name, value in (headers or {}).items():
        if name.lower() == "set-cookie":
            answer.headers.append("set-cookie", value)
    return answer


def as_action(gate: Gate, action: Action) -> Gate:
    """A gate for another action of the same person, checked as the gate would have
    checked it in front of a route of that action: a page that shows several lists (a
    case's captures and its exports) asks for each with the list's own action."""
    person = gate.person
    if person.token is not None and action not in SCOPE_ACTIONS[person.token.scope]:
        raise forbidden("this token's scope does not allow this")
    sub = Gate(action, person)
    if KIND[action] is not Kind.CASE:
        if decide(person, action) is not ALLOWED:
            raise forbidden()
        sub.checked = True
    return sub


def checked_by(gate: Gate, *others: Gate) -> None:
    """The page's gate counts as checked when the gates it asked through were."""
    if others and all(g.checked for g in others):
        gate.checked = True


# -- errors ------------------------------------------------------------------------------------

_TITLES = {400: "Not accepted", 401: "Sign in first", 403: "Not allowed", 404: "Not found",
           405: "Not allowed here", 409: "Refused", 413: "Too large", 422: "Not accepted",
           429: "Too many attempts", 500: "Something went wrong"}

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _error_page(request: Request, status: int, code: str, message: str,
                headers: Mapping[str, str]) -> Response:
    kept = {k: v for k, v in headers.items()
            if k.lower() in ("set-cookie", "retry-after", "www-authenticate")}
    fragment = request.headers.get(FRAGMENT_HEADER) == "fetch"
    if status == 401 and request.method == "GET" and not fragment:
        return login_redirect(request, kept)
    if code == "mfa-required" and request.method == "GET" and not fragment:
        return RedirectResponse("/mfa", status_code=303)
    if status == 401:
        # app.js takes the browser to the sign-in page (a fetch would follow a 303
        # silently and put the sign-in page inside this one)
        kept[REDIRECT_HEADER] = "/login"
    elif code == "mfa-required":
        kept[REDIRECT_HEADER] = "/mfa"
    template = "fragments/error.html" if fragment else "error.html"
    return render(request, template, status=status, headers=kept, status_code=status,
                  code=code, title=_TITLES.get(status, "Error"), message=message)


def _html_for_pages(handler: Handler) -> Handler:
    async def answer(request: Request, exc: Exception) -> Response:
        given = await handler(request, exc)
        if not is_page_path(request.url.path):
            return given
        code, message = "error", "the request failed"
        try:
            body = json.loads(bytes(given.body))
            code, message = body["error"]["code"], body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        headers = {k: v for k, v in given.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        gate: Gate | None = getattr(request.state, "gate", None)
        if gate is not None:
            # A refusal shown as a redirect (303) is still a refusal: what CheckedMiddleware
            # guards against is a success of a route that never asked.
            gate.checked = True
        return _error_page(request, given.status_code, code, message, headers)
    return answer


def install(app: FastAPI) -> None:
    """Make the error handlers :func:`archiver.web.errors.install` registered answer
    page paths with HTML (the JSON shape stays for ``/api/``); call after it."""
    for kind, handler in list(app.exception_handlers.items()):
        app.exception_handlers[kind] = _html_for_pages(handler)  # type: ignore[arg-type]


__all__ = ["PAGE_SIZE", "as_action", "checked_by", "go", "install", "is_page_path",
           "login_redirect", "render", "render_text", "safe_next"]
