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

Machine-readable output (``--json`` lines, ``watch export``'s CSV and TOML) is for a
program to read back, so it must leave exactly as made: commands write it to
:func:`unaltered`, the same stream without the escaping but with the same closed-pipe
handling (raw files, ``get -o -``, go to :func:`binary`). JSON escapes every control
character by itself; CSV does not (a case name with a tab stays a tab, or ``watch
import`` would read back a different name).
"""

from __future__ import annotations

import os
import re
from typing import IO, Any, BinaryIO, TextIO, cast

from archiver.urls import printable

_UNSAFE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class HumanStream:
    """A text stream that escapes control characters (all but ``\\n``) and outlives a
    closed pipe; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO, *, escape: bool = True) -> None:
        self._stream = stream
        self._escape = escape
        self._unaltered: HumanStream | None = None
        self.pipe_closed = False

    @property
    def unaltered(self) -> HumanStream:
        """The same stream for machine-readable output: written as given, a closed pipe
        survived all the same (either twin that meets it points the descriptor at
        /dev/null, so the other writes there from then on)."""
        if not self._escape:
            return self
        if self._unaltered is None:
            self._unaltered = HumanStream(self._stream, escape=False)
        return self._unaltered

    def write(self, text: str) -> int:
        if self.pipe_closed:
            return len(text)
        safe = _UNSAFE.sub(lambda m: printable(m.group()), text) if self._escape else text
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
        self.pipe_closed = True
        _to_devnull(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _PipeBytes:
    """The binary side of standard output (``get -o -``), outliving a closed pipe: the
    bytes nobody reads any more are dropped, the command finishes (the download is
    still recorded on the ledger: bytes did leave)."""

    def __init__(self, buffer: BinaryIO) -> None:
        self._buffer = buffer
        self.pipe_closed = False

    def write(self, data: bytes) -> int:
        if not self.pipe_closed:
            try:
                self._buffer.write(data)
            except BrokenPipeError:
                self.pipe_closed = True
                _to_devnull(self._buffer)
        return len(data)

    def flush(self) -> None:
        if not self.pipe_closed:
            try:
                self._buffer.flush()
            except BrokenPipeError:
                self.pipe_closed = True
                _to_devnull(self._buffer)


def _to_devnull(stream: IO[Any]) -> None:
    """The reader went away: the descriptor now points at /dev/null, so that later writes
    and the interpreter's last flush at exit find nothing broken."""
    try:
        fileno = stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's capture buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno)
    finally:
        os.close(devnull)


def unaltered(stream: TextIO) -> TextIO:
    """Where a command writes machine-readable text (CSV, JSON, a signed note): ``stream``
    itself, or, for a :class:`HumanStream`, its :attr:`~HumanStream.unaltered` twin."""
    return cast(TextIO, stream.unaltered) if isinstance(stream, HumanStream) else stream


def binary(stream: TextIO) -> BinaryIO:
    """The bytes side of ``stream`` (standard output) for raw files, flushed of text
    first, surviving a closed pipe."""
    stream.flush()
    return cast(BinaryIO, _PipeBytes(stream.buffer))
