"""Every route declares its action; no route escapes the check.

A route is registered only through :func:`route`, which records the route's
:class:`~archiver.people.access.Action` on its endpoint (``__action__``, and
``x-action`` in the OpenAPI document) and puts :func:`_enforce` in front of it:

1. the request's person is resolved (``app.state.authenticator``: a session cookie with
   its CSRF token, or a bearer token), or stays anonymous;
2. for a public, self or archive-wide action, :func:`~archiver.people.access.decide`
   answers at once (401 / 403);
3. for a case action, the person must be signed in and the token's scope must cover the
   action; the case is known only once the route has found the resource, so the route
   asks :meth:`Gate.require` (one capture, job, watch, export) or :meth:`Gate.visible`
   (a list) before it answers. :class:`CheckedMiddleware` holds every route to that: a
   case action that answers with success without having asked answers 500 instead, and
   the route-table test finds such a route before anyone else does.

The answers for a case the person is not a member of are 404, as for a resource that
does not exist (see :mod:`archiver.people.access`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver.models import UNFILED_CASE_ID
from archiver.people.access import (
    ALLOWED,
    KIND,
    SCOPE_ACTIONS,
    Action,
    Decision,
    Kind,
    Principal,
    decide,
    decide_unfiled_own,
)
from archiver.web.errors import ApiError, forbidden, not_found, response, unauthenticated

F = TypeVar("F", bound=Callable[..., Any])


Authenticator = Callable[[Request, Action], Principal | None]
"""Resolves who sends a request. Raises :class:`ApiError` (401) for credentials that are
refused (an expired token, a session past its timeouts) and (403) for a state-changing
request whose CSRF token is missing or wrong; returns None for a request that carries no
credentials."""


def anonymous(_request: Request, _action: Action) -> Principal | None:
    """The authenticator of an app without one: nobody is ever signed in."""
    return None


@dataclass(slots=True)
class CaseFilter:
    """What a list may show: captures (jobs, watches…) of ``case_ids`` (0: the unfiled
    pseudo-case, as a member), plus unfiled ones submitted by ``own_unfiled_actor``."""

    case_ids: frozenset[int]
    own_unfiled_actor: str | None

    @property
    def unfiled(self) -> bool:
        return UNFILED_CASE_ID in self.case_ids


@dataclass(slots=True)
class Gate:
    """The check of one request: who asks, for what, and whether a case was checked."""

    action: Action
    principal: Principal | None
    checked: bool = field(default=False)

    @property
    def person(self) -> Principal:
        """The signed-in person (routes of non-public actions only ever see one)."""
        if self.principal is None:  # pragma: no cover - _enforce refused it already
            raise unauthenticated()
        return self.principal

    @property
    def actor(self) -> str:
        return self.person.actor

    def context(self) -> dict[str, str]:
        return self.person.context()

    def require(self, case_id: int | None, *, submitted_by: str | None = None,
                action: Action | None = None) -> None:
        """Refuse (404 / 403) unless the person may do the action on a resource of case
        ``case_id`` (None: unfiled; ``submitted_by``: the actor who submitted it, for
        an unfiled capture). ``action`` asks for another action than the route's (a
        capture page that also offers downloads)."""
        wanted = action or self.action
        if case_id is None:
            if submitted_by is not None and submitted_by == self.person.actor:
                decision = decide_unfiled_own(self.principal, wanted)
            else:
                decision = decide(self.principal, wanted, UNFILED_CASE_ID)
        else:
            decision = decide(self.principal, wanted, case_id)
        _raise_unless_allowed(decision)
        self.checked = True

    def allows(self, case_id: int | None, *, submitted_by: str | None = None,
               action: Action | None = None) -> bool:
        """Like :meth:`require`, but answers instead of refusing (what a page offers)."""
        try:
            self.require(case_id, submitted_by=submitted_by, action=action)
        except ApiError:
            return False
        return True

    def visible(self, action: Action | None = None) -> CaseFilter:
        """The cases a list may show for the action (and the person's own unfiled
        captures when the action is one a submitter keeps on them)."""
        wanted = action or self.action
        person = self.person
        own: str | None = None
        if decide_unfiled_own(person, wanted) is ALLOWED:
            own = person.actor
        self.checked = True
        return CaseFilter(person.cases_for(wanted), own)


def _raise_unless_allowed(decision: Decision) -> None:
    if decision is ALLOWED:
        return
    if decision is Decision.UNAUTHENTICATED:
        raise unauthenticated()
    if decision is Decision.FORBIDDEN:
        raise forbidden()
    raise not_found()


def _enforce(request: Request) -> None:
    route = request.scope.get("route")
    action: Action | None = getattr(getattr(route, "endpoint", None), "__action__", None)
    if action is None:  # pragma: no cover - route() always sets it; the test enumerates
        raise ApiError(500, "internal", "this route declares no action")
    authenticator: Authenticator = getattr(request.app.state, "authenticator", anonymous)
    principal = authenticator(request, action)
    gate = Gate(action, principal)
    request.state.gate = gate
    kind = KIND[action]
    if kind is Kind.CASE:
        if principal is None:
            raise unauthenticated()
        if principal.token is not None and action not in SCOPE_ACTIONS[principal.token.scope]:
            raise forbidden("this token's scope does not allow this")
        return
    _raise_unless_allowed(decide(principal, action))
    gate.checked = True


def current_gate(request: Request) -> Gate:
    gate: Gate | None = getattr(request.state, "gate", None)
    if gate is None:  # pragma: no cover - only a route registered around route()
        raise ApiError(500, "internal", "this route declares no action")
    return gate


GateDep = Annotated[Gate, Depends(current_gate)]
"""A route's parameter that receives its :class:`Gate`."""


def route(router: APIRouter, method: str, path: str, *, action: Action,
          dependencies: Sequence[Any] = (), **kwargs: Any) -> Callable[[F], F]:
    """Register ``path`` on ``router`` for ``action``: the only way routes are added."""

    def register(endpoint: F) -> F:
        endpoint.__action__ = action  # type: ignore[attr-defined]
        extra = dict(kwargs.pop("openapi_extra", None) or {})
        extra["x-action"] = action.value
        router.add_api_route(
            path, endpoint, methods=[method],
            dependencies=[Depends(_enforce), *dependencies],
            openapi_extra=extra, **kwargs,
        )
        return endpoint

    return register


class CheckedMiddleware:
    """Answers 500 instead of a success for a case action whose route never asked the
    gate about the case: a route that forgot its check leaks nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                gate: Gate | None = scope.get("state", {}).get("gate")
                status = int(message["status"])
                if gate is not None and not gate.checked and 200 <= status < 400:
                    refused = True
                    answer = response(500, "internal", "this route did not check access")
                    await answer(scope, receive, send)
                    return
            elif refused:
                return
            await send(message)

        await self.app(scope, receive, guarded_send)
