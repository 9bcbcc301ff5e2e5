"""Ledger rows written or edited behind the application's back (family ``ledger-edits``),
on SQLite and on PostgreSQL.

The attacker is an insider with write access to the database (triggers dropped where
needed) but without the archive's signing key. Two tables of cases and a randomised one:

* rows forged after the newest checkpoint, each well-formed (right leaf hash, every
  Merkle node it completes stored): ``ledger verify`` names the row, checkpointing
  refuses naming it, and no checkpoint is added;
* seeded random edits of existing rows (actor, payload, time, leaf hash, a stored node,
  the signature column, the signer, a forged ``key.rotated``): ``ledger verify`` names
  the edited entry. ``hostile_suite.trials("ledger-edits", 10)`` trials per database,
  the trial's seed in its test id;
* the same through the ``archiver`` command as a user runs it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hostile_suite
import pytest
import rfc8785
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite
from ledger_forgery import append_row, drop_triggers, forged_rotation, rewrite_row
from ledger_forgery import rotation_payload as key_payload

from archiver.db import make_engine
from archiver.errors import ConfigError
from archiver.schema import upgrade
from chain_of_custody.errors import LedgerIntegrityError
from chain_of_custody.keys import SigningKey
from chain_of_custody.ledger import (
    Ledger,
    LedgerEntry,
    checkpoints_table,
    entry_signed_text,
    nodes_table,
)
from chain_of_custody.manifest import MANIFEST_FILE

ORIGIN = "hostile.example/evidence-archiver"
SEED = hostile_suite.seed()
TRIALS = hostile_suite.trials("ledger-edits", 10)
SIZE = 13  # entries of the ledger each case starts from; the newest checkpoint covers 9


@dataclass
class Setup:
    engine: sa.Engine
    ledger: Ledger
    key: SigningKey
    forger: SigningKey


@pytest.fixture
def setup(database_url: str) -> Iterator[Setup]:
    """key.created, eight entries with checkpoints at 5 and 9, four entries after."""
    engine = make_engine(database_url)
    upgrade(engine)
    key = SigningKey.generate()
    ledger = Ledger(engine, origin=ORIGIN, signer=key)
    ledger.append(actor="tester", action="key.created", subject=f"key:{key.key_id}",
                  payload=key_payload(key))
    for i in range(1, SIZE):
        ledger.append(actor="tester", action="note.added", subject=f"capture:{i}",
                      payload={"i": i})
        if i in (4, 8):
            ledger.create_checkpoint(key, ORIGIN)
    drop_triggers(engine)
    yield Setup(engine, ledger, key, SigningKey.generate())
    engine.dispose()


def _checkpoints(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(checkpoints_table))
                   .scalar_one())


def _named(s: Setup) -> LedgerIntegrityError:
    with pytest.raises(LedgerIntegrityError) as caught:
        s.ledger.verify([s.key.public])
    return caught.value


# -- rows forged after the newest checkpoint -------------------------------------------------


def _unsigned(s: Setup) -> int:
    return append_row(s.engine).seq


def _forgers_key(s: Setup) -> int:
    return append_row(s.engine, sign_with=s.forger, origin=ORIGIN).seq


def _archive_key_named_forger_signed(s: Setup) -> int:
    return append_row(s.engine, signed_by=s.key.key_id, sign_with=s.forger,
                      origin=ORIGIN).seq


def _replayed_signature(s: Setup) -> int:
    return append_row(s.engine, signed_by=s.key.key_id,
                      signature=s.ledger.entry(3).signature).seq


def _signature_without_signer(s: Setup) -> int:
    return append_row(s.engine, signature=s.ledger.entry(3).signature).seq


def _rotation_signed_by_forger(s: Setup) -> int:
    seq = forged_rotation(s.engine, s.forger, ORIGIN).seq
    append_row(s.engine, sign_with=s.forger, origin=ORIGIN)
    return seq


def _rotation_unsigned(s: Setup) -> int:
    seq = forged_rotation(s.engine, s.forger, ORIGIN, signed=False).seq
    append_row(s.engine, sign_with=s.forger, origin=ORIGIN)
    return seq


def _rotation_claiming_archive_key(s: Setup) -> int:
    seq = append_row(s.engine, action="key.rotated", subject=f"key:{s.forger.key_id}",
                     payload=key_payload(s.forger), signed_by=s.key.key_id,
                     sign_with=s.forger, origin=ORIGIN).seq
    append_row(s.engine, sign_with=s.forger, origin=ORIGIN)
    return seq


FORGED_ROWS: list[tuple[str, Callable[[Setup], int], str]] = [
    ("unsigned", _unsigned, "carries no signature and no signed checkpoint covers it"),
    ("signed-by-forger", _forgers_key, "is signed by key"),
    ("archive-key-named-forger-signed", _archive_key_named_forger_signed,
     "has a signature that does not verify"),
    ("replayed-signature", _replayed_signature, "has a signature that does not verify"),
    ("signature-without-signer", _signature_without_signer,
     "carries a signature but its leaf names no key"),
    ("rotation-signed-by-forger", _rotation_signed_by_forger, "is signed by key"),
    ("rotation-unsigned", _rotation_unsigned,
     "carries no signature and no signed checkpoint covers it"),
    ("rotation-claiming-archive-key", _rotation_claiming_archive_key,
     "has a signature that does not verify"),
]


@pytest.mark.hostile("ledger-edits")
@pytest.mark.parametrize(("forge", "expected"), [pytest.param(f, e, id=n)
                                                 for n, f, e in FORGED_ROWS])
def test_a_row_forged_after_the_newest_checkpoint_is_named_and_never_signed(
    setup: Setup, forge: Callable[[Setup], int], expected: str
) -> None:
    """Verification names the forged row; checkpointing refuses, naming it; nothing is
    signed, and the forged key (if any) is not among the archive's keys."""
    seq = forge(setup)
    assert seq == SIZE
    error = _named(setup)
    assert error.seq == seq
    assert f"entry {seq} (" in str(error)
    assert expected in str(error)
    before = _checkpoints(setup.engine)
    with pytest.raises(LedgerIntegrityError) as caught:
        setup.ledger.create_checkpoint(setup.key, ORIGIN)
    assert caught.value.seq == seq
    assert str(caught.value).startswith(f"no checkpoint signed: entry {seq} (")
    assert _checkpoints(setup.engine) == before
    if setup.ledger.entry(seq).action == "key.rotated":
        with pytest.raises(LedgerIntegrityError, match=rf"^entry {seq} \(key.rotated "):
            setup.ledger.key_history()
    else:
        assert [k.key_id for k in setup.ledger.key_history()] == [setup.key.key_id]


