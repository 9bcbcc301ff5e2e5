"""Hostile family "fixity": a stored copy damaged behind the archive's back.

Each case damages one copy of one blob in one store (a byte flipped, the copy truncated,
extended, replaced or deleted; in the local store or in the Object Lock bucket) and
expects ``archiver audit`` to name the capture, the artifact and the store, to repair
the copy from the other store, and to leave a ledger with ``fixity.failed`` then
``fixity.repaired`` (from the healthy store); a second audit then finds everything whole.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixity_fixtures import Archived, archived, artifact, fixity_entries, one_capture

__all__ = ["archived", "one_capture"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the damage is in the stores, the database plays no part (the audit
    itself runs on PostgreSQL too in tests/archiver/test_audit.py)."""
    return f"sqlite:///{tmp_path / 'archive.db'}"

# (store damaged, how, artifact, the problem the audit must name)
CASES = [
    ("local", "flip", "capture.warc.gz", "altered"),
    ("local", "truncate", "capture.warc.gz", "altered"),
    ("local", "extend", "capture.warc.gz", "altered"),
    ("local", "delete", "capture.warc.gz", "missing"),
    ("s3", "flip", "capture.warc.gz", "altered"),
    ("s3", "truncate", "capture.warc.gz", "altered"),
    ("s3", "replace", "capture.warc.gz", "altered"),
    ("s3", "delete", "capture.warc.gz", "missing"),
    ("local", "flip", "manifest.json", "altered"),
    ("s3", "delete", "manifest.sig", "missing"),
    ("local", "truncate", "provenance.json", "altered"),
]


@pytest.mark.hostile("fixity")
@pytest.mark.parametrize(("store", "how", "name", "problem"), CASES,
                         ids=[f"{s}-{h}-{n}" for s, h, n, _ in CASES])
def test_a_damaged_copy_is_named_and_repaired_from_the_other_store(
    archived: Archived, one_capture: dict[str, Any], store: str, how: str, name: str,
    problem: str,
) -> None:
    cli = archived.cli
    target = artifact(one_capture, name)
    sha256 = target["sha256"]
    archived.damage(store, how, sha256)
    damaged, healthy = ((archived.local_name, archived.s3_name) if store == "local"
                        else (archived.s3_name, archived.local_name))

    code, out, _ = cli("audit", "--json")
    report = json.loads(out)
    assert code == 0, report  # repaired: no damage remains
    (finding,) = report["findings"]
    assert (finding["capture"], finding["artifact"], finding["store"], finding["problem"]) \
        == (one_capture["id"], name, damaged, problem)
    assert finding["repaired_from"] == healthy
    assert (report["damaged"], report["repaired"], report["remaining"]) == (1, 1, 0)

    (failed,) = fixity_entries(cli, "fixity.failed")
    assert failed.subject == f"capture:{one_capture['id']}"
    assert {k: failed.payload[k] for k in ("capture", "artifact", "store", "problem",
                                           "sha256")} == {
        "capture": one_capture["id"], "artifact": name, "store": damaged,
        "problem": problem, "sha256": sha256}
    (repaired,) = fixity_entries(cli, "fixity.repaired")
    assert repaired.seq == failed.seq + 1
    assert {k: repaired.payload[k] for k in ("capture", "artifact", "store", "from")} == {
        "capture": one_capture["id"], "artifact": name, "store": damaged, "from": healthy}
    if store == "s3":
        assert "Object Lock" in repaired.payload["note"]

    # The copy holds the evidence again, byte for byte.
    good = archived.local_path(sha256).read_bytes() if store == "s3" \
        else archived.s3_bytes(sha256)
    again = archived.s3_bytes(sha256) if store == "s3" \
        else archived.local_path(sha256).read_bytes()
    assert again == good
    assert len(good) == target["size"]
    second = cli.json("audit")
    assert (second["ok"], second["damaged"]) == (True, 0)
    assert cli("verify", one_capture["id"])[0] == 0
    assert cli("ledger", "verify")[0] == 0
