"""Accounts, cases and memberships, API tokens, and authentication: :class:`People`.

Every change is a signed ledger entry written in the same transaction as the rows it
describes, naming who did it (``actor``: a signed-in person ``user:<login>``, or the
CLI's operator ``os:<account>@<host>``) and, in ``payload["context"]``, through what
(the token or session id, the client address; never a secret).

The web application owns sessions and cookies; it calls :meth:`People.login`,
:meth:`People.check_totp`, :meth:`People.resolve_token` and :meth:`People.principal`.
Threat model, next to the code that defends against it: password guessing (argon2id,
per-login lockout, per-client rate limit), login-name fishing (one public answer and the
same time for an unknown login as for a wrong password), a stolen database (hashed
passwords and tokens, TOTP secrets encrypted under ``secrets/web.key``), a replayed
TOTP code (one use per 30-second step), a person removed from the team (disabling ends
their sessions and refuses their tokens at once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, Literal, NoReturn

import sqlalchemy as sa

from archiver import models
from archiver.archive import Archive
from archiver.cases import UNFILED as UNFILED  # the pseudo-case's name (case_id 0)
from archiver.cases import ReservedCaseName, check_case_name
from archiver.clock import rfc3339
from archiver.errors import BadInput
from archiver.people import passwords
from archiver.people.access import (
    ArchiveRole,
    CaseRole,
    Principal,
    Scope,
    TokenGrant,
    actor_for,
)
from archiver.people.errors import (
    RATE_LIMITED_MESSAGE,
    AccountDisabled,
    InvalidName,
    LoginRefused,
    MfaCodeRejected,
    NameTaken,
    NoMembership,
    TokenRefused,
    UnknownCase,
    UnknownToken,
    UnknownUser,
)
from archiver.people.webkey import decrypt_totp_secret, encrypt_totp_secret, web_secret
from archiver.urls import check_text, printable

NEVER: Final = "never"
"""``expires_in`` of a token that never expires (asked for explicitly)."""

TOKEN_PREFIX: Final = "ea_"  # noqa: S105 - a prefix, not a secret
TOTP_STEP_SECONDS: Final = 30
FAILURE_MEMORY = timedelta(days=1)  # login_failures rows older than this are pruned
LAST_USED_EVERY = timedelta(minutes=1)  # a token's last_used is written at most this often
_RATE_LIMITED_EVERY = timedelta(minutes=1)  # one auth.failed rate-limited per address
# pg_advisory_xact_lock(int4, int4) namespace: the first 4 bytes (signed) of
# SHA-256("evidence-archiver/rate-limited-client").
_PG_RATE_LIMIT_LOCK = -2101216915
# login_failures.login of a refused token (no login name has parentheses)
_TOKEN_CLIENT_LOGIN = "(token)"  # noqa: S105 - a marker, not a secret
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_CASE_NAME = 200
_MAX_LABEL = 200


@dataclass(frozen=True, slots=True)
class UserView:
    """A person as shown to admins and to themselves (never the hash or a secret)."""

    id: int
    login: str
    display_name: str
    archive_role: ArchiveRole | None
    disabled: bool
    created: str
    created_by: str
    password_changed: str
    locked_until: str | None
    mfa_enrolled: bool
    mfa_required: bool
    """A second factor is required (admin, or ``auth.require_mfa``): while it is not
    enrolled, a login may only enrol one."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "login": self.login, "display_name": self.display_name,
            "archive_role": None if self.archive_role is None else self.archive_role.value,
            "disabled": self.disabled, "created": self.created, "created_by": self.created_by,
            "password_changed": self.password_changed, "locked_until": self.locked_until,
            "mfa_enrolled": self.mfa_enrolled, "mfa_required": self.mfa_required,
        }


@dataclass(frozen=True, slots=True)
class CaseView:
    """A case (id 0, name ``unfiled``: the pseudo-case of captures with no case)."""

    id: int
    name: str
    created: str | None
    members: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created": self.created,
                "members": self.members}


@dataclass(frozen=True, slots=True)
class Member:
    """One person's role on one case."""

    case: str
    login: str
    display_name: str
    role: CaseRole
    granted: str
    granted_by: str
    disabled: bool

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "login": self.login, "display_name": self.display_name,
                "role": self.role.value, "granted": self.granted,
                "granted_by": self.granted_by, "disabled": self.disabled}


@dataclass(frozen=True, slots=True)
class TokenView:
    """An API token as listed: never its secret, never its hash."""

    id: str
    login: str
    label: str | None
    scope: Scope
    cases: tuple[str, ...] | None
    """Case names it is limited to (``unfiled`` included); None: every case of its owner."""
    created: str
    created_by: str
    expires: str | None
    revoked: str | None
    last_used: str | None

    def state(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= rfc3339(now):
            return "expired"
        return "active"

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "login": self.login, "label": self.label,
                "scope": self.scope.value,
                "cases": None if self.cases is None else list(self.cases),
                "created": self.created, "created_by": self.created_by,
                "expires": self.expires, "revoked": self.revoked,
                "last_used": self.last_used}


