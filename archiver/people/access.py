"""Who may do what: the one place that decides, from (person, action, case).

Every route of the HTTP API and every page of the web application declares one
:class:`Action`; :func:`decide` is the only code that says yes or no. Pure: no database,
no clock, no request. The callers resolve the :class:`Principal` (who is asking, through
what: a session or a token) and the case a resource belongs to, then ask.

Threat model, next to the code that defends against it:

- *A member of one case fishing for another case's evidence* (guessing capture ids,
  case names): every refusal that concerns a case the person is not a member of answers
  :data:`NOT_FOUND`, exactly as if the capture or case did not exist, so a case's
  existence is never revealed to a non-member.
- *An admin as a backdoor*: ``admin`` manages accounts, memberships, tokens and keys,
  and sees content only of cases they are a member of.
- *An auditor reading evidence*: ``auditor`` checks integrity anywhere (verification,
  the whole ledger, checkpoints, proofs) but reads content only as a member.
- *A stolen token*: a token carries a scope (``read`` < ``submit``, ``read`` <
  ``export``) and optional case limits; it never manages accounts, memberships or
  tokens (those need a signed-in session, with its second factor).
- *A disabled person, an expired or revoked token*: the resolver refuses them before
  they become a :class:`Principal` (401).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from archiver.models import UNFILED_CASE_ID


class CaseRole(enum.StrEnum):
    """A person's role on one case."""

    INVESTIGATOR = "investigator"
    LEGAL = "legal"
    VIEWER = "viewer"


class ArchiveRole(enum.StrEnum):
    """A role over the whole archive."""

    ADMIN = "admin"
    AUDITOR = "auditor"


class Scope(enum.StrEnum):
    """What an API token may do (within what its owner may do)."""

    READ = "read"
    SUBMIT = "submit"
    EXPORT = "export"


class Kind(enum.Enum):
    """How an action is judged."""

    PUBLIC = "public"  # anyone, signed in or not (health, log in)
    SELF = "self"  # any signed-in person, about themselves
    ARCHIVE = "archive"  # needs an archive-wide role (or any person: see _ARCHIVE)
    CASE = "case"  # on one case: needs a role on it (auditor: integrity actions too)


class Action(enum.StrEnum):
    """Everything a route can do. The value names it on the ledger and in the README."""

    # public
    HEALTH = "health"
    API_DOCS = "api.docs"  # the OpenAPI document
    LOGIN = "auth.login"
    # about oneself
    SELF_VIEW = "self.view"  # who am I, my cases and roles
    SELF_MANAGE = "self.manage"  # log out, change password, enrol TOTP, my tokens
    # on one case (or the unfiled pseudo-case)
    CAPTURE_LIST = "capture.list"
    CAPTURE_VIEW = "capture.view"  # a capture's details and custody timeline
    ARTIFACT_DOWNLOAD = "artifact.download"  # evidence content: artifacts, WARCs
    CAPTURE_SUBMIT = "capture.submit"
    CAPTURE_VERIFY = "capture.verify"
    MEDIA_SIMILAR = "media.similar"
    JOB_VIEW = "job.view"
    WATCH_VIEW = "watch.view"
    WATCH_MANAGE = "watch.manage"
    TAKEDOWN_VIEW = "takedown.view"
    CASE_EXPORT = "case.export"
    EXPORT_DOWNLOAD = "export.download"
    # archive-wide
    STATUS_VIEW = "status.view"  # queue depth, workers: counts, no content
    LEDGER_PUBLIC = "ledger.public"  # the public key(s) and the latest checkpoint
    LEDGER_READ = "ledger.read"  # every entry, proofs, timestamps
    LEDGER_VERIFY = "ledger.verify"
    USER_MANAGE = "user.manage"
    CASE_MANAGE = "case.manage"  # create cases, grant and revoke roles
    TOKEN_MANAGE = "token.manage"  # noqa: S105 - everyone's tokens (an action, no secret)
    KEY_VIEW = "key.view"  # key history, settings (no secret ever)


