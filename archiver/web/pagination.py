"""Cursor pagination, the same on every list.

A list answers ``{"items": [...], "next": "<cursor>" | null}``. The cursor is the sort
key of the last item given, base64url-encoded JSON, signed with the app's key so a
client can neither forge one nor learn anything from it but an opaque string; the next
page is the rows strictly after it in the list's order (keyset pagination: a deep page
costs what the first does, and rows added meanwhile are neither skipped nor repeated).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel

from archiver.web.errors import bad_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page (at most 100)")]
Cursor = Annotated[str | None, Query(max_length=512, description="the `next` of the previous page")]


class Page(BaseModel):
    """One page of a list."""

    items: list[Any]
    next: str | None


class Cursors:
    """Encodes and checks cursors with ``key`` (per app; derived from the web secret)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"cursor\x00" + body, hashlib.sha256).digest()[:12]

    def encode(self, list_name: str, key: Sequence[Any]) -> str:
        body = json.dumps([list_name, list(key)], separators=(",", ":")).encode()
        raw = self._mac(body) + body
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, list_name: str, cursor: str | None) -> list[Any] | None:
        """The sort key of the last row of the previous page, or None for the first page.
        Raises 400 ``bad-cursor`` for a cursor this app did not give for this list."""
        if cursor is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            mac, body = raw[:12], raw[12:]
            if not hmac.compare_digest(mac, self._mac(body)):
                raise ValueError("forged")
            name, key = json.loads(body)
            if name != list_name or not isinstance(key, list):
                raise ValueError("another list")
        except (ValueError, TypeError) as exc:
            raise bad_request("this cursor was not given by this list; start from "
                              "the first page", code="bad-cursor") from exc
        return key

    def page(self, list_name: str, rows: Sequence[Any], limit: int,
             key_of: Any, item_of: Any) -> Page:
        """A page from ``rows`` fetched with ``limit + 1``: the extra row says whether
        there is a next page."""
        more = len(rows) > limit
        shown = list(rows[:limit])
        cursor = self.encode(list_name, key_of(shown[-1])) if more and shown else None
        return Page(items=[item_of(row) for row in shown], next=cursor)
