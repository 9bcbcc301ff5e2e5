"""What every command module of the CLI shares: exit codes, output helpers.

Light on purpose (standard library and :mod:`archiver.urls` only): every command imports
it, and ``archiver --version`` must answer in a blink.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from archiver.cli.output import unaltered
from archiver.urls import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_INITIALISED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def emit_json(out: TextIO, value: Any) -> None:
    """One JSON object, one line, flushed (scripts read lines as they come), written
    unaltered (machine-readable: see :mod:`archiver.cli.output`)."""
    stream = unaltered(out)
    stream.write(json.dumps(value, sort_keys=True) + "\n")
    stream.flush()


def fail(err: TextIO, message: str) -> None:
    print(f"archiver: error: {shown(message)}", file=err)


def shown(text: str) -> str:
    """``text`` safe for a terminal, on one line: control characters (escape sequences,
    carriage returns, tabs and newlines too) written as ``\\xNN`` and undecodable bytes
    as the bytes they were, so a hostile title, case name or URL can neither rewrite the
    screen nor forge a line of output (see :mod:`archiver.cli.output`)."""
    return printable(text)