KIND: Mapping[Action, Kind] = {
    Action.HEALTH: Kind.PUBLIC,
    Action.API_DOCS: Kind.PUBLIC,
    Action.LOGIN: Kind.PUBLIC,
    Action.SELF_VIEW: Kind.SELF,
    Action.SELF_MANAGE: Kind.SELF,
    Action.CAPTURE_LIST: Kind.CASE,
    Action.CAPTURE_VIEW: Kind.CASE,
    Action.ARTIFACT_DOWNLOAD: Kind.CASE,
    Action.CAPTURE_SUBMIT: Kind.CASE,
    Action.CAPTURE_VERIFY: Kind.CASE,
    Action.MEDIA_SIMILAR: Kind.CASE,
    Action.JOB_VIEW: Kind.CASE,
    Action.WATCH_VIEW: Kind.CASE,
    Action.WATCH_MANAGE: Kind.CASE,
    Action.TAKEDOWN_VIEW: Kind.CASE,
    Action.CASE_EXPORT: Kind.CASE,
    Action.EXPORT_DOWNLOAD: Kind.CASE,
    Action.STATUS_VIEW: Kind.ARCHIVE,
    Action.LEDGER_PUBLIC: Kind.ARCHIVE,
    Action.LEDGER_READ: Kind.ARCHIVE,
    Action.LEDGER_VERIFY: Kind.ARCHIVE,
    Action.USER_MANAGE: Kind.ARCHIVE,
    Action.CASE_MANAGE: Kind.ARCHIVE,
    Action.TOKEN_MANAGE: Kind.ARCHIVE,
    Action.KEY_VIEW: Kind.ARCHIVE,
}

_VIEW = frozenset({
    Action.CAPTURE_LIST, Action.CAPTURE_VIEW, Action.ARTIFACT_DOWNLOAD,
    Action.CAPTURE_VERIFY, Action.MEDIA_SIMILAR, Action.JOB_VIEW, Action.WATCH_VIEW,
    Action.TAKEDOWN_VIEW,
})

CASE_ROLE_ACTIONS: Mapping[CaseRole, frozenset[Action]] = {
    CaseRole.INVESTIGATOR: _VIEW | {Action.CAPTURE_SUBMIT, Action.WATCH_MANAGE},
    CaseRole.LEGAL: _VIEW | {Action.CASE_EXPORT, Action.EXPORT_DOWNLOAD},
    CaseRole.VIEWER: _VIEW,
}
"""What each role on a case allows on that case."""

AUDITOR_CASE_ACTIONS = frozenset({Action.CAPTURE_VERIFY})
"""What ``auditor`` may do on a case without being a member: integrity, never content."""

_ANY_PERSON = frozenset({Action.STATUS_VIEW, Action.LEDGER_PUBLIC})
ARCHIVE_ROLE_ACTIONS: Mapping[ArchiveRole | None, frozenset[Action]] = {
    None: _ANY_PERSON,
    ArchiveRole.AUDITOR: _ANY_PERSON | {Action.LEDGER_READ, Action.LEDGER_VERIFY},
    ArchiveRole.ADMIN: _ANY_PERSON | {
        Action.USER_MANAGE, Action.CASE_MANAGE, Action.TOKEN_MANAGE, Action.KEY_VIEW,
    },
}
"""What each archive-wide role allows (``None``: a person with no archive-wide role)."""

_READ = _VIEW | {Action.SELF_VIEW, Action.STATUS_VIEW, Action.LEDGER_PUBLIC,
                 Action.LEDGER_READ, Action.LEDGER_VERIFY}
SCOPE_ACTIONS: Mapping[Scope, frozenset[Action]] = {
    Scope.READ: _READ,
    Scope.SUBMIT: _READ | {Action.CAPTURE_SUBMIT, Action.WATCH_MANAGE},
    Scope.EXPORT: _READ | {Action.CASE_EXPORT, Action.EXPORT_DOWNLOAD},
}
"""What a token of each scope may do, at most (never account, role or token management:
those need a signed-in session)."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The token a request came with, if it came with one."""

    id: str
    scope: Scope
    case_ids: frozenset[int] | None = None  # None: every case its owner has a role on


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person as the archive knows them for one request."""

    user_id: int
    login: str
    archive_role: ArchiveRole | None
    case_roles: Mapping[int, CaseRole] = field(default_factory=dict)
    token: TokenGrant | None = None
    session_id: str | None = None  # a short, non-secret id of the session (for the ledger)
    client: str | None = None  # the client's address

    @property
    def actor(self) -> str:
        """How the ledger names this person."""
        return actor_for(self.login)

    def context(self) -> dict[str, str]:
        """What the ledger records besides the actor: the token or session used, and
        the client address (never a secret)."""
        out: dict[str, str] = {}
        if self.token is not None:
            out["token"] = self.token.id
        if self.session_id is not None:
            out["session"] = self.session_id
        if self.client is not None:
            out["client"] = self.client
        return out

    def role_on(self, case_id: int) -> CaseRole | None:
        """This person's role on a case, within the limits of the token used."""
        if self.token is not None and self.token.case_ids is not None \
                and case_id not in self.token.case_ids:
            return None
        return self.case_roles.get(case_id)

    def cases_for(self, action: Action) -> frozenset[int]:
        """The case ids (0: unfiled) on which this person may do ``action`` as a member;
        the filter every list applies."""
        return frozenset(
            case_id for case_id in self.case_roles
            if decide(self, action, case_id) is ALLOWED
        )


