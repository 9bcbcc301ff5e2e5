"""The one check every URL goes through, and the one check of every other text argument.

Threat model: a URL reaches the archive from a person (``archiver capture``, ``watch
add``, a watchlist CSV) or from a server (a link in a page, a redirect's ``Location``, a
media URL yt-dlp found, a request the browser made). Either can be hostile or broken:
bytes that are not text (argv is decoded with ``surrogateescape``, so ``$'\\xff'`` arrives
as a lone surrogate that no database, JSON canonicaliser or terminal takes), control
characters that rewrite a terminal or split a log line, megabytes of URL, a ``file:`` or
``javascript:`` scheme, a host that is not a host, a port out of range, a user name and
password (``http://user:pw@host/``) that a fetcher would turn into an ``Authorization``
header and that would be kept in the ledger and the WARC.

:func:`check_url` gives every URL the same answer wherever it comes from; only what is
done with a user name or password differs:

* a URL someone **submits** (``userinfo="refuse"``) is refused with a message saying why
  and what to do instead (:class:`BadInput`, exit 2 at the command line);
* a URL **found during a capture** (``userinfo="strip"``) loses its user info before any
  request is made, and :attr:`CheckedUrl.had_userinfo` lets the caller count that in the
  capture's provenance; what is refused there is skipped and counted, never fatal.

The URL given back is normalised: scheme and host in lower case, an internationalised
host in its ASCII (IDNA, UTS #46) form, non-ASCII characters and spaces of the path,
query and fragment percent-encoded (UTF-8), an empty port dropped. So a stored URL is
always printable ASCII.

Pure: no network, no clock; standard library plus ``idna``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from archiver.errors import BadInput

MAX_URL_LENGTH = 16 * 1024
"""Characters a URL may have (after normalisation too). Twice what HTTP servers commonly
accept (8 KiB request lines); anything longer is junk or an attack."""
MAX_TEXT_LENGTH = 64 * 1024
"""Characters a case name, note or other text argument may have."""
SCHEMES = ("http", "https")

# C0 and C1 control characters and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What HTML's URL parser ignores inside a URL (tab and newlines), removed from found URLs.
_IGNORED = re.compile(r"[\t\n\r]")
# Non-ASCII and space: percent-encoded as UTF-8 in path, query and fragment.
_TO_ENCODE = re.compile(r"[^\x21-\x7e]+")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_USERINFO_HINT = (
    "a user name or password in a URL would be kept in the custody ledger and the WARC "
    "for everyone who reads them; submit the URL without it (a capture never sends "
    "credentials)"
)

UserinfoRule = Literal["refuse", "strip"]


class BadUrl(BadInput):
    """A URL that the archive will not take; the message says why, in one line."""


class RefusedUrl(BadUrl):
    """A well-formed URL refused for what it is rather than for how it is written: a
    scheme other than http and https, or (when submitted) a user name or password. A
    fetcher reports it as a refusal, like an address the SSRF guard refuses, not as a
    broken URL."""


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed :func:`check_url`, normalised."""

    url: str
    had_userinfo: bool = False
    """True when a user name or password was removed (``userinfo="strip"`` only)."""


