"""Fetching listings (feeds, outboxes, preview pages) behind the SSRF guard.

Threat model: a watched URL, every page link in a feed or outbox, and every redirect are
chosen by whoever runs the watched site; the daemon runs inside an operator's network.
A listing fetch is not evidence (nothing is sealed from it), but without the guard a
hostile feed could point the poller at the metadata service or a LAN admin panel and
read the answer back through what the poller does next. So every connection of a
listing fetch goes through :class:`GuardedBackend` (under the archive's one
:class:`~archiver.recorder.transport.GuardedTransport`): the host is resolved once, every
address is checked by :func:`archiver.recorder.guard.resolve_checked`, and the socket is
opened to that checked address (no second lookup: no DNS-rebinding window). Redirects
are followed by hand, each hop's URL checked by ``check_url`` and its connection by the
backend; ``capture.allow_private_networks`` lifts the guard as it does for captures.

Bodies are read into memory, up to ``watch.max_listing_bytes`` after decompression (a
listing is parsed whole; the limit also stops a decompression bomb).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

from archiver.errors import CaptureError, ConfigError, FetchRefused
from archiver.recorder.addresses import AddressPolicy
from archiver.recorder.guard import check_url, connect_checked, resolve_checked
from archiver.recorder.session import ssl_context_for
from archiver.recorder.transport import GuardedTransport
from archiver.settings import Settings
from archiver.watch.sources.base import SourceError

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore network backend that connects only to addresses the guard allows."""

    def __init__(
        self,
        *,
        allow_private_networks: bool,
        policy: AddressPolicy | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private_networks
        self._policy = policy
        self._inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream, _address = connect_checked(
            self._inner, f"//{host}:{port}", host, port,
            allow_private_networks=self._allow_private, policy=self._policy,
            timeout=timeout, local_address=local_address, socket_options=socket_options,
        )
        return stream

    def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    """The final URL, after redirects."""
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def content_type(self) -> str:
        value: str = self.headers.get("content-type", "")
        return value.split(";", 1)[0].strip().lower()

    def text(self) -> str:
        charset = None
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset":
                charset = value.strip("\"' ")
        try:
            return self.body.decode(charset or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def require_ok(self) -> Fetched:
        """Raises :class:`SourceError` unless the status is 2xx."""
        if not 200 <= self.status < 300:
            raise SourceError(f"{self.url} answered HTTP {self.status}")
        return self


class GuardedFetcher:
    """GET listings with limits, through the guard. Thread-safe; close when done."""

    def __init__(
        self,
        *,
        allow_private_networks: bool = False,
        timeout_seconds: float = 30.0,
        max_bytes: int = 16 * 1024 * 1024,
        max_redirects: int = 10,
        user_agent: str = "evidence-archiver",
        verify_tls: bool = True,
        ca_bundle: Path | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self.verify_tls = verify_tls
        self.ca_bundle = ca_bundle
        transport = GuardedTransport(
            GuardedBackend(allow_private_networks=allow_private_networks, policy=policy),
            ssl_context=_ssl_context(verify_tls, ca_bundle), max_connections=64,
            keepalive=16, keepalive_expiry=5.0,
            time_limit=f"the listing time limit of {timeout_seconds:g} s "
                       "(watch.timeout_seconds)",
        )
        self._client = httpx.Client(
            transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(timeout_seconds),
            headers={"User-Agent": user_agent},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardedFetcher:
        capture, watch = settings.capture, settings.watch
        return cls(
            allow_private_networks=capture.allow_private_networks,
            timeout_seconds=watch.timeout_seconds,
            max_bytes=watch.max_listing_bytes,
            max_redirects=capture.max_redirects,
            user_agent=capture.user_agent,
            verify_tls=capture.verify_tls,
            ca_bundle=capture.ca_bundle,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GuardedFetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def check(self, url: str) -> None:
        """Refuse (``SourceError``) a URL the guard would refuse, resolving its host:
        for fetchers that do their own networking (yt-dlp)."""
        try:
            parsed = check_url(url, allow_private_networks=self.allow_private_networks,
                               policy=self.policy)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            resolve_checked(url, parsed.host, port,
                            allow_private_networks=self.allow_private_networks,
                            policy=self.policy)
        except FetchRefused as exc:
            raise SourceError(str(exc)) from exc
        except OSError as exc:
            raise SourceError(f"cannot resolve the host of {url}: {exc}") from exc

    def get(
        self, url: str, *, accept: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """GET ``url``, following redirects. Any status is returned (304, 404 …);
        raises :class:`SourceError` for a refused address, a network failure, a timeout,
        too many redirects or a body over the limit."""
        request_headers = dict(headers or {})
        if accept is not None:
            request_headers["Accept"] = accept
        current = url
        for _hop in range(self.max_redirects + 1):
            try:
                # the URL as checked: without a user name or password, which httpx would
                # otherwise send as Authorization
                current = str(check_url(current, allow_private_networks=self.allow_private_networks,
                                        policy=self.policy))
                fetched = self._get_one(current, request_headers)
            except CaptureError as exc:  # refused, timeout, TLS, network: one line each
                raise SourceError(str(exc)) from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. a malformed URL
                raise SourceError(f"cannot fetch {current}: {exc}") from exc
            location = fetched.headers.get("location")
            if fetched.status not in REDIRECTS or not location:
                return fetched
            current = str(httpx.URL(current).join(location))
            request_headers.pop("If-None-Match", None)
            request_headers.pop("If-Modified-Since", None)
        raise SourceError(f"more than {self.max_redirects} redirects from {url}")

    def _get_one(self, url: str, headers: Mapping[str, str]) -> Fetched:
        with self._client.stream("GET", url, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            if response.status_code not in REDIRECTS:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise SourceError(
                            f"{url} is larger than watch.max_listing_bytes "
                            f"({self.max_bytes} bytes)"
                        )
                    chunks.append(chunk)
            return Fetched(str(response.url), response.status_code, response.headers,
                           b"".join(chunks))


def _ssl_context(verify: bool, ca_bundle: Path | None) -> ssl.SSLContext:
    try:
        return ssl_context_for(verify_tls=verify, ca_bundle=ca_bundle)
    except ConfigError as exc:
        raise SourceError(str(exc)) from exc