def actor_for(login: str) -> str:
    """The ledger's name for a person: ``user:<login>`` (the OS operator of the CLI is
    ``os:<account>@<host>``, services ``service:<name>``)."""
    return f"user:{login}"


class Decision(enum.Enum):
    """The answer, with the HTTP status it maps to."""

    ALLOWED = 200
    UNAUTHENTICATED = 401  # nobody signed in (or the credentials were refused)
    FORBIDDEN = 403  # known, but not allowed (role, scope, or a token where a session is needed)
    NOT_FOUND = 404  # the case is not one of this person's: as if it did not exist


ALLOWED = Decision.ALLOWED
UNAUTHENTICATED = Decision.UNAUTHENTICATED
FORBIDDEN = Decision.FORBIDDEN
NOT_FOUND = Decision.NOT_FOUND


def decide(principal: Principal | None, action: Action, case_id: int | None = None) -> Decision:
    """May ``principal`` do ``action`` (on ``case_id``, for a case action; 0 is the
    unfiled pseudo-case)? ``case_id`` None for a case action asks whether the person may
    do it on *some* case (a list before it is filtered, a submission form).

    The unfiled captures a person submitted themselves are checked by the caller with
    :func:`decide_unfiled_own`.
    """
    kind = KIND[action]
    if kind is Kind.PUBLIC:
        return ALLOWED
    if principal is None:
        return UNAUTHENTICATED
    if principal.token is not None and action not in SCOPE_ACTIONS[principal.token.scope] \
            and kind is not Kind.CASE:
        return FORBIDDEN
    if kind is Kind.SELF:
        return ALLOWED
    if kind is Kind.ARCHIVE:
        allowed = ARCHIVE_ROLE_ACTIONS[principal.archive_role]
        return ALLOWED if action in allowed else FORBIDDEN
    # a case action
    if case_id is None:
        if principal.archive_role is ArchiveRole.AUDITOR and action in AUDITOR_CASE_ACTIONS:
            return _scoped(principal, action)
        roles = [principal.role_on(c) for c in principal.case_roles]
        if any(r is not None and action in CASE_ROLE_ACTIONS[r] for r in roles):
            return _scoped(principal, action)
        return FORBIDDEN
    role = principal.role_on(case_id)
    if role is not None and action in CASE_ROLE_ACTIONS[role]:
        return _scoped(principal, action)
    if principal.archive_role is ArchiveRole.AUDITOR and action in AUDITOR_CASE_ACTIONS:
        return _scoped(principal, action)
    if role is not None or principal.archive_role is ArchiveRole.AUDITOR:
        # a member whose role does not allow it, or an auditor (who may verify any
        # capture, so knows it exists): no secret to keep, the honest answer
        return FORBIDDEN
    return NOT_FOUND


def decide_unfiled_own(principal: Principal | None, action: Action) -> Decision:
    """May ``principal`` do ``action`` on an unfiled capture *they submitted*? The
    submitter of an unfiled capture has the investigator's rights on it."""
    if principal is None:
        return UNAUTHENTICATED
    via_role = decide(principal, action, UNFILED_CASE_ID)
    if via_role is ALLOWED:
        return ALLOWED
    if action in CASE_ROLE_ACTIONS[CaseRole.INVESTIGATOR]:
        if principal.token is not None and principal.token.case_ids is not None \
                and UNFILED_CASE_ID not in principal.token.case_ids:
            return NOT_FOUND
        return _scoped(principal, action)
    return via_role


def _scoped(principal: Principal, action: Action) -> Decision:
    if principal.token is not None and action not in SCOPE_ACTIONS[principal.token.scope]:
        return FORBIDDEN
    return ALLOWED


def permission_table() -> list[tuple[str, dict[str, bool]]]:
    """Rows of the README's permission table: each action, and which role allows it
    (case roles on their case; archive-wide roles anywhere, content only as members)."""
    rows = []
    for action in Action:
        kind = KIND[action]
        row: dict[str, bool] = {}
        for case_role in CaseRole:
            row[case_role.value] = kind in (Kind.PUBLIC, Kind.SELF) or (
                kind is Kind.CASE and action in CASE_ROLE_ACTIONS[case_role]
            ) or (kind is Kind.ARCHIVE and action in ARCHIVE_ROLE_ACTIONS[None])
        for archive_role in ArchiveRole:
            row[archive_role.value] = kind in (Kind.PUBLIC, Kind.SELF) or (
                kind is Kind.CASE and archive_role is ArchiveRole.AUDITOR
                and action in AUDITOR_CASE_ACTIONS
            ) or (kind is Kind.ARCHIVE and action in ARCHIVE_ROLE_ACTIONS[archive_role])
        rows.append((action.value, row))
    return rows
