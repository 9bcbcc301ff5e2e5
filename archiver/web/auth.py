"""Who sends a request: the session cookie (with its CSRF token) or a bearer token.

:func:`authenticate` is the :data:`~archiver.web.gate.Authenticator` that
:func:`~archiver.web.app.create_app` installs; :class:`Sessions` keeps the server-side
session table (``web_sessions``) that the login routes (:mod:`archiver.web.api.auth`)
open and close.

Threat model, next to the code that defends against it:

- *A stolen database*: a session is known to the server only as the SHA-256 of its
  cookie (32 random bytes), a token only as the SHA-256 of its secret.
- *A cookie read by script or sent over plain HTTP*: ``HttpOnly``, ``Secure`` (unless
  plain HTTP on loopback was asked for), ``SameSite=Strict``, ``Path=/``.
- *Cross-site request forgery*: every state-changing request authenticated by the
  cookie carries ``X-CSRF-Token`` equal to the session's CSRF value (compared in
  constant time); a bearer token is no ambient credential and needs none. A request with
  both is judged by its bearer token, the cookie ignored.
- *A session left open*: idle and absolute timeouts (``auth.session_idle_minutes``,
  ``auth.session_absolute_hours``), a new session id at every login (the session sent
  with the login request is dropped: no fixation), and the sessions of a person
  disabled, reset or removed from a case end at once (:mod:`archiver.people.accounts`).
- *A password without its second factor*: a session whose person must pass (or enrol)
  TOTP and has not may call only the routes of :data:`MFA_PENDING_PATHS`.
- *Script of another origin of this site* (the replay origin, where archived pages
  run: :mod:`archiver.web.replay`): browsers send a host's cookies to all its ports and
  SameSite counts another port or subdomain as the same site, so such script's requests
  to the app carry the session cookie. The cookie counts only for requests the browser
  marks ``Sec-Fetch-Site: same-origin`` or ``none`` (typed, bookmarked) or does not
  mark (older browsers, scripts); from anywhere else the request is anonymous.
- *A forged client address*: ``X-Forwarded-For`` / ``X-Forwarded-Proto`` are honoured
  only when the socket peer is one of the configured trusted proxies, and then the
  client is the rightmost address that is not a trusted proxy.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from fastapi import Request, Response

from archiver import models
from archiver.clock import rfc3339
from archiver.people.access import KIND, Action, Kind, Principal
from archiver.people.accounts import People
from archiver.people.errors import (
    TOKEN_REFUSED_MESSAGE,
    AccountDisabled,
    TokenRefused,
    UnknownUser,
)
from archiver.web.errors import ApiError

if TYPE_CHECKING:
    from archiver.archive import Archive

SESSION_COOKIE: Final = "ea_session"
CSRF_HEADER: Final = "X-CSRF-Token"
STATE_CHANGING: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS_ACTOR: Final = "anonymous"
"""The ledger's actor of what nobody signed in does (a refused login or token)."""

MFA_PENDING_PATHS: Final = frozenset({
    "/api/auth/mfa", "/api/auth/logout", "/api/me", "/api/me/mfa/begin",
    "/api/me/mfa/confirm",
    # the pages of the same steps (archiver.web.pages.auth)
    "/mfa", "/mfa/enrol", "/mfa/confirm", "/logout",
})
"""The only routes a session may call before its person passed (or enrolled) TOTP."""

TOUCH_EVERY = timedelta(minutes=1)
"""``last_seen`` is written at most this often (a busy session writes once a minute)."""

RETRY_AFTER_SECONDS: Final = 60
"""A rate-limited client may try again after this long (the limit counts one minute)."""


def session_hash(cookie: str) -> str:
    """How a session is stored and looked up: SHA-256 hex of its cookie."""
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def session_id(hashed: str) -> str:
    """The short, public name of a session on the ledger (``ses_`` and 12 hex digits of
    a hash of the stored hash: it names the session and opens nothing)."""
    return "ses_" + hashlib.sha256(b"session-id\x00" + hashed.encode()).hexdigest()[:12]


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# -- the client address ----------------------------------------------------------------------


def _networks(addresses: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(a, strict=False) for a in addresses]


def check_proxies(addresses: Sequence[str]) -> tuple[str, ...]:
    """``addresses`` (IP addresses or networks) as given, or ValueError naming the one
    that is neither."""
    for address in addresses:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {address!r}") from None
    return tuple(addresses)


