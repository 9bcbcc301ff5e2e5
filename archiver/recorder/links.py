"""Which subresources a page needs: links from HTML (streamed) and url(...) from CSS.

Everything here is pure and incremental: the recorder feeds decoded text as it arrives,
so a page is never held whole in memory. What is collected is bounded (``max_links``),
and the amount of text parsed is bounded by the caller, because a hostile page can be
endless or a small gzip body can expand a thousandfold.
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

from archiver.urls import BadUrl, check_url

LinkKind = Literal["stylesheet", "media", "other"]
"""``media``: the ``src`` of a <video>, <audio> or their <source> (a video the media
fetcher downloads, once, when it is on)."""

SKIPPED_SCHEMES = ("data:", "javascript:", "mailto:", "about:", "blob:", "tel:")
_LINK_RELS = frozenset(
    {"stylesheet", "icon", "shortcut", "apple-touch-icon", "apple-touch-icon-precomposed",
     "mask-icon", "preload", "modulepreload", "manifest"}
)
_SRC_TAGS = frozenset({"img", "script", "video", "audio", "source", "track", "embed", "input"})


@dataclass(frozen=True, slots=True)
class Link:
    """A subresource to fetch: absolute URL (fragment removed) and what it is."""

    url: str
    kind: LinkKind


def parse_srcset(value: str) -> list[str]:
    """The URLs of a ``srcset`` attribute (HTML's candidate-list rules, simplified:
    a URL runs to whitespace; a trailing comma ends it; descriptors run to a comma)."""
    urls: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url = value[start:i]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0
            while i < n and (value[i] != "," or depth):
                depth += {"(": 1, ")": -1}.get(value[i], 0)
                i += 1
        if url:
            urls.append(url)
    return urls


_CSS_URL = re.compile(
    r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)"'\s]*))\s*\)|@import\s+(?:"([^"]*)"|'([^']*)')""",
    re.IGNORECASE,
)
_CSS_CARRY = 4096  # longest url(...) we will join across two chunks


class CssUrlScanner:
    """``url(...)`` and ``@import "..."`` references in CSS text fed in pieces."""

    def __init__(self) -> None:
        self._carry = ""
        self.found: list[str] = []

    def feed(self, text: str) -> None:
        data = self._carry + text
        end = 0
        for match in _CSS_URL.finditer(data):
            self.found.append(next(g for g in match.groups() if g is not None))
            end = match.end()
        rest = data[end:]
        # Keep an unfinished reference for the next piece; bounded, so a hostile
        # "url(" followed by megabytes of junk cannot grow it.
        cut = max(rest.lower().rfind("url("), rest.lower().rfind("@import"))
        self._carry = rest[cut:][-_CSS_CARRY:] if cut >= 0 else rest[-8:]

    def close(self) -> None:
        self.feed("")
        self._carry = ""


class PageLinkParser(HTMLParser):
    """Collect subresource references from an HTML document fed in pieces."""

    def __init__(self, *, max_links: int) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href: str | None = None
        self.raw: list[tuple[str, LinkKind]] = []
        self._max_links = max_links
        self._in_style = False
        self._css = CssUrlScanner()
        self.url_counts: Counter[str] = Counter()
        """Links left out as invalid (``invalid``) or stripped of user info."""

    def _add(self, value: str | None, kind: LinkKind = "other") -> None:
        if value and len(self.raw) < self._max_links:
            self.raw.append((value.strip(), kind))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value for name, value in attrs}
        if tag == "base" and self.base_href is None and a.get("href"):
            self.base_href = a["href"]
        elif tag == "link":
            rels = set((a.get("rel") or "").lower().split())
            if rels & _LINK_RELS:
                self._add(a.get("href"), "stylesheet" if "stylesheet" in rels else "other")
        elif tag in _SRC_TAGS:
            if tag in ("video", "audio") or (tag == "source" and a.get("src")
                                             and not a.get("srcset")):
                self._add(a.get("src"), "media")
            elif tag != "input" or (a.get("type") or "").lower() == "image":
                self._add(a.get("src"))
            if tag == "video":
                self._add(a.get("poster"))
            if tag in ("img", "source") and a.get("srcset"):
                for url in parse_srcset(a["srcset"] or ""):
                    self._add(url)
        elif tag == "style":
            self._in_style = True
        style = a.get("style")
        if style and "url(" in style.lower():
            scanner = CssUrlScanner()
            scanner.feed(style)
            scanner.close()
            for url in scanner.found:
                self._add(url)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._css.feed(data)

    def finish(self, document_url: str) -> list[Link]:
        """Close the parser and resolve what it found against ``document_url``/<base>."""
        self.close()
        self._css.close()
        for url in self._css.found:
            self._add(url)
        base = document_url
        if self.base_href:
            try:
                base = urljoin(document_url, self.base_href)
            except ValueError:  # a broken <base> is ignored, as browsers do
                base = document_url
        return resolve_links(base, self.raw, self.url_counts)