# -- seeded random edits of existing rows -----------------------------------------------------


def _rewrite_entry(s: Setup, entry: LedgerEntry, *, sign_with: SigningKey | None = None,
                   keep_signature: bool = True) -> None:
    """Store ``entry`` over the row of its seq, leaf hash recomputed; signed anew by
    ``sign_with`` or with the row's old signature kept."""
    leaf = entry.leaf_hash()
    signature = entry.signature if keep_signature else None
    if sign_with is not None:
        signature = sign_with.sign(entry_signed_text(ORIGIN, entry.seq, leaf))
    rewrite_row(s.engine, entry.seq, actor=entry.actor, action=entry.action,
                subject=entry.subject, payload=rfc8785.dumps(dict(entry.payload)).decode(),
                leaf_hash=leaf, signed_by=entry.signed_by, signature=signature)


def _edit(kind: str, s: Setup, rng: random.Random) -> tuple[int, str]:
    """Apply one edit of ``kind`` to a random row; the entry verify must name, and
    what it must say."""
    seq = rng.randrange(1 if kind == "key.rotated" else 0, SIZE)
    entry = s.ledger.entry(seq)
    altered = "was altered: its content does not match its leaf hash"
    if kind == "actor":
        rewrite_row(s.engine, seq, actor="someone-else")
        return seq, altered
    if kind == "payload":
        rewrite_row(s.engine, seq, payload='{"edited":true}')
        return seq, altered
    if kind == "time":
        rewrite_row(s.engine, seq, time="2020-01-01T00:00:00.000000Z")
        return seq, altered
    if kind == "leaf":
        rewrite_row(s.engine, seq, leaf_hash=rng.randbytes(32))
        return seq, altered
    if kind == "payload-and-leaf":
        _rewrite_entry(s, LedgerEntry(seq, entry.time, entry.actor, entry.action,
                                      entry.subject, {"edited": True}, entry.signed_by,
                                      entry.signature))
        return seq, "has a signature that does not verify"
    if kind == "signature-flipped":
        assert entry.signature is not None
        flipped = bytearray(entry.signature)
        flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
        rewrite_row(s.engine, seq, signature=bytes(flipped))
        return seq, "has a signature that does not verify"
    if kind == "signature-removed":
        rewrite_row(s.engine, seq, signature=None)
        return seq, "carries no signature: it was removed"
    if kind == "signer-swapped":
        _rewrite_entry(s, LedgerEntry(seq, entry.time, entry.actor, entry.action,
                                      entry.subject, entry.payload, s.forger.key_id),
                       sign_with=s.forger)
        return seq, f"is signed by key {s.forger.key_id[:16]}…"
    if kind == "key.rotated":
        _rewrite_entry(s, LedgerEntry(seq, entry.time, "tester", "key.rotated",
                                      f"key:{s.forger.key_id}", key_payload(s.forger),
                                      s.forger.key_id), sign_with=s.forger)
        return seq, f"is signed by key {s.forger.key_id[:16]}…"
    assert kind == "node"
    n = nodes_table.c
    with s.engine.begin() as conn:
        nodes = conn.execute(sa.select(n.level, n.idx).order_by(n.level, n.idx)).all()
        level, index = rng.choice(nodes)
        conn.execute(sa.update(nodes_table).where(n.level == level, n.idx == index)
                     .values(hash=rng.randbytes(32)))
    first, last = index << level, ((index + 1) << level) - 1
    return first, f"entries {first}-{last} do not match the tree stored"