def _is_in(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
           ) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: Request) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy
    (``WebOptions.trusted_proxies``), the rightmost ``X-Forwarded-For`` hop that is not
    one. Also sets the request's scheme from ``X-Forwarded-Proto`` in that case.
    Computed once per request."""
    known: str | None = getattr(request.state, "client_address", None)
    if known is not None:
        return known
    peer = request.client.host if request.client is not None else "unknown"
    options = getattr(request.app.state, "options", None)
    trusted = _networks(getattr(options, "trusted_proxies", ()) or ())
    address = peer
    if trusted and _is_in(peer, trusted):
        hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for")
                for hop in value.split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _is_in(hop, trusted):
                # the first hop no trusted proxy vouches for: the client, if it is an
                # address at all (anything else was written by the client itself)
                try:
                    address = str(ipaddress.ip_address(hop))
                except ValueError:
                    address = peer
                break
            address = hop
        proto = request.headers.get("x-forwarded-proto", "").strip().lower()
        if proto in ("http", "https"):
            request.scope["scheme"] = proto
    request.state.client_address = address
    return address


# -- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just opened: the cookie (secret: only the browser keeps it) and the
    CSRF token the client sends back on state-changing requests."""

    cookie: str
    csrf: str
    id: str


@dataclass(frozen=True, slots=True)
class Session:
    """A live session as one request sees it."""

    hashed: str
    user_id: int
    csrf: str
    mfa_passed: bool
    mfa_needed: bool  # the person must pass or enrol TOTP before anything else

    @property
    def id(self) -> str:
        return session_id(self.hashed)

    @property
    def restricted(self) -> bool:
        """Only :data:`MFA_PENDING_PATHS` until the second factor is passed or enrolled."""
        return self.mfa_needed and not self.mfa_passed


class SessionEnded(Exception):
    """The cookie names no live session (unknown, timed out, ended)."""


class Sessions:
    """The ``web_sessions`` table of one archive, on the archive's clock."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.idle = timedelta(minutes=archive.settings.auth.session_idle_minutes)
        self.absolute = timedelta(hours=archive.settings.auth.session_absolute_hours)

    @staticmethod
    def new_cookie() -> str:
        """A new session cookie: 32 random bytes, base64url."""
        return secrets.token_urlsafe(32)

    def open(self, user_id: int, *, mfa_passed: bool, client: str,
             replacing: str | None = None, cookie: str | None = None) -> NewSession:
        """A new session of ``user_id`` (with ``cookie``, made by :meth:`new_cookie`, when
        its id had to be known before, else a new one); the session of cookie
        ``replacing`` (the one the request came with) is dropped in the same
        transaction."""
        cookie = cookie or self.new_cookie()
        csrf = secrets.token_urlsafe(32)
        hashed = session_hash(cookie)
        stamp = rfc3339(self.archive.clock())
        w = models.web_sessions
        with self.archive.engine.begin() as conn:
            if replacing is not None:
                conn.execute(sa.delete(w).where(w.c.sha256 == session_hash(replacing)))
            conn.execute(sa.insert(w).values(
                sha256=hashed, user_id=user_id, csrf=csrf, created=stamp, last_seen=stamp,
                mfa_passed=mfa_passed, client=client[:64]))
        return NewSession(cookie, csrf, session_id(hashed))

    def find(self, cookie: str) -> Session:
        """The live session of ``cookie``: raises :class:`SessionEnded` when there is
        none or it has timed out (a timed-out row is deleted). Records the time of use,
        at most once a minute."""
        w, u = models.web_sessions, models.users
        hashed = session_hash(cookie)
        now = self.archive.clock()
        with self.archive.reader.connect() as conn:
            row = conn.execute(
                sa.select(w.c.user_id, w.c.csrf, w.c.created, w.c.last_seen, w.c.mfa_passed,
                          u.c.archive_role, u.c.totp_enrolled)
                .join(u, u.c.id == w.c.user_id).where(w.c.sha256 == hashed)).first()
        if row is None:
            raise SessionEnded("unknown")
        last_seen = _parse(row.last_seen)
        if now - _parse(row.created) >= self.absolute or now - last_seen >= self.idle:
            self.close(cookie)
            raise SessionEnded("timed out")
        if now - last_seen >= TOUCH_EVERY:
            with self.archive.engine.begin() as conn:
                conn.execute(sa.update(w).where(w.c.sha256 == hashed)
                             .values(last_seen=rfc3339(now)))
        required = row.archive_role == "admin" or self.archive.settings.auth.require_mfa
        mfa_needed = required or row.totp_enrolled is not None
        return Session(hashed, int(row.user_id), row.csrf, bool(row.mfa_passed), mfa_needed)

    def pass_mfa(self, hashed: str) -> None:
        """The session's person passed (or enrolled) their second factor."""
        w = models.web_sessions
        with self.archive.engine.begin() as conn:
            conn.execute(sa.update(w).where(w.c.sha256 == hashed).values(mfa_passed=True))

    def close(self, cookie: str) -> None:
        """End the session of ``cookie`` (nothing if there is none)."""
        w = models.web_sessions
        with self.archive.engine.begin() as conn:
            conn.execute(sa.delete(w).where(w.c.sha256 == session_hash(cookie)))


def set_session_cookie(response: Response, request: Request, cookie: str) -> None:
    """Send the session cookie: HttpOnly, SameSite=Strict, Path=/, Secure unless the
    server runs plain HTTP on loopback; it lasts no longer than the absolute timeout."""
    archive: Archive = request.app.state.archive
    response.set_cookie(
        SESSION_COOKIE, cookie, path="/", httponly=True, samesite="strict",
        secure=_secure(request),
        max_age=int(archive.settings.auth.session_absolute_hours * 3600),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))


