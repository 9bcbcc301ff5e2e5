"""What every command module of the CLI shares: exit codes, output helpers.

Light on purpose (standard library only): every command imports it, and ``archiver
--version`` must answer in a blink.
"""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_INITIALISED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def emit_json(out: TextIO, value: Any) -> None:
    """One JSON object, one line, flushed (scripts read lines as they come)."""
    out.write(json.dumps(value, sort_keys=True) + "\n")
    out.flush()


def fail(err: TextIO, message: str) -> None:
    print(f"archiver: error: {shown(message)}", file=err)


def shown(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, carriage
    returns) written as ``\\xNN``, so a hostile title or URL cannot rewrite the screen."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
