"""The composition root of the HTTP API: :func:`create_app` over one open archive.

The app is a FastAPI application (chosen over Litestar: its dependency injection is how
every route declares its action and receives its :class:`~archiver.web.gate.Gate`, it
writes the OpenAPI document from the same declarations, and it streams responses
through Starlette without holding them in memory). Sync routes run in the server's
thread pool; :class:`~archiver.archive.Archive` is thread-safe.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver.web import errors
from archiver.web.auth import authenticate
from archiver.web.gate import Authenticator, CheckedMiddleware
from archiver.web.pagination import Cursors

if TYPE_CHECKING:
    from archiver.archive import Archive

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body the API reads (a watchlist import is the largest: 1 MiB)."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    # No inline script, nothing from elsewhere; the API's own docs page is the only HTML.
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
)


@dataclass(frozen=True, slots=True)
class WebOptions:
    """How the app is served (from ``archiver serve``'s options and settings)."""

    secure_cookies: bool = True  # False only for plain HTTP on loopback (--insecure-http)
    trusted_proxies: Sequence[str] = field(default_factory=tuple)  # honour X-Forwarded-* from these
    hsts: bool = False  # sent when served over TLS (directly or behind a proxy)
    export_workers: int = 1  # exports this server runs at once (each reads a whole case)
    export_queue: int = 4  # exports that may wait; beyond, POST .../exports answers 429


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, unless the route set its own
    value (a download sets its own cache and disposition headers)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = SECURITY_HEADERS + (
            ((b"strict-transport-security", b"max-age=31536000"),) if hsts else ()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuses (413) a request body larger than ``limit``, whether announced by
    Content-Length or streamed in chunks, before a route reads it."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced < 0 or announced > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Starlette's HTTPException, not ApiError: FastAPI re-raises it from
                    # its body parsing (any other exception there becomes a 400).
                    raise HTTPException(413, f"the request body is larger than {self.limit} "
                                             "bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = errors.response(413, "too-large",
                                 f"the request body is larger than {self.limit} bytes")
        await answer(scope, receive, send)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (cursors, CSRF, replay tokens) from the web secret."""
    label = b"evidence-archiver web\x00" + purpose.encode()
    return hmac.new(secret, label, hashlib.sha256).digest()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The background services of the server: started before the first request (the
    # export worker first marks failed what a dead server left), stopped after the last.
    exports = app.state.exports
    await run_in_threadpool(exports.start)
    try:
        yield
    finally:
        await run_in_threadpool(exports.stop)


def create_app(
    archive: Archive,
    *,
    secret: bytes,
    authenticator: Authenticator | None = None,
    options: WebOptions = WebOptions(),
) -> FastAPI:
    """The API over ``archive``. ``secret``: the archive's web secret (32 bytes).
    ``authenticator``: who sends a request; :func:`archiver.web.auth.authenticate`
    (session cookie with CSRF, or bearer token) unless a test gives another."""
    from archiver import __version__
    from archiver.export.requests import ExportWorker
    from archiver.web.api import ROUTERS

    app = FastAPI(
        title="Evidence Archiver API",
        version=__version__,
        description="Submit, follow, view, verify and export evidence captures. "
                    "Every call is checked against the caller's roles; every view, "
                    "download and export is recorded on the custody ledger.",
        # The OpenAPI document only (served by api/health.py, declared like every
        # route): the interactive docs pages of FastAPI load their script from a CDN,
        # which the content security policy (rightly) refuses.
        docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.archive = archive
    app.state.exports = ExportWorker(archive, workers=options.export_workers,
                                     queue_size=options.export_queue)
    app.state.authenticator = authenticator or authenticate
    app.state.options = options
    app.state.secret = secret
    app.state.cursors = Cursors(derive_key(secret, "cursor"))
    errors.install(app)
    for router in ROUTERS:
        # Added as they are rather than with include_router (which recent FastAPI
        # versions resolve lazily, out of sight of app.routes): the route table a test
        # enumerates is then exactly what the app serves.
        app.router.routes.extend(router.routes)
    app.add_middleware(CheckedMiddleware)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, hsts=options.hsts)
    return app
