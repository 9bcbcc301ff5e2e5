"""The one exception family of ``archiver``; only the CLI turns these into exit codes.

::

    ArchiverError                 anything the application refuses or fails to do
    ├── ConfigError               the configuration file or environment is invalid
    ├── BadInput                  a URL or other argument the archive will not take
    ├── NotInitialisedError       the archive has not been set up ('archiver init')
    ├── NotFoundError             no such capture, artifact or entry
    └── CaptureError              a capture could not be made; ``reason`` is a short code
        ├── FetchRefused          the SSRF guard refused an address        (reason: refused)
        ├── FetchTimeout          the capture's time limit ran out         (reason: timeout)
        ├── TooManyRedirects      more redirects than capture.max_redirects (reason: redirects)
        ├── ResponseTooLarge      a body exceeded a size limit            (reason: too-large)
        ├── TlsError              TLS handshake or certificate failure     (reason: tls)
        ├── BudgetExhausted       the capture's request, byte or time budget is spent
                                  (reason: budget; see archiver.recorder.budget)
        └── FetchFailed           DNS, connection or protocol failure      (reason: network)

Messages are one line a person can act on; ``reason`` is stable for scripts and the
ledger's ``capture.failed`` payload.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base class for every error the application reports to a person."""


class ConfigError(ArchiverError):
    """The configuration (file, environment) is invalid; the message names the key."""


class BadInput(ArchiverError):
    """A URL, case name, note or other argument is not acceptable input (see
    :mod:`archiver.urls`); the CLI exits 2 (usage error)."""


class NotInitialisedError(ArchiverError):
    """The archive has not been initialised."""


class NotFoundError(ArchiverError):
    """A capture, artifact or ledger entry does not exist."""


class CaptureError(ArchiverError):
    """A capture could not be made."""

    reason = "error"


class FetchRefused(CaptureError):
    reason = "refused"


class FetchTimeout(CaptureError):
    reason = "timeout"


class TooManyRedirects(CaptureError):
    reason = "redirects"


class ResponseTooLarge(CaptureError):
    reason = "too-large"


class TlsError(CaptureError):
    reason = "tls"


class FetchFailed(CaptureError):
    reason = "network"


class BudgetExhausted(CaptureError):
    """An exchange the capture's budget (capture.max_requests, max_total_bytes,
    deadline_seconds) cannot afford: refused before anything is sent."""

    reason = "budget"
