"""The guarded transport: every HTTP request the archive sends goes through it.

httpx takes no httpcore network backend as a parameter, and the network backend is where
the SSRF guard (resolve once, check every address, connect to the checked address) and
the recorder's tee of the wire bytes live (:mod:`archiver.recorder.wire`). So instead of
reaching into ``httpx.HTTPTransport``'s private pool, :class:`GuardedTransport` is an
``httpx.BaseTransport`` of its own: it owns an ``httpcore.ConnectionPool`` built on the
backend it is given, and it is the one place where httpcore, ssl and socket failures
become :mod:`archiver.errors`::

    httpcore.TimeoutException (connect, read, write, pool)   → FetchTimeout
    httpcore.NetworkError / ProtocolError with an ssl error
        anywhere in its cause chain                           → TlsError
    any other httpcore.NetworkError / ProtocolError          → FetchFailed
    httpcore.UnsupportedProtocol                              → FetchRefused

Our own signals raised inside the backend (``FetchRefused`` from the guard, the
recorder's ``ByteLimitReached``) pass through httpcore untouched and are not mapped.
The recorder uses one transport per exchange (one connection, no keep-alive, so the
bytes of a connection are the bytes of one exchange); the watch sources use one shared
transport with a small keep-alive pool.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import httpcore
import httpx

from archiver.errors import FetchFailed, FetchRefused, FetchTimeout, TlsError


class GuardedTransport(httpx.BaseTransport):
    """HTTP/1.1 over ``backend`` (guarded, maybe recording), errors as archiver errors.

    ``time_limit`` names the budget a timeout ran out of, for the message ("the capture
    time limit of 120 s"). ``keepalive`` connections are kept open between requests
    (0: every request gets a fresh connection, closed after it)."""

    def __init__(
        self,
        backend: httpcore.NetworkBackend,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int = 1,
        keepalive: int = 0,
        keepalive_expiry: float | None = None,
        time_limit: str = "the time limit",
    ) -> None:
        self._time_limit = time_limit
        # HTTP/1.1 only (a WARC records HTTP/1.x text) and no retries: a retry would be a
        # second exchange the caller did not ask for.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=keepalive,
            keepalive_expiry=keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the response body streams from the connection.

        Raises FetchTimeout, TlsError, FetchFailed, FetchRefused (see the module
        docstring), and whatever the backend raises of its own."""
        url = str(request.url)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                             port=request.url.port, target=request.url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with self._mapped(url):
            response = self._pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response, self, url),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> GuardedTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None,
                 exc_value: BaseException | None = None,
                 traceback: TracebackType | None = None) -> None:
        self.close()

    @contextmanager
    def _mapped(self, url: str) -> Iterator[None]:
        try:
            yield
        except httpcore.TimeoutException as exc:
            raise FetchTimeout(f"{self._time_limit} ran out while fetching {url}") from exc
        except httpcore.UnsupportedProtocol as exc:
            raise FetchRefused(f"refusing to fetch {url}: {exc}") from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            tls = _ssl_cause(exc)
            if tls is not None:
                if isinstance(tls, ssl.SSLCertVerificationError):
                    shown = f"certificate verify failed: {tls.verify_message}"
                else:
                    shown = str(tls.reason or tls)
                raise TlsError(f"TLS failure fetching {url}: {shown}") from exc
            raise FetchFailed(f"could not fetch {url}: {exc or type(exc).__name__}") from exc


class _ResponseStream(httpx.SyncByteStream):
    """The response body as it arrives, with read failures mapped like the request's."""

    def __init__(self, response: httpcore.Response, transport: GuardedTransport,
                 url: str) -> None:
        self._response = response
        self._transport = transport
        self._url = url

    def __iter__(self) -> Iterator[bytes]:
        with self._transport._mapped(self._url):
            yield from self._response.iter_stream()

    def close(self) -> None:
        with self._transport._mapped(self._url):
            self._response.close()


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error under ``exc`` (httpcore raises its own errors ``from`` them)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