def _secure(request: Request) -> bool:
    options = getattr(request.app.state, "options", None)
    return bool(getattr(options, "secure_cookies", True))


def _expired_cookie_header(request: Request) -> dict[str, str]:
    response = Response()
    clear_session_cookie(response, request)
    return {"Set-Cookie": response.headers["set-cookie"]}


# -- the authenticator -----------------------------------------------------------------------


def invalid_token() -> ApiError:
    return ApiError(401, "invalid-token", TOKEN_REFUSED_MESSAGE,
                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def rate_limited(message: str) -> ApiError:
    return ApiError(429, "rate-limited", message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def people_for(request: Request, principal: Principal | None = None, *,
               session: str | None = None) -> People:
    """A :class:`~archiver.people.accounts.People` acting for the request's person (or
    :data:`ANONYMOUS_ACTOR`), recording the request's context on the ledger (``session``:
    the id of the session a login opens)."""
    archive: Archive = request.app.state.archive
    if principal is None:
        context = {"client": client_address(request)}
        if session is not None:
            context = {"session": session, **context}
        return People(archive, actor=ANONYMOUS_ACTOR, context=context)
    return People(archive, actor=principal.actor, context=principal.context())


def authenticate(request: Request, action: Action) -> Principal | None:
    """The :data:`~archiver.web.gate.Authenticator` of the API.

    A public action needs and checks no credentials (None). Otherwise, with an
    ``Authorization`` header: the bearer token's person, or 401 ``invalid-token`` (429
    ``rate-limited`` for a client past its limit of refused attempts); the cookie is
    then ignored. With the session cookie: its person, or 401 ``session-ended``
    (unknown, timed out; the cookie is cleared); 403 ``csrf`` for a state-changing
    request without the session's CSRF token; 403 ``mfa-required`` outside
    :data:`MFA_PENDING_PATHS` before the second factor. With neither: None.
    """
    if KIND[action] is Kind.PUBLIC:
        return None
    client = client_address(request)
    archive: Archive = request.app.state.archive
    authorization = request.headers.get("authorization")
    if authorization is not None:
        return _bearer(request, authorization, client)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None or not _own_origin(request):
        return None
    sessions = Sessions(archive)
    try:
        session = sessions.find(cookie)
    except SessionEnded:
        raise ApiError(401, "session-ended", "your session has ended; sign in again",
                       _expired_cookie_header(request)) from None
    if request.method in STATE_CHANGING:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"),
                                   session.csrf.encode()):
            raise ApiError(403, "csrf", f"this request needs the {CSRF_HEADER} header of "
                                        "your session (as returned at login)")
    request.state.session = session
    if session.restricted:
        route = request.scope.get("route")
        if getattr(route, "path", None) not in MFA_PENDING_PATHS:
            raise ApiError(403, "mfa-required",
                           "enter your one-time code first (POST /api/auth/mfa), or enrol "
                           "a second factor (POST /api/me/mfa/begin)")
    try:
        return people_for(request).principal(session.user_id, session_id=session.id,
                                             client=client)
    except (AccountDisabled, UnknownUser):
        sessions.close(cookie)
        raise ApiError(401, "session-ended", "your session has ended; sign in again",
                       _expired_cookie_header(request)) from None


COOKIE_FETCH_SITES: Final = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of requests the session cookie may authenticate."""


def _own_origin(request: Request) -> bool:
    """Whether the browser says the request comes from the app's own pages (or says
    nothing): not from the replay origin, nor any other site. Two marks are read, so a
    browser that sends one and not the other is still held: ``Sec-Fetch-Site``, and
    ``Origin`` (sent with every cross-origin fetch and every POST), which must then be
    the app's own origin as this request reached it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in COOKIE_FETCH_SITES:
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin.lower() == f"{request.url.scheme}://{host}".lower()


def _bearer(request: Request, authorization: str, client: str) -> Principal:
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise ApiError(401, "invalid-token",
                       "the Authorization header must be 'Bearer <token>'",
                       {"WWW-Authenticate": "Bearer"})
    try:
        return people_for(request).resolve_token(credential, client=client)
    except TokenRefused as exc:
        if exc.reason == "rate-limited":
            raise rate_limited(str(exc)) from None
        raise invalid_token() from None
    except (AccountDisabled, UnknownUser):
        raise invalid_token() from None


__all__ = [
    "ANONYMOUS_ACTOR",
    "CSRF_HEADER",
    "MFA_PENDING_PATHS",
    "SESSION_COOKIE",
    "NewSession",
    "Session",
    "SessionEnded",
    "Sessions",
    "authenticate",
    "check_proxies",
    "clear_session_cookie",
    "client_address",
    "people_for",
    "session_hash",
    "set_session_cookie",
]