EDITS = ("actor", "payload", "time", "leaf", "payload-and-leaf", "signature-flipped",
         "signature-removed", "signer-swapped", "key.rotated", "node")


@pytest.mark.hostile("ledger-edits")
@pytest.mark.parametrize("trial", [pytest.param(t, id=f"seed{SEED}-trial{t}")
                                   for t in range(TRIALS)])
def test_a_random_edit_of_an_existing_row_is_named(setup: Setup, trial: int) -> None:
    """Each edit kind at least once (in turn), at a random row: verify names it."""
    rng = random.Random(f"{SEED}-{trial}")
    kind = EDITS[trial % len(EDITS)]
    seq, expected = _edit(kind, setup, rng)
    error = _named(setup)
    assert (error.seq, kind) == (seq, kind), str(error)
    assert expected in str(error), (kind, str(error))


# -- through the command line -----------------------------------------------------------------


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive with a few events on its ledger, checkpointed."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url, {"ARCHIVER_BROWSER__ENABLED": "false"})
    cli = Cli(home, capsys)
    cli.ok("init")
    with cli.archive() as archive:
        for i in range(3):
            archive.ledger.append(actor="analyst@test.example", action="note.added",
                                  subject=f"case:{i}", payload={"i": i})
    cli.ok("ledger", "checkpoint")
    return cli


@pytest.mark.hostile("ledger-edits")
def test_cli_names_a_forged_row_and_refuses_to_checkpoint_it(cli: Cli) -> None:
    """As a user runs it: 'ledger verify' fails naming the row, 'ledger checkpoint'
    exits 1 with one line naming it, and signs nothing."""
    with cli.archive() as archive:
        seq = append_row(archive.engine).seq
        before = archive.ledger.latest_checkpoint()
    code, out, err = cli("ledger", "verify")
    assert code == 1
    assert out.startswith(f"FAIL  entry {seq} (note.added case:planted) carries no signature")
    assert "Traceback" not in out + err
    result = json.loads(cli("ledger", "verify", "--json")[1])
    assert (result["ok"], result["seq"]) == (False, seq)
    code, out, err = cli("ledger", "checkpoint")
    assert code == 1
    assert out == ""
    assert err.startswith(f"archiver: error: no checkpoint signed: entry {seq} (")
    assert err.count("\n") == 1
    with cli.archive() as archive:
        assert archive.ledger.latest_checkpoint() == before


@pytest.mark.hostile("ledger-edits")
def test_cli_reads_without_the_passphrase_and_records_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the passphrase 'ledger verify' runs (read-only); signing a checkpoint or
    appending an event refuses with one line, and nothing is written."""
    with cli.archive() as archive:
        archive.ledger.append(actor="analyst@test.example", action="note.added",
                              subject="case:late", payload={})
        size = archive.ledger.size()
    monkeypatch.delenv("ARCHIVER_SIGNING__PASSPHRASE")
    out = cli.ok("ledger", "verify")
    assert out.startswith(f"ok  ledger verified: {size} entries")
    code, out, err = cli("ledger", "checkpoint")
    assert code == 2
    assert err.startswith("archiver: error: no signing passphrase")
    assert err.count("\n") == 1
    with cli.archive() as archive:
        with pytest.raises(ConfigError, match="this command records an event on the custody "
                                              "ledger, which the archive's signing key must "
                                              "sign: no signing passphrase"):
            archive.ledger.append(actor="a", action="note.added", subject="case:x",
                                  payload={})
        assert archive.ledger.size() == size


@pytest.mark.hostile("ledger-edits")
def test_cli_shows_and_hands_out_nothing_it_cannot_record(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, fixture_site: FixtureSite
) -> None:
    """'show' and 'get' record access.viewed / access.downloaded, which needs the key:
    without the passphrase each exits 2 with one line, printing and writing nothing."""
    capture = cli.capture(fixture_site.url("/chunked.txt"))
    assert capture["status"] == "completed", capture
    with cli.archive() as archive:
        size = archive.ledger.size()
    monkeypatch.delenv("ARCHIVER_SIGNING__PASSPHRASE")
    for argv in (("show", capture["id"]), ("get", capture["id"], MANIFEST_FILE, "-o", "-")):
        code, out, err = cli(*argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("archiver: error: this command records an event on the "
                              "custody ledger, which the archive's signing key must sign: "
                              "no signing passphrase"), err
        assert err.count("\n") == 1
    with cli.archive() as archive:
        assert archive.ledger.size() == size
