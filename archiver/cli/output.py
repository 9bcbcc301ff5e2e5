"""What the command line writes for a person, made safe on the way out.

Threat model: case names, notes, titles, URLs, server messages and error text come from
investigators' input and from captured pages, and some of them are chosen by the people
the archive records. Written raw to a terminal, an escape sequence can retitle the
window, move the cursor, hide lines or forge output (``\\r``, ``ESC [ 2K``, OSC 8
links). Every human-readable line goes through :class:`HumanStream`, which writes every
control character except the newline that ends a line as ``\\xNN`` (undecodable bytes
too), so no raw control byte leaves the process whatever a command forgot to escape.
Fields that may hold a newline of their own are escaped as a whole by
:func:`archiver.cli.common.shown` before they are printed, so they cannot forge a line.

A reader that stops reading (``archiver capture URL | head -2``) closes the pipe: the
command's further output is dropped quietly and the command runs to its end (a capture
in progress is still completed and recorded on the ledger), instead of dying with a
``BrokenPipeError`` halfway.

JSON output needs neither: ``json.dumps`` escapes every control character itself.
"""

from __future__ import annotations

import os
import re
from typing import Any, TextIO

from archiver.urls import printable

_UNSAFE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class HumanStream:
    """A text stream that escapes control characters (all but ``\\n``) and outlives a
    closed pipe; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.pipe_closed = False

    def write(self, text: str) -> int:
        if self.pipe_closed:
            return len(text)
        safe = _UNSAFE.sub(lambda m: printable(m.group()), text)
        try:
            self._stream.write(safe)
        except BrokenPipeError:
            self._closed()
        return len(text)

    def flush(self) -> None:
        if self.pipe_closed:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        """The reader went away: later writes are dropped, and the descriptor now points
        at /dev/null so that the interpreter's last flush at exit finds nothing broken."""
        self.pipe_closed = True
        try:
            fileno = self._stream.fileno()
        except (OSError, ValueError):  # not a real file (a test's capture buffer)
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fileno)
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
