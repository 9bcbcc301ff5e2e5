"""The pages of watches and takedowns.

``GET /watches``                         the watches (100 a page, ``?case=``), the form to add
``POST /watches``                        add one
``POST /watches/{id}/pause|resume|remove``  change one
``POST /watches/import``                 a CSV (or TOML) watchlist, uploaded
``GET /takedowns``                       what was recorded gone, beside the capture made
                                         while it was up (``?case=``)

The API's route functions do the work (:mod:`archiver.web.api.watches`,
:mod:`archiver.web.api.jobs`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from archiver.people.access import Action
from archiver.web.api import jobs as jobs_api
from archiver.web.api import watches as api
from archiver.web.api.watches import _import as import_watchlist
from archiver.web.errors import ApiError, bad_request
from archiver.web.gate import Gate, GateDep, route
from archiver.web.pages.captures import _submit_cases
from archiver.web.pages.render import PAGE_SIZE, as_action, render

router = APIRouter(include_in_schema=False)

CaseQ = Annotated[str | None, Query(max_length=200)]
CursorQ = Annotated[str | None, Query(max_length=512)]
MAX_WATCHLIST = 1024 * 1024


def _next(path: str, cursor: str | None, case: str | None) -> str | None:
    if cursor is None:
        return None
    params = {"case": case} if case else {}
    return f"{path}?{urlencode({**params, 'cursor': cursor})}"


def _manageable(request: Request, gate: Gate) -> list[str]:
    """The cases the person may add watches to (names; ``unfiled`` last)."""
    return _submit_cases(request, as_action(gate, Action.WATCH_MANAGE))


@route(router, "GET", "/watches", action=Action.WATCH_VIEW, response_class=HTMLResponse)
def watches_page(request: Request, gate: GateDep, case: CaseQ = None,
                 cursor: CursorQ = None) -> HTMLResponse:
    """The watches the person may see, each with its last poll and error; a form to
    add one and to import a watchlist for those who may manage watches."""
    page = api.list_watches(request, gate, case=case, status=None, cursor=cursor,
                            limit=PAGE_SIZE)
    manage = gate.person.token is None and bool(gate.person.cases_for(Action.WATCH_MANAGE))
    return render(request, "watches.html", watches=page.items, case=case,
                  next_url=_next("/watches", page.next, case),
                  cases=_manageable(request, gate) if manage else [])


@route(router, "POST", "/watches", action=Action.WATCH_MANAGE, response_class=HTMLResponse)
def add_watch(request: Request, gate: GateDep, url: Annotated[str, Form(max_length=4096)],
              case: Annotated[str, Form(max_length=200)] = "unfiled",
              every: Annotated[str, Form(max_length=32)] = "",
              kind: Annotated[str, Form(max_length=20)] = "auto",
              pattern: Annotated[str, Form(max_length=1000)] = "") -> HTMLResponse:
    """Add a watch (``watch.added``); answers its row."""
    try:
        body = api.WatchBody(url=url.strip(), case=None if case == "unfiled" else case,
                             every=every.strip() or None, kind=kind,  # type: ignore[arg-type]
                             pattern=pattern.strip() or None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise bad_request(f"{where}: {first.get('msg', 'invalid')}", code="bad-input") from None
    watch = api.add_watch(request, gate, body)
    return render(request, "fragments/watch_added.html", w=watch, manage=True)


Change = Literal["pause", "resume", "remove"]


@route(router, "POST", "/watches/{watch_id}/{what}", action=Action.WATCH_MANAGE,
       response_class=HTMLResponse)
def change_watch(request: Request, gate: GateDep, watch_id: int, what: Change) -> HTMLResponse:
    """Pause, resume or remove a watch; answers its row as it now is."""
    change = {"pause": api.pause_watch, "resume": api.resume_watch,
              "remove": api.remove_watch}[what]
    watch = change(request, gate, watch_id)
    return render(request, "fragments/watch_row.html", w=watch, manage=True)


@route(router, "POST", "/watches/import", action=Action.WATCH_MANAGE,
       response_class=HTMLResponse)
async def import_watches(request: Request, gate: GateDep, watchlist: UploadFile,
                         case: Annotated[str, Form(max_length=200)] = "unfiled"
                         ) -> HTMLResponse:
    """Import a watchlist file (CSV with the header ``url,kind,every,case,pattern``, or
    TOML): what was added, skipped (watched already) and refused, and why."""
    raw = await watchlist.read(MAX_WATCHLIST + 1)
    if len(raw) > MAX_WATCHLIST:
        raise ApiError(413, "too-large", "the watchlist is larger than 1 MiB")
    name = (watchlist.filename or "").lower()
    fmt = "toml" if name.endswith(".toml") else "csv"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("the watchlist is not UTF-8 text") from None
    result = await run_in_threadpool(import_watchlist, request, gate, case, text, fmt)
    return render(request, "fragments/imported.html", result=result)


@route(router, "GET", "/takedowns", action=Action.TAKEDOWN_VIEW, response_class=HTMLResponse)
def takedowns_page(request: Request, gate: GateDep, case: CaseQ = None,
                   cursor: CursorQ = None) -> HTMLResponse:
    """Targets recorded gone, newest first: the capture that showed each gone beside
    the capture made while it was up (when the person may see that one)."""
    page = jobs_api.list_takedowns(gate, request, case=case, cursor=cursor, limit=PAGE_SIZE)
    items: list[Any] = page.items
    return render(request, "takedowns.html", takedowns=items, case=case,
                  next_url=_next("/takedowns", page.next, case))
