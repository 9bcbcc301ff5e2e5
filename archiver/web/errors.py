"""One error shape for every answer that is not a success:
``{"error": {"code": "<stable-code>", "message": "<one line a person can act on>"}}``.

Routes raise :class:`ApiError`; the handlers installed by :func:`install` turn it, the
archive's own exceptions, FastAPI's validation errors and Starlette's 404/405 into that
shape. Nothing else reaches the client: an unexpected exception answers 500
``internal`` with no detail (the detail goes to the server's log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from archiver.errors import ArchiverError, BadInput, ConfigError, NotFoundError
from archiver.urls import printable

log = logging.getLogger(__name__)

MAX_MESSAGE = 500


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a stable ``code``, a ``message``."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def unauthenticated(message: str = "sign in first (session cookie or bearer token)") -> ApiError:
    return ApiError(401, "unauthenticated", message, {"WWW-Authenticate": "Bearer"})


def forbidden(message: str = "your role or token does not allow this") -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not-found", message)


def bad_request(message: str, code: str = "bad-request") -> ApiError:
    return ApiError(400, code, message)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    # Messages may quote what a client sent (a URL, a name): escaped and bounded.
    text = printable(message)
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "…"
    return {"error": {"code": code, "message": text}}


def response(status: int, code: str, message: str,
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {400: "bad-request", 401: "unauthenticated", 403: "forbidden",
               404: "not-found", 405: "method-not-allowed", 413: "too-large",
               415: "unsupported-media-type", 416: "range-not-satisfiable",
               429: "rate-limited"}


def install(app: FastAPI) -> None:
    """Register the handlers that give every failure the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return response(422, "invalid-request", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return response(exc.status_code, code, message,
                        dict(exc.headers) if exc.headers else None)

    @app.exception_handler(BadInput)
    async def _bad_input(_request: Request, exc: BadInput) -> JSONResponse:
        return response(400, "bad-input", str(exc))

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return response(404, "not-found", str(exc))

    @app.exception_handler(ConfigError)
    async def _config(_request: Request, exc: ConfigError) -> JSONResponse:
        log.error("configuration error: %s", exc)
        return response(500, "server-misconfigured", "the server's configuration is invalid")

    @app.exception_handler(ArchiverError)
    async def _archiver(_request: Request, exc: ArchiverError) -> JSONResponse:
        return response(409, "refused", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering a request", exc_info=exc)
        return response(500, "internal", "the server failed; the error is in its log")
