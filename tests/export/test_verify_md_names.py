"""VERIFY.md's steps print what a bundle names (folders, artifact names, key ids, cases)
escaped: a crafted bundle cannot rewrite the terminal of the person checking it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from archiver.export import guide

HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\u202ename"
"""Clears the screen, retitles the terminal, reverses the text that follows."""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is missing")


def bag(tmp_path: Path) -> Path:
    """A bag whose one capture folder and artifact carry terminal escapes in their
    names, the artifact missing, and a case name with escapes."""
    folder = tmp_path / "data" / "captures" / f"c-{HOSTILE}"
    folder.mkdir(parents=True)
    manifest = {"artifacts": [{"name": f"{HOSTILE}.warc.gz", "role": "warc", "size": 0,
                               "sha256": "0" * 64, "sha512": "0" * 128}],
                "requested": {"case": HOSTILE, "by": HOSTILE, "at": HOSTILE},
                "signer": {"key_id": HOSTILE}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "manifest.sig").write_bytes(b"")
    return tmp_path


@pytest.mark.parametrize("step", ["_ARTIFACTS", "_MANIFEST_SIGNATURES", "_ON_LEDGER",
                                  "_WARCS"])
def test_a_step_quotes_a_crafted_name_escaped_and_fails(tmp_path: Path, step: str) -> None:
    root = bag(tmp_path)
    (root / "data" / "custody" / "entries").mkdir(parents=True)
    done = subprocess.run(["bash", "-c", getattr(guide, step)], cwd=root,
                          capture_output=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert b"1 of 1" in done.stdout
    for raw in (b"\x1b", b"\x07", "\u202e".encode()):
        assert raw not in output, (step, output)