_USERINFO = re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:/*)[^/?#@\s]*@")


def redacted(text: str) -> str:
    """``text`` with the user info of every URL in it replaced by ``…``, so that no
    message, log line or record repeats a password taken from a URL."""
    return _USERINFO.sub(r"\1…@", text)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with control characters written ``\\xNN`` and undecodable bytes (the
    surrogates ``surrogateescape`` made of them) written as the bytes they were."""
    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        if 0xDC80 <= code <= 0xDCFF:  # the byte surrogateescape could not decode
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0xD800 else f"\\u{code:04x}"

    return _UNPRINTABLE.sub(escape, text)


def _quote_for_message(text: str) -> str:
    """A short, printable rendering of ``text`` for an error message (no password)."""
    text = redacted(text)
    return printable(text[:120]) + ("…" if len(text) > 120 else "")


def check_text(value: str, what: str, *, max_length: int = MAX_TEXT_LENGTH) -> str:
    """``value`` when it is text the archive can keep (valid Unicode, no NUL, bounded),
    else :class:`BadInput` naming ``what`` (e.g. ``"--case"``).

    Undecodable bytes from the command line arrive as lone surrogates (Python decodes argv
    with ``surrogateescape``); no database or canonical JSON can hold them. NUL ends a C
    string and PostgreSQL refuses it. Other control characters are kept (a note may span
    lines) and escaped wherever they are shown.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(
            f"{what} is not valid text (it holds bytes that are not UTF-8: "
            f"{_quote_for_message(value)}); give it as UTF-8"
        ) from None
    if "\x00" in value:
        raise BadInput(f"{what} holds a NUL character: {_quote_for_message(value)}")
    if len(value) > max_length:
        raise BadInput(f"{what} is longer than {max_length} characters ({len(value)})")
    return value


def check_url(text: str, *, userinfo: UserinfoRule) -> CheckedUrl:
    """Check and normalise one absolute http(s) URL; see the module docstring.

    Raises :class:`BadUrl` (one line: what is wrong, with the URL quoted in printable
    form) for: bytes that are not UTF-8, control characters or whitespace (a found URL
    may carry the tab and newlines HTML ignores, and spaces, which are encoded), more
    than :data:`MAX_URL_LENGTH` characters, a scheme other than http and https, no
    host, a host that is neither a domain name (IDN allowed) nor an IP address, a port
    that is not 1-65535, a backslash before the path (browsers read it as ``/``, so the
    host a browser would reach differs), and, when ``userinfo`` is ``"refuse"``, a user
    name or password. The scheme and the user name or password are refused with
    :class:`RefusedUrl`, a :class:`BadUrl`.
    """
    submitted = userinfo == "refuse"
    what = "URL" if submitted else "URL found in the capture"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadUrl(f"{what} {_quote_for_message(text)} holds bytes that are not UTF-8 "
                     "(percent-encode them, e.g. %FF)") from None
    if len(text) > MAX_URL_LENGTH:
        raise BadUrl(f"{what} is longer than {MAX_URL_LENGTH} characters ({len(text)}): "
                     f"{_quote_for_message(text)}")
    if not submitted:
        text = _IGNORED.sub("", text).strip(" ")
    if _CONTROL.search(text):
        raise BadUrl(f"{what} {_quote_for_message(text)} holds control characters")
    if submitted and (text != text.strip() or any(c.isspace() for c in text)):
        raise BadUrl(f"{what} {_quote_for_message(text)} holds whitespace "
                     "(a space in a URL is written %20)")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise BadUrl(f"{what} {_quote_for_message(text)} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RefusedUrl(f"{what} {_quote_for_message(text)}: scheme "
                     f"{(scheme or '(none)')!r} is not allowed, only http and https URLs "
                     "can be captured")
    if "\\" in parts.netloc:
        raise BadUrl(f"{what} {_quote_for_message(text)} has a backslash in its host part")
    _userinfo, has_at, hostport = parts.netloc.rpartition("@")
    if has_at and submitted:
        raise RefusedUrl(f"{what} {_quote_for_message(text)} holds a user "
                     f"name or password: refused, because {_USERINFO_HINT}")
    host, port = _split_port(hostport, text, what)
    host = _ascii_host(host, text, what)
    netloc = host if port is None else f"{host}:{port}"
    url = urlunsplit((scheme, netloc, _encoded(parts.path), _encoded(parts.query),
                      _encoded(parts.fragment)))
    if len(url) > MAX_URL_LENGTH:
        raise BadUrl(f"{what} is longer than {MAX_URL_LENGTH} characters once "
                     f"percent-encoded: {_quote_for_message(text)}")
    return CheckedUrl(url, had_userinfo=bool(has_at))


def submitted_url(text: str) -> str:
    """A URL a person or a watchlist submitted, checked and normalised; raises
    :class:`BadUrl` (a user name or password is refused)."""
    return check_url(text, userinfo="refuse").url


def _encoded(part: str) -> str:
    return _TO_ENCODE.sub(lambda m: quote(m.group(), safe=""), part)


def _split_port(hostport: str, text: str, what: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[: end + 1], hostport[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise BadUrl(f"{what} {_quote_for_message(text)} has a malformed IPv6 host")
        digits = rest[1:]
    else:
        host, _colon, digits = hostport.partition(":")
    if not digits:
        return host, None
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= 65535:
        raise BadUrl(f"{what} {_quote_for_message(text)}: port {digits!r} is not a "
                     "number from 1 to 65535")
    return host, int(digits)


def _ascii_host(host: str, text: str, what: str) -> str:
    """The host in lower-case ASCII: an IP literal, or a domain name (IDN → A-labels)."""
    if not host:
        raise BadUrl(f"{what} {_quote_for_message(text)} has no host")
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise BadUrl(f"{what} {_quote_for_message(text)}: {host!r} is not an IPv6 "
                         "address") from None
        return f"[{address.compressed}]"
    name = host
    if not name.isascii():
        import idna  # the IDNA 2008 / UTS #46 rules browsers follow

        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise BadUrl(f"{what} {_quote_for_message(text)}: host is not a valid "
                         f"internationalised domain name ({exc})") from None
    name = name.lower()
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if len(name) > 254 or not all(_LABEL.fullmatch(label) for label in labels) \
            or not all(_valid_a_label(label) for label in labels):
        raise BadUrl(f"{what} {_quote_for_message(text)}: {_quote_for_message(host)} is "
                     "not a valid host name")
    return name


def _valid_a_label(label: str) -> bool:
    """An ``xn--`` label must decode (Punycode, IDNA rules), or every client chokes on it
    later; any other label is not an A-label."""
    if not label.startswith("xn--"):
        return True
    import idna

    try:
        idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        return False
    return True