def resolve_links(base: str, raw: list[tuple[str, LinkKind]],
                  counts: Counter[str] | None = None) -> list[Link]:
    """Absolute http(s) URLs, fragments dropped, skipped schemes removed, de-duplicated
    (a URL seen as a stylesheet keeps that kind), in document order.

    Each goes through :func:`archiver.urls.check_url` (``userinfo="strip"``): one it
    refuses is left out and counted in ``counts["invalid"]``, one with a user name or
    password loses it (``counts["userinfo_stripped"]``)."""
    seen: dict[str, LinkKind] = {}
    for value, kind in raw:
        if not value or value.lower().startswith(SKIPPED_SCHEMES) or value.startswith("#"):
            continue
        try:
            absolute = urljoin(base, value)
            parts = urlsplit(absolute)
        except ValueError:  # not a URL (e.g. "http://[oops"): nothing a browser would load
            if counts is not None:
                counts["invalid"] += 1
            continue
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Other schemes are reported by the recorder's guard if they are fetched;
            # links to them are not subresources a browser would load over HTTP.
            continue
        try:
            checked = check_url(urlunsplit(parts._replace(fragment="")), userinfo="strip")
        except BadUrl:
            if counts is not None:
                counts["invalid"] += 1
            continue
        if checked.had_userinfo and counts is not None:
            counts["userinfo_stripped"] += 1
        absolute = checked.url
        if kind == "stylesheet" or absolute not in seen:
            seen[absolute] = kind
    return [Link(url, kind) for url, kind in seen.items()]


class BodyDecoder:
    """Undo Content-Encoding (identity, gzip, deflate), bounded in output.

    Only copies for parsing, the caller's file and the browser are decoded; the WARC
    keeps the bytes as received. ``supported`` is False for an encoding we do not decode
    (br, which we never ask for, and a chain of codings): nothing is decoded then.

    Two bounds, so that a decompression bomb (a megabyte of gzip that inflates to a
    gigabyte) costs neither memory nor disk: at most ``max_output`` decoded bytes, and,
    with ``max_ratio``, at most ``max_ratio`` decoded bytes per byte received once
    ``ratio_floor`` decoded bytes are passed (a small body may compress very well).
    When one is reached the output stops there and ``limit`` names it (``"bytes"`` or
    ``"ratio"``). Raises ``zlib.error`` on a corrupt stream (the caller turns it into a
    problem).
    """

    def __init__(self, content_encoding: str | None, *, max_output: int,
                 max_ratio: float | None = None, ratio_floor: int = 1024 * 1024) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self.supported = len(codings) <= 1 and (not codings or codings[0] in _ZLIB_WBITS)
        self._wbits = _ZLIB_WBITS[codings[0]] if codings and self.supported else None
        self._zlib = zlib.decompressobj(self._wbits) if self._wbits is not None else None
        self._first = True
        self.max_output = max_output
        self.max_ratio = max_ratio
        self.ratio_floor = ratio_floor
        self.received = 0
        self.produced = 0
        self.limit: Literal["bytes", "ratio"] | None = None

    @property
    def remaining(self) -> int:
        return self.max_output - self.produced

    @property
    def exhausted(self) -> bool:
        return self.limit is not None

    def _budget(self) -> tuple[int, Literal["bytes", "ratio"]]:
        by_bytes = self.max_output - self.produced
        if self.max_ratio is None:
            return by_bytes, "bytes"
        by_ratio = max(self.ratio_floor, int(self.max_ratio * self.received)) - self.produced
        return (by_ratio, "ratio") if by_ratio < by_bytes else (by_bytes, "bytes")

    def feed(self, data: bytes) -> bytes:
        if not self.supported or self.exhausted:
            return b""
        self.received += len(data)
        budget, which = self._budget()
        if self._zlib is None:
            out = data[: max(budget, 0)]
            over = len(data) > budget
        else:
            if self._first and self._wbits == zlib.MAX_WBITS and data[:1] != b"\x78":
                # "deflate" sent as raw DEFLATE without the zlib wrapper (common)
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            self._first = False
            # One byte past the budget: getting it means the budget is passed (zlib
            # stops early only at max_length, so nothing of the input is left behind).
            out = self._zlib.decompress(data, max(budget, 0) + 1)
            while (
                self._wbits != zlib.MAX_WBITS
                and self._zlib.eof
                and self._zlib.unused_data
                and len(out) <= budget
            ):
                # concatenated gzip members
                unused = self._zlib.unused_data
                self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
                out += self._zlib.decompress(unused, budget - len(out) + 1)
            over = len(out) > budget
            out = out[: max(budget, 0)]
        self.produced += len(out)
        if over:
            self.limit = which
        return out


_ZLIB_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16,
               "deflate": zlib.MAX_WBITS}


def text_decoder(charset: str | None) -> codecs.IncrementalDecoder:
    """An incremental decoder for ``charset`` (UTF-8 when absent or unknown)."""
    try:
        factory = codecs.getincrementaldecoder(charset or "utf-8")
    except LookupError:
        factory = codecs.getincrementaldecoder("utf-8")
    return factory(errors="replace")
