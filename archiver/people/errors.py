"""The exceptions of :mod:`archiver.people`, within the one family of :mod:`archiver.errors`.

::

    ArchiverError
    ├── BadInput                     (CLI exit 2)
    │   ├── InvalidName              a login, case or label the archive will not take
    │   ├── NameTaken                a login or case name already in use
    │   ├── WeakPassword             too short, too common, or the login itself
    │   └── MfaCodeRejected          a TOTP code that does not confirm an enrolment
    ├── NotFoundError                (CLI exit 4)
    │   ├── UnknownUser
    │   ├── UnknownCase
    │   ├── UnknownToken
    │   └── NoMembership             the person has no role on that case
    └── AccessRefused                a credential the archive does not accept
        ├── LoginRefused             password login; ``reason`` says why (ledger only)
        ├── TokenRefused             API token; ``reason`` says why (ledger only)
        └── AccountDisabled          a disabled person asked to act

The message of :class:`LoginRefused` and :class:`TokenRefused` is what the person is
told, the same whatever went wrong (no oracle for which login names exist); ``reason``
is what the ledger's ``auth.failed`` entry records. No message ever holds a password,
a token or a TOTP code.
"""

from __future__ import annotations

from archiver.errors import ArchiverError, BadInput, NotFoundError


class InvalidName(BadInput):
    """A login name, case name, display name or label that is not acceptable."""


class NameTaken(BadInput):
    """A login name or case name that already exists."""


class WeakPassword(BadInput):
    """A password the policy refuses; the message says which rule, never the password."""


class MfaCodeRejected(BadInput):
    """The TOTP code given to confirm an enrolment does not match."""


class UnknownUser(NotFoundError):
    """No person with that login name (or id)."""


class UnknownCase(NotFoundError):
    """No case with that name."""


class UnknownToken(NotFoundError):
    """No API token with that id."""


class NoMembership(NotFoundError):
    """The person has no role on that case."""


class AccessRefused(ArchiverError):
    """A credential was not accepted. ``reason``: a short stable code for the ledger."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


LOGIN_REFUSED_MESSAGE = "wrong login name or password"
RATE_LIMITED_MESSAGE = "too many failed attempts from this address; try again in a minute"
# a message, not a secret:
TOKEN_REFUSED_MESSAGE = "the API token is not valid (expired, revoked, unknown)"  # noqa: S105


class LoginRefused(AccessRefused):
    """A password login refused. Reasons: ``unknown-user``, ``wrong-password``,
    ``disabled``, ``locked``, ``rate-limited``, ``mfa-required``, ``wrong-totp``."""

    def __init__(self, reason: str, message: str = LOGIN_REFUSED_MESSAGE) -> None:
        super().__init__(message, reason=reason)


class TokenRefused(AccessRefused):
    """An API token refused. Reasons: ``token-unknown``, ``token-expired``,
    ``token-revoked``, ``disabled``, ``rate-limited``."""

    def __init__(self, reason: str, message: str = TOKEN_REFUSED_MESSAGE) -> None:
        super().__init__(message, reason=reason)


class AccountDisabled(AccessRefused):
    """The person's account is disabled (or gone) since their session or token began."""

    def __init__(self, login: str) -> None:
        super().__init__(f"the account {login!r} is disabled", reason="disabled")