def _pg_key(text: str) -> int:
    value = zlib.crc32(text.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


def token_hash(secret: str) -> str:
    """How a token is stored and looked up: SHA-256 hex of its text."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def check_login_name(login: str) -> str:
    """``login`` when it is a valid login name, else :class:`InvalidName`."""
    if not isinstance(login, str) or not _LOGIN.fullmatch(login):
        raise InvalidName(
            f"invalid login name {printable(str(login)[:80])!r}: 1 to 64 characters, "
            "lower-case letters a-z, digits and . _ -, starting with a letter or digit")
    return login


class People:
    """Accounts, cases, memberships, tokens and authentication of one open archive.

    ``actor`` is who does what this object is asked (``user:<login>`` of a signed-in
    admin, or the CLI's operator); ``context`` (e.g. :meth:`Principal.context`) is
    recorded in every ledger payload under ``"context"``. Methods that change anything
    need the archive's signing key (they append to the ledger) and load it before they
    change a row.
    """

    def __init__(self, archive: Archive, *, actor: str,
                 context: Mapping[str, str] | None = None) -> None:
        if not actor:
            raise ValueError("People needs an actor")
        self.archive = archive
        self.actor = actor
        self.context = dict(context) if context else None
        self.auth = archive.settings.auth

    # -- helpers --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.archive.clock()

    def _payload(self, payload: dict[str, Any], context: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
        chosen = self.context if context is None else dict(context)
        if chosen:
            payload["context"] = chosen
        return payload

    def _record(self, conn: sa.Connection, action: str, subject: str,
                payload: dict[str, Any], *, actor: str | None = None,
                context: Mapping[str, str] | None = None) -> None:
        self.archive.ledger.append(actor=actor or self.actor, action=action, subject=subject,
                                   payload=self._payload(payload, context), connection=conn)

    def _ready(self) -> None:
        """Load the signing key before any row changes: no change goes unrecorded."""
        self.archive.ledger.signing_key()

    def _user_row(self, conn: sa.Connection, login: str) -> Any:
        u = models.users
        row = conn.execute(sa.select(u).where(u.c.login == login)).first()
        if row is None:
            raise UnknownUser(f"no user {printable(login[:80])!r}")
        return row

    def _user_row_by_id(self, conn: sa.Connection, user_id: int) -> Any:
        u = models.users
        row = conn.execute(sa.select(u).where(u.c.id == user_id)).first()
        if row is None:
            raise UnknownUser(f"no user with id {user_id}")
        return row

    def _view(self, row: Any) -> UserView:
        role = None if row.archive_role is None else ArchiveRole(row.archive_role)
        return UserView(
            id=row.id, login=row.login, display_name=row.display_name, archive_role=role,
            disabled=bool(row.disabled), created=row.created, created_by=row.created_by,
            password_changed=row.password_changed, locked_until=row.locked_until,
            mfa_enrolled=row.totp_enrolled is not None,
            mfa_required=role is ArchiveRole.ADMIN or self.auth.require_mfa,
        )

    @staticmethod
    def _end_sessions(conn: sa.Connection, user_id: int) -> None:
        conn.execute(sa.delete(models.web_sessions)
                     .where(models.web_sessions.c.user_id == user_id))

    def _case_id(self, conn: sa.Connection, name: str) -> int:
        if name == UNFILED:
            return models.UNFILED_CASE_ID
        found = conn.execute(sa.select(models.cases.c.id)
                             .where(models.cases.c.name == name)).scalar_one_or_none()
        if found is None:
            raise UnknownCase(f"no case {printable(name[:_MAX_CASE_NAME])!r}")
        return int(found)

    @staticmethod
    def _case_names(conn: sa.Connection, ids: Sequence[int]) -> dict[int, str]:
        names = {models.UNFILED_CASE_ID: UNFILED}
        wanted = [i for i in ids if i != models.UNFILED_CASE_ID]
        if wanted:
            c = models.cases
            for row in conn.execute(sa.select(c.c.id, c.c.name).where(c.c.id.in_(wanted))):
                names[row.id] = row.name
        return names

    # -- users ----------------------------------------------------------------------------

    def add_user(self, login: str, *, display_name: str | None = None, password: str,
                 archive_role: ArchiveRole | None = None) -> UserView:
        """Create a person. Raises :class:`InvalidName`, :class:`NameTaken`,
        :class:`WeakPassword`; ledger ``user.created``."""
        check_login_name(login)
        display = login if display_name is None else display_name.strip()
        check_text(display, "the display name", max_length=200)
        if not display:
            raise InvalidName("the display name is empty")
        passwords.check_password(password, login=login,
                                 min_length=self.auth.min_password_length)
        hashed = passwords.hash_password(password)  # before the transaction: it is slow
        self._ready()
        stamp = rfc3339(self._now())
        u = models.users
        with self.archive.engine.begin() as conn:
            if conn.execute(sa.select(u.c.id).where(u.c.login == login)).first() is not None:
                raise NameTaken(f"a user {login!r} already exists")
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(u).values(
                        login=login, display_name=display, password_hash=hashed,
                        archive_role=None if archive_role is None else archive_role.value,
                        disabled=False, created=stamp, created_by=self.actor,
                        password_changed=stamp))
            except sa.exc.IntegrityError:  # created by someone else a moment ago
                raise NameTaken(f"a user {login!r} already exists") from None
            self._record(conn, "user.created", f"user:{login}", {
                "login": login, "display_name": display,
                "archive_role": None if archive_role is None else archive_role.value})
            row = self._user_row(conn, login)
        return self._view(row)

    def list_users(self) -> list[UserView]:
        """Every person, by login name."""
        with self.archive.reader.connect() as conn:
            rows = conn.execute(sa.select(models.users).order_by(models.users.c.login)).all()
        return [self._view(row) for row in rows]

    def get_user(self, login: str) -> UserView:
        """Raises :class:`UnknownUser`."""
        with self.archive.reader.connect() as conn:
            return self._view(self._user_row(conn, login))

    def get_user_by_id(self, user_id: int) -> UserView:
        """Raises :class:`UnknownUser`."""
        with self.archive.reader.connect() as conn:
            return self._view(self._user_row_by_id(conn, user_id))

    def _set_disabled(self, login: str, disabled: bool) -> UserView:
        self._ready()
        u = models.users
        with self.archive.engine.begin() as conn:
            row = self._user_row(conn, login)
            conn.execute(sa.update(u).where(u.c.id == row.id).values(disabled=disabled))
            if disabled:
                self._end_sessions(conn, row.id)
            self._record(conn, "user.disabled" if disabled else "user.enabled",
                         f"user:{login}", {"login": login})
            return self._view(self._user_row(conn, login))

    def disable_user(self, login: str) -> UserView:
        """Disable a person: their sessions end, their tokens are refused from now on.
        Raises :class:`UnknownUser`; ledger ``user.disabled``."""
        return self._set_disabled(login, True)

    def enable_user(self, login: str) -> UserView:
        """Raises :class:`UnknownUser`; ledger ``user.enabled``."""
        return self._set_disabled(login, False)

    def reset_password(self, login: str, password: str) -> None:
        """Set a new password (an admin's act); ends the person's sessions and lifts a
        lockout. Raises :class:`UnknownUser`, :class:`WeakPassword`; ledger
        ``user.password_reset`` (never the password)."""
        with self.archive.reader.connect() as conn:
            self._user_row(conn, login)
        passwords.check_password(password, login=login,
                                 min_length=self.auth.min_password_length)
        self._write_password(login, passwords.hash_password(password), "user.password_reset")

    def change_password(self, user_id: int, old: str, new: str) -> None:
        """The person themself changes their password, proving the old one. Raises
        :class:`LoginRefused` (reason ``wrong-password``) or :class:`WeakPassword`;
        ends their sessions (the web app opens a fresh one); ledger
        ``user.password_reset`` with ``"by": "self"``."""
        with self.archive.reader.connect() as conn:
            row = self._user_row_by_id(conn, user_id)
        if not passwords.verify_password(row.password_hash, old):
            raise LoginRefused("wrong-password", "the current password is wrong")
        passwords.check_password(new, login=row.login,
                                 min_length=self.auth.min_password_length)
        self._write_password(row.login, passwords.hash_password(new), "user.password_reset",
                             by_self=True)

    def _write_password(self, login: str, hashed: str, action: str, *,
                        by_self: bool = False) -> None:
        self._ready()
        u = models.users
        with self.archive.engine.begin() as conn:
            row = self._user_row(conn, login)
            conn.execute(sa.update(u).where(u.c.id == row.id).values(
                password_hash=hashed, password_changed=rfc3339(self._now()),
                locked_until=None))
            conn.execute(sa.delete(models.login_failures)
                         .where(models.login_failures.c.login == login))
            self._end_sessions(conn, row.id)
            payload: dict[str, Any] = {"login": login}
            if by_self:
                payload["by"] = "self"
            self._record(conn, action, f"user:{login}", payload)

    def reset_mfa(self, login: str) -> UserView:
        """Remove a person's second factor (lost phone): they enrol again at their next
        login; their sessions end. Raises :class:`UnknownUser`; ledger ``user.mfa_reset``."""
        self._ready()
        u = models.users
        with self.archive.engine.begin() as conn:
            row = self._user_row(conn, login)
            conn.execute(sa.update(u).where(u.c.id == row.id).values(
                totp_secret=None, totp_enrolled=None, totp_last_step=None))
            self._end_sessions(conn, row.id)
            self._record(conn, "user.mfa_reset", f"user:{login}", {"login": login})
            return self._view(self._user_row(conn, login))

    # -- cases and memberships ------------------------------------------------------------

    def add_case(self, name: str) -> CaseView:
        """Create a case. Raises :class:`InvalidName` (``unfiled``, in any letter case,
        is reserved: :func:`archiver.cases.check_case_name`),
        :class:`NameTaken`; ledger ``case.created``."""
        check_text(name, "the case name", max_length=_MAX_CASE_NAME)
        if not name.strip() or name != name.strip():
            raise InvalidName("a case name must not be empty or start or end with spaces")
        try:
            check_case_name(name)
        except ReservedCaseName as exc:
            raise InvalidName(str(exc)) from None
        self._ready()
        c = models.cases
        stamp = rfc3339(self._now())
        with self.archive.engine.begin() as conn:
            if conn.execute(sa.select(c.c.id).where(c.c.name == name)).first() is not None:
                raise NameTaken(f"a case {printable(name)!r} already exists")
            try:
                with conn.begin_nested():
                    inserted = conn.execute(sa.insert(c).values(name=name, created=stamp))
            except sa.exc.IntegrityError:
                raise NameTaken(f"a case {printable(name)!r} already exists") from None
            key = inserted.inserted_primary_key
            assert key is not None
            self._record(conn, "case.created", f"case:{name}", {"case": name})
        return CaseView(int(key[0]), name, stamp, 0)

    def list_cases(self) -> list[CaseView]:
        """Every case by name (the ``unfiled`` pseudo-case is not listed: see
        :meth:`get_case`)."""
        c, m = models.cases, models.case_members
        count = (sa.select(sa.func.count()).where(m.c.case_id == c.c.id)
                 .scalar_subquery())
        with self.archive.reader.connect() as conn:
            rows = conn.execute(sa.select(c.c.id, c.c.name, c.c.created,
                                          count.label("members")).order_by(c.c.name)).all()
        return [CaseView(r.id, r.name, r.created, int(r.members)) for r in rows]

    def get_case(self, name: str) -> CaseView:
        """A case by name; ``unfiled`` is the pseudo-case (id 0). Raises
        :class:`UnknownCase`."""
        m = models.case_members
        with self.archive.reader.connect() as conn:
            case_id = self._case_id(conn, name)
            created = None if case_id == models.UNFILED_CASE_ID else conn.execute(
                sa.select(models.cases.c.created).where(models.cases.c.id == case_id)
            ).scalar_one()
            members = conn.execute(sa.select(sa.func.count())
                                   .where(m.c.case_id == case_id)).scalar_one()
        return CaseView(case_id, name, created, int(members))

    def grant(self, case_name: str, login: str, role: CaseRole) -> Member:
        """Give ``login`` the role ``role`` on a case (replacing the role they had).
        Raises :class:`UnknownCase`, :class:`UnknownUser`; ledger ``role.granted``
        (with ``previous`` when a role was replaced)."""
        role = CaseRole(role)
        self._ready()
        m = models.case_members
        stamp = rfc3339(self._now())
        with self.archive.engine.begin() as conn:
            case_id = self._case_id(conn, case_name)
            user = self._user_row(conn, login)
            previous = conn.execute(sa.select(m.c.role).where(
                m.c.case_id == case_id, m.c.user_id == user.id)).scalar_one_or_none()
            if previous is None:
                conn.execute(sa.insert(m).values(case_id=case_id, user_id=user.id,
                                                 role=role.value, granted=stamp,
                                                 granted_by=self.actor))
            else:
                conn.execute(sa.update(m).where(m.c.case_id == case_id,
                                                m.c.user_id == user.id)
                             .values(role=role.value, granted=stamp, granted_by=self.actor))
            payload: dict[str, Any] = {"case": case_name, "login": login, "role": role.value}
            if previous is not None:
                payload["previous"] = previous
            self._record(conn, "role.granted", f"case:{case_name}", payload)
        return Member(case_name, login, user.display_name, role, stamp, self.actor,
                      bool(user.disabled))

    def revoke(self, case_name: str, login: str) -> CaseRole:
        """Take ``login``'s role on a case away; their sessions end. Returns the role
        they had. Raises :class:`UnknownCase`, :class:`UnknownUser`,
        :class:`NoMembership`; ledger ``role.revoked``."""
        self._ready()
        m = models.case_members
        with self.archive.engine.begin() as conn:
            case_id = self._case_id(conn, case_name)
            user = self._user_row(conn, login)
            had = conn.execute(sa.select(m.c.role).where(
                m.c.case_id == case_id, m.c.user_id == user.id)).scalar_one_or_none()
            if had is None:
                raise NoMembership(f"{login} has no role on case {printable(case_name)!r}")
            conn.execute(sa.delete(m).where(m.c.case_id == case_id, m.c.user_id == user.id))
            self._end_sessions(conn, user.id)
            self._record(conn, "role.revoked", f"case:{case_name}",
                         {"case": case_name, "login": login, "role": had})
        return CaseRole(had)

    def members(self, case_name: str) -> list[Member]:
        """The people with a role on a case (``unfiled``: the pseudo-case), by login.
        Raises :class:`UnknownCase`."""
        m, u = models.case_members, models.users
        with self.archive.reader.connect() as conn:
            case_id = self._case_id(conn, case_name)
            rows = conn.execute(
                sa.select(m.c.role, m.c.granted, m.c.granted_by, u.c.login,
                          u.c.display_name, u.c.disabled)
                .join(u, u.c.id == m.c.user_id).where(m.c.case_id == case_id)
                .order_by(u.c.login)).all()
        return [Member(case_name, r.login, r.display_name, CaseRole(r.role), r.granted,
                       r.granted_by, bool(r.disabled)) for r in rows]

    def case_roles(self, user_id: int) -> dict[int, CaseRole]:
        """A person's roles by case id (0: unfiled)."""
        m = models.case_members
        with self.archive.reader.connect() as conn:
            rows = conn.execute(sa.select(m.c.case_id, m.c.role)
                                .where(m.c.user_id == user_id)).all()
        return {int(r.case_id): CaseRole(r.role) for r in rows}

    # -- API tokens -----------------------------------------------------------------------

    def create_token(
        self, login: str, *, scope: Scope, cases: Sequence[str] | None = None,
        expires_in: timedelta | Literal["never"] | None = None, label: str | None = None,
    ) -> tuple[TokenView, str]:
        """A new API token of ``login``: returns it and its secret, which is shown once
        and never stored (only its SHA-256).

        ``cases``: case names the token is limited to (``unfiled`` allowed; None: every
        case its owner has a role on). ``expires_in``: None for ``auth.token_days``,
        :data:`NEVER` for no expiry. Raises :class:`UnknownUser`, :class:`UnknownCase`,
        :class:`BadInput` (a disabled owner, a label or lifetime that is not acceptable);
        ledger ``token.created``.
        """
        scope = Scope(scope)
        if label is not None:
            check_text(label, "the token label", max_length=_MAX_LABEL)
        now = self._now()
        if expires_in is None:
            expires: str | None = rfc3339(now + timedelta(days=self.auth.token_days))
        elif expires_in == NEVER:
            expires = None
        elif isinstance(expires_in, timedelta) and expires_in > timedelta(0):
            try:
                expires = rfc3339(now + expires_in)
            except OverflowError:
                raise BadInput("the token lifetime is too long; use 'never' for a token "
                               "that does not expire") from None
        else:
            raise BadInput(f"not a token lifetime: {expires_in!r}")
        self._ready()
        token_id = "tok_" + secrets.token_hex(5)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        t = models.api_tokens
        with self.archive.engine.begin() as conn:
            user = self._user_row(conn, login)
            if user.disabled:
                raise BadInput(f"user {login} is disabled; enable them before creating a "
                               "token")
            case_ids = None if cases is None else sorted({self._case_id(conn, n)
                                                         for n in cases})
            conn.execute(sa.insert(t).values(
                id=token_id, user_id=user.id, sha256=token_hash(secret), label=label,
                scope=scope.value,
                case_ids=None if case_ids is None else json.dumps(case_ids),
                created=rfc3339(now), created_by=self.actor, expires=expires))
            names = None if case_ids is None else self._case_names(conn, case_ids)
            case_names = None if names is None or case_ids is None else tuple(
                sorted(names[i] for i in case_ids))
            self._record(conn, "token.created", f"token:{token_id}", {
                "token_id": token_id, "login": login, "scope": scope.value,
                "cases": None if case_names is None else list(case_names),
                "expires": expires})
        view = TokenView(token_id, login, label, scope, case_names, rfc3339(now), self.actor,
                         expires, None, None)
        return view, secret

    def list_tokens(self, login: str | None = None) -> list[TokenView]:
        """Every token (of ``login``), newest first: never a secret or a hash. Raises
        :class:`UnknownUser`."""
        t, u = models.api_tokens, models.users
        query = (sa.select(t.c.id, t.c.label, t.c.scope, t.c.case_ids, t.c.created,
                           t.c.created_by, t.c.expires, t.c.revoked, t.c.last_used,
                           u.c.login)
                 .join(u, u.c.id == t.c.user_id).order_by(t.c.created.desc(), t.c.id))
        with self.archive.reader.connect() as conn:
            if login is not None:
                user = self._user_row(conn, login)
                query = query.where(t.c.user_id == user.id)
            rows = conn.execute(query).all()
            ids = sorted({i for r in rows if r.case_ids for i in json.loads(r.case_ids)})
            names = self._case_names(conn, ids)
        return [self._token_view(r, names) for r in rows]

    @staticmethod
    def _token_view(row: Any, names: Mapping[int, str]) -> TokenView:
        cases = None if row.case_ids is None else tuple(sorted(
            names.get(i, f"#{i}") for i in json.loads(row.case_ids)))
        return TokenView(row.id, row.login, row.label, Scope(row.scope), cases, row.created,
                         row.created_by, row.expires, row.revoked, row.last_used)

    def revoke_token(self, token_id: str) -> TokenView:
        """Revoke a token (from now on refused). Raises :class:`UnknownToken`, or
        :class:`BadInput` if it is revoked already; ledger ``token.revoked``."""
        self._ready()
        t, u = models.api_tokens, models.users
        stamp = rfc3339(self._now())
        with self.archive.engine.begin() as conn:
            row = conn.execute(
                sa.select(t.c.id, t.c.label, t.c.scope, t.c.case_ids, t.c.created,
                          t.c.created_by, t.c.expires, t.c.revoked, t.c.last_used,
                          u.c.login)
                .join(u, u.c.id == t.c.user_id).where(t.c.id == token_id)).first()
            if row is None:
                raise UnknownToken(f"no token {printable(token_id[:80])!r}")
            if row.revoked is not None:
                raise BadInput(f"token {token_id} was revoked already, at {row.revoked}")
            conn.execute(sa.update(t).where(t.c.id == token_id).values(revoked=stamp))
            self._record(conn, "token.revoked", f"token:{token_id}",
                         {"token_id": token_id, "login": row.login})
            names = self._case_names(conn, json.loads(row.case_ids) if row.case_ids else [])
        view = self._token_view(row, names)
        return TokenView(view.id, view.login, view.label, view.scope, view.cases, view.created,
                         view.created_by, view.expires, stamp, view.last_used)

    # -- authentication -------------------------------------------------------------------

    def _refuse(self, error: LoginRefused | TokenRefused, *, subject: str,
                login: str | None, client: str, failure: str | None = None,
                token_id: str | None = None) -> NoReturn:
        """Record a refused attempt, then raise ``error``: ``auth.failed`` {login (at most
        64 characters, escaped), reason, context} on the ledger, and, when ``failure``
        names a login (or the token marker), a login_failures row that counts towards
        the client's rate limit (and that login's lockout)."""
        now = self._now()
        context = dict(self.context or {})
        context["client"] = client
        payload: dict[str, Any] = {"login": login, "reason": error.reason}
        if token_id is not None:
            payload["token_id"] = token_id
        self._ready()
        with self.archive.engine.begin() as conn:
            self._prune(conn, now)
            if failure is not None:
                conn.execute(sa.insert(models.login_failures).values(
                    login=failure[:64], client=client[:64], at=rfc3339(now)))
            self._record(conn, "auth.failed", subject, payload, context=context)
        raise error

    def _refuse_limited(self, error: LoginRefused | TokenRefused, *, subject: str,
                        login: str | None, client: str) -> NoReturn:
        """Refuse an attempt the client's rate limit stopped unchecked, then raise
        ``error``. At most one ``auth.failed`` {login, reason ``rate-limited``, count,
        context} per client address per minute: ``count`` is this attempt and those
        refused unchecked from the address since its previous such entry.

        Threat model: an attempt refused unchecked says nothing about any account, and
        one entry per attempt let anyone spraying from many addresses fill the signed,
        append-only ledger; a count a minute per address keeps the evidence of the
        attack at a bounded cost. (Refusals after an address's last entry are counted in
        ``rate_limited_clients`` until its next one.)"""
        now = self._now()
        now_s = rfc3339(now)
        key = client[:64]
        r = models.rate_limited_clients
        self._ready()
        with self.archive.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # two refusals at once must not both find the minute free (SQLite
                # serialises writing transactions already)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                    _PG_RATE_LIMIT_LOCK, _pg_key(key))))
            row = conn.execute(sa.select(r).where(r.c.client == key)).first()
            if row is not None and row.recorded_at > rfc3339(now - _RATE_LIMITED_EVERY):
                conn.execute(sa.update(r).where(r.c.client == key)
                             .values(unrecorded=r.c.unrecorded + 1))
            else:
                self._record_limited(conn, error, row, subject=subject, login=login,
                                     client=client, now_s=now_s)
        raise error

    def _record_limited(self, conn: sa.Connection, error: LoginRefused | TokenRefused,
                        row: Any, *, subject: str, login: str | None, client: str,
                        now_s: str) -> None:
        """Append the address's ``auth.failed`` rate-limited entry of this minute
        (``row``: its ``rate_limited_clients`` row, if any)."""
        r = models.rate_limited_clients
        key = client[:64]
        count = 1 + (row.unrecorded if row is not None else 0)
        if row is None:
            conn.execute(sa.insert(r).values(client=key, recorded_at=now_s, unrecorded=0))
        else:
            conn.execute(sa.update(r).where(r.c.client == key)
                         .values(recorded_at=now_s, unrecorded=0))
        context = dict(self.context or {})
        context["client"] = client
        self._record(conn, "auth.failed", subject,
                     {"login": login, "reason": error.reason, "count": count},
                     context=context)

    def _client_limited(self, conn: sa.Connection, client: str, now: datetime) -> bool:
        """Has ``client`` failed too often in the last minute? Reads only (it runs
        before every token check: a write here would serialise every API request)."""
        f = models.login_failures
        recent = conn.execute(sa.select(sa.func.count()).where(
            f.c.client == client[:64], f.c.at > rfc3339(now - timedelta(minutes=1)))
        ).scalar_one()
        return int(recent) >= self.auth.client_failures_per_minute

    @staticmethod
    def _prune(conn: sa.Connection, now: datetime) -> None:
        """Forget failures older than a day (they count for nothing): done where a
        failure is written, which keeps the table small without a write per request."""
        f, r = models.login_failures, models.rate_limited_clients
        conn.execute(sa.delete(f).where(f.c.at < rfc3339(now - FAILURE_MEMORY)))
        conn.execute(sa.delete(r).where(r.c.recorded_at < rfc3339(now - FAILURE_MEMORY)))

    def login(self, login: str, password: str, *, client: str,
              totp: str | None = None, defer_totp: bool = False) -> UserView:
        """Check a password login (and its TOTP code, for a person who enrolled one).

        ``defer_totp`` (the web's two-step login): a person who enrolled a second factor
        and gave no code is let in with method ``password`` and ``"mfa": "pending"`` on
        the ``auth.login`` entry; the web session then allows nothing but
        :meth:`second_factor` (and logging out) until the code is given.

        Returns the person; ledger ``auth.login`` {context, method}. The caller looks at
        :attr:`UserView.mfa_required` and :attr:`UserView.mfa_enrolled`: a person who
        must have a second factor and has none may only enrol one (:meth:`begin_totp`).

        Raises :class:`LoginRefused` with the same message whatever the reason (but
        ``rate-limited``, about the client address only), recorded as ``auth.failed``
        {login, reason, context}: ``unknown-user``, ``wrong-password``, ``disabled``,
        ``locked``, ``rate-limited``, ``mfa-required`` (enrolled, no code given: the
        message asks for the code), ``wrong-totp``. An unknown login is checked against
        a stand-in hash, so that it takes as long as a wrong password. Refusals by the
        rate limit, unchecked, are recorded at most once a minute per client address,
        with a count (:meth:`_refuse_limited`).
        """
        now = self._now()
        u = models.users
        shown = printable(login[:64])
        refuse = partial(self._refuse, subject=f"user:{shown}", login=shown, client=client)
        with self.archive.engine.begin() as conn:
            limited = self._client_limited(conn, client, now)
            row = None if limited else conn.execute(
                sa.select(u).where(u.c.login == login)).first()
        if limited:
            self._refuse_limited(LoginRefused("rate-limited", RATE_LIMITED_MESSAGE),
                                 subject=f"user:{shown}", login=shown, client=client)
        if row is None:
            passwords.verify_password(passwords.dummy_hash(), password)
            refuse(LoginRefused("unknown-user"), failure=shown)
        good = passwords.verify_password(row.password_hash, password)
        if row.locked_until is not None and row.locked_until > rfc3339(now):
            refuse(LoginRefused("locked"), failure=None if good else row.login)
        if not good:
            self._count_failure_and_lock(row, client, now)
            refuse(LoginRefused("wrong-password"))
        if row.disabled:
            refuse(LoginRefused("disabled"))
        method = "password"
        if row.totp_enrolled is not None and not (totp is None and defer_totp):
            if totp is None:
                refuse(LoginRefused("mfa-required",
                                    "enter the one-time code of your authenticator app"))
            if not self.check_totp(row.id, totp):
                self._count_failure_and_lock(row, client, now)
                refuse(LoginRefused("wrong-totp", "wrong one-time code"))
            method = "password+totp"
        self._ready()
        context = dict(self.context or {})
        context["client"] = client
        with self.archive.engine.begin() as conn:
            updates: dict[str, Any] = {"locked_until": None}
            if passwords.needs_rehash(row.password_hash):
                updates["password_hash"] = passwords.hash_password(password)
            conn.execute(sa.update(u).where(u.c.id == row.id).values(**updates))
            conn.execute(sa.delete(models.login_failures)
                         .where(models.login_failures.c.login == row.login))
            payload: dict[str, Any] = {"method": method}
            if row.totp_enrolled is not None and method == "password":
                payload["mfa"] = "pending"
            self._record(conn, "auth.login", f"user:{row.login}", payload,
                         actor=actor_for(row.login), context=context)
            return self._view(self._user_row_by_id(conn, row.id))

    def second_factor(self, user_id: int, code: str, *, client: str) -> UserView:
        """The second step of a login begun with ``defer_totp``: the person's current
        TOTP code. Ledger ``auth.mfa_passed`` {context}.

        Raises :class:`LoginRefused` (recorded as ``auth.failed``): ``wrong-totp``
        (counted towards the login's lockout and the client's rate limit), ``locked``,
        ``disabled``, ``rate-limited`` (recorded at most once a minute per address,
        with a count); :class:`UnknownUser`.
        """
        now = self._now()
        with self.archive.engine.begin() as conn:
            limited = self._client_limited(conn, client, now)
            row = self._user_row_by_id(conn, user_id)
        refuse = partial(self._refuse, subject=f"user:{row.login}", login=row.login,
                         client=client)
        if limited:
            self._refuse_limited(LoginRefused("rate-limited", RATE_LIMITED_MESSAGE),
                                 subject=f"user:{row.login}", login=row.login, client=client)
        if row.disabled:
            refuse(LoginRefused("disabled", "this account is disabled"))
        if row.locked_until is not None and row.locked_until > rfc3339(now):
            refuse(LoginRefused("locked", "too many failed attempts: this account is locked "
                                          "for a while; try again later"))
        if not self.check_totp(row.id, code):
            self._count_failure_and_lock(row, client, now)
            refuse(LoginRefused("wrong-totp", "wrong one-time code"))
        self._ready()
        context = dict(self.context or {})
        context["client"] = client
        with self.archive.engine.begin() as conn:
            self._record(conn, "auth.mfa_passed", f"user:{row.login}", {"method": "totp"},
                         actor=actor_for(row.login), context=context)
            return self._view(self._user_row_by_id(conn, row.id))

    def _count_failure_and_lock(self, row: Any, client: str, now: datetime) -> None:
        """Count one failure of a known login; lock it when there have been
        ``auth.lockout_after`` within ``auth.lockout_minutes``."""
        f, u = models.login_failures, models.users
        window = timedelta(minutes=self.auth.lockout_minutes)
        with self.archive.engine.begin() as conn:
            conn.execute(sa.insert(f).values(login=row.login, client=client[:64],
                                             at=rfc3339(now)))
            failures = conn.execute(sa.select(sa.func.count()).where(
                f.c.login == row.login, f.c.at > rfc3339(now - window))).scalar_one()
            if int(failures) >= self.auth.lockout_after:
                conn.execute(sa.update(u).where(u.c.id == row.id)
                             .values(locked_until=rfc3339(now + window)))

    # -- TOTP -----------------------------------------------------------------------------

    def _totp(self, row: Any) -> Any:
        import pyotp

        secret = decrypt_totp_secret(web_secret(self.archive.settings), row.id,
                                     row.totp_secret)
        return pyotp.TOTP(secret, interval=TOTP_STEP_SECONDS)

    def _matching_step(self, row: Any, code: str) -> int | None:
        """The 30-second step (current, or one either side) whose code is ``code``."""
        if row.totp_secret is None or not re.fullmatch(r"[0-9]{6}", code or ""):
            return None
        totp = self._totp(row)
        now = self._now()
        current = int(now.timestamp()) // TOTP_STEP_SECONDS
        found = None
        for step in (current - 1, current, current + 1):  # valid_window=1
            # every candidate compared, in constant time, whichever matches
            if hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
                found = step
        return found

    def check_totp(self, user_id: int, code: str) -> bool:
        """Whether ``code`` is the enrolled person's current TOTP code (or the one of the
        step either side). Each step's code is good once: a code seen before is refused."""
        u = models.users
        with self.archive.reader.connect() as conn:
            row = self._user_row_by_id(conn, user_id)
        if row.totp_enrolled is None:
            return False
        step = self._matching_step(row, code)
        if step is None:
            return False
        with self.archive.engine.begin() as conn:
            used = conn.execute(
                sa.update(u).where(
                    u.c.id == user_id,
                    sa.or_(u.c.totp_last_step.is_(None), u.c.totp_last_step < step))
                .values(totp_last_step=step))
        return used.rowcount == 1

    def begin_totp(self, user_id: int) -> str:
        """Start enrolling a second factor: a new secret, stored encrypted and pending
        until :meth:`confirm_totp`; returns the ``otpauth://`` URI to show as a QR code.
        Raises :class:`BadInput` if one is enrolled already (an admin resets it)."""
        import pyotp

        u = models.users
        with self.archive.engine.begin() as conn:
            row = self._user_row_by_id(conn, user_id)
            if row.totp_enrolled is not None:
                raise BadInput("a second factor is enrolled already; an admin removes it "
                               "with 'archiver user mfa reset'")
            secret = pyotp.random_base32()
            stored = encrypt_totp_secret(web_secret(self.archive.settings), row.id, secret)
            conn.execute(sa.update(u).where(u.c.id == user_id).values(
                totp_secret=stored, totp_last_step=None))
        return pyotp.TOTP(secret, interval=TOTP_STEP_SECONDS).provisioning_uri(
            name=row.login, issuer_name=f"Evidence Archiver ({self.archive.origin})")

    def confirm_totp(self, user_id: int, code: str) -> UserView:
        """Finish enrolling: ``code`` must be the pending secret's current code. Raises
        :class:`MfaCodeRejected`, or :class:`BadInput` when no enrolment was begun;
        ledger ``auth.mfa_enrolled``."""
        u = models.users
        with self.archive.reader.connect() as conn:
            row = self._user_row_by_id(conn, user_id)
        if row.totp_enrolled is not None:
            raise BadInput("a second factor is enrolled already")
        if row.totp_secret is None:
            raise BadInput("no enrolment was begun: ask for a new secret first")
        step = self._matching_step(row, code)
        if step is None:
            raise MfaCodeRejected("the code does not match: check the device's clock and "
                                  "enter the code it shows now")
        self._ready()
        with self.archive.engine.begin() as conn:
            done = conn.execute(sa.update(u).where(
                u.c.id == user_id, u.c.totp_enrolled.is_(None),
                u.c.totp_secret == row.totp_secret,
            ).values(totp_enrolled=rfc3339(self._now()), totp_last_step=step))
            if done.rowcount != 1:
                raise BadInput("the enrolment changed meanwhile; begin again")
            self._record(conn, "auth.mfa_enrolled", f"user:{row.login}",
                         {"login": row.login})
            return self._view(self._user_row_by_id(conn, user_id))

    # -- who is asking --------------------------------------------------------------------

    def resolve_token(self, secret: str, *, client: str) -> Principal:
        """The person an API token stands for, within its scope and case limits.

        Raises :class:`TokenRefused` (recorded as ``auth.failed``): ``token-unknown``,
        ``token-expired``, ``token-revoked``, ``disabled`` (its owner), ``rate-limited``
        (too many refused attempts from ``client``; recorded at most once a minute per
        address, with a count). Records the time of use.
        """
        now = self._now()
        t, u = models.api_tokens, models.users
        with self.archive.reader.connect() as conn:
            limited = self._client_limited(conn, client, now)
            row = None if limited else conn.execute(
                sa.select(t, u.c.login, u.c.disabled)
                .join(u, u.c.id == t.c.user_id)
                .where(t.c.sha256 == token_hash(secret))).first()
        if limited:
            self._refuse_limited(TokenRefused("rate-limited", RATE_LIMITED_MESSAGE),
                                 subject="token:unknown", login=None, client=client)
        if row is None:
            self._refuse(TokenRefused("token-unknown"), subject="token:unknown", login=None,
                         client=client, failure=_TOKEN_CLIENT_LOGIN)
        if row.revoked is not None:
            reason = "token-revoked"
        elif row.expires is not None and row.expires <= rfc3339(now):
            reason = "token-expired"
        elif row.disabled:
            reason = "disabled"
        else:
            reason = None
        if reason is not None:
            self._refuse(TokenRefused(reason), subject=f"token:{row.id}", login=row.login,
                         client=client, token_id=row.id)
        if row.last_used is None or row.last_used <= rfc3339(now - LAST_USED_EVERY):
            # the time of use, to the minute: a busy token writes once a minute, not on
            # every request
            with self.archive.engine.begin() as conn:
                conn.execute(sa.update(t).where(t.c.id == row.id)
                             .values(last_used=rfc3339(now)))
        case_ids = None if row.case_ids is None else frozenset(json.loads(row.case_ids))
        grant = TokenGrant(row.id, Scope(row.scope), case_ids)
        return self.principal(row.user_id, client=client, token=grant)

    def principal(self, user_id: int, *, session_id: str | None = None,
                  client: str | None = None, token: TokenGrant | None = None) -> Principal:
        """The :class:`Principal` of a person for one request, with their case roles.
        Raises :class:`UnknownUser`, or :class:`AccountDisabled`."""
        with self.archive.reader.connect() as conn:
            row = self._user_row_by_id(conn, user_id)
        if row.disabled:
            raise AccountDisabled(row.login)
        role = None if row.archive_role is None else ArchiveRole(row.archive_role)
        return Principal(user_id=row.id, login=row.login, archive_role=role,
                         case_roles=self.case_roles(row.id), token=token,
                         session_id=session_id, client=client)


__all__ = [
    "NEVER",
    "UNFILED",
    "CaseView",
    "Member",
    "People",
    "TokenView",
    "UserView",
    "check_login_name",
    "token_hash",
]
