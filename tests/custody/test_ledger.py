"""The custody ledger on SQLite and PostgreSQL: appends, proofs, triggers, and tampering
behind the application's back (triggers dropped) named by ``Ledger.verify``."""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
import sqlalchemy as sa
from ledger_forgery import (
    append_row,
    drop_triggers,
    forged_rotation,
    rewrite_row,
    rotation_payload,
)

from archiver.db import make_engine
from archiver.schema import upgrade
from chain_of_custody import merkle
from chain_of_custody.checkpoint import note_key_hash, sign_checkpoint, verify_note
from chain_of_custody.errors import LedgerError, LedgerIntegrityError, ProofError
from chain_of_custody.keys import SigningKey
from chain_of_custody.ledger import LEDGER_TABLES, Ledger, LedgerEntry, checkpoints_table

ORIGIN = "test.example/evidence-archiver"


def _clock() -> Callable[[], datetime]:
    ticks = itertools.count()
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return lambda: start + timedelta(microseconds=next(ticks))


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


def _fill(ledger: Ledger, key: SigningKey, n: int, *, checkpoint_each: bool = True) -> None:
    for i in range(n):
        ledger.append(actor="tester", action="note.added", subject=f"capture:{i}",
                      payload={"i": i, "text": f"entry {i}"})
        if checkpoint_each:
            ledger.create_checkpoint(key, ORIGIN)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written out recursively and independently of the ledger."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _drop_triggers(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for table in LEDGER_TABLES:
            if engine.dialect.name == "sqlite":
                for op in ("update", "delete"):
                    conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_{op}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_change ON {table}")
                conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_truncate ON {table}")


def _leaf_of(seq: int, time: str, payload: dict[str, object], subject: str,
             signed_by: str | None) -> bytes:
    entry = LedgerEntry(seq, time, "tester", "note.added", subject, payload, signed_by)
    return entry.leaf_hash()


def test_appends_are_numbered_and_leaves_are_canonical_json(engine: sa.Engine,
                                                           key: SigningKey) -> None:
    """seq counts from 0; the leaf is RFC 8785 JSON of the entry, naming the key that
    signed it; leaf hash per RFC 9162."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    first = ledger.append(actor="a", action="case.created", subject="case:1",
                          payload={"z": 1, "a": [2]})
    second = ledger.append(actor="b", action="note.added", subject="case:x", payload={})
    assert (first.seq, second.seq) == (0, 1)
    assert first.time == "2026-01-02T03:04:05.000000Z"
    assert first.leaf_bytes() == (
        b'{"action":"case.created","actor":"a","payload":{"a":[2],"z":1},"seq":0,'
        b'"signed_by":"' + key.key_id.encode() + b'",'
        b'"subject":"case:1","time":"2026-01-02T03:04:05.000000Z"}'
    )
    assert first.leaf_hash() == hashlib.sha256(b"\x00" + first.leaf_bytes()).digest()
    assert ledger.entry(0) == first
    assert ledger.size() == 2
    assert [e.seq for e in ledger.entries(subject="case:x")] == [1]


def test_roots_and_proofs_from_stored_nodes_match_an_independent_tree(
    engine: sa.Engine, key: SigningKey
) -> None:
    """For 1..21 entries, stored-node roots equal a from-scratch MTH, and every
    inclusion and consistency proof verifies against those roots."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    leaves: list[bytes] = []
    roots = [_mth([])]
    for i in range(21):
        leaves.append(ledger.append(actor="t", action="note.added", subject=f"s{i}",
                                    payload={"i": i}).leaf_bytes())
        roots.append(_mth(leaves))
    for size in range(1, 22):
        assert ledger.root_hash(size) == roots[size]
    for size in (1, 2, 7, 8, 13, 21):
        for seq in range(size):
            proof = ledger.inclusion_proof(seq, size)
            merkle.verify_inclusion(merkle.leaf_hash(leaves[seq]), seq, size, proof,
                                    roots[size])
        for size1 in range(1, size + 1):
            proof = ledger.consistency_proof(size1, size)
            merkle.verify_consistency(size1, size, proof, roots[size1], roots[size])
    with pytest.raises(ProofError, match="beyond the ledger's 21 entries"):
        ledger.inclusion_proof(3, 22)


def test_checkpoint_is_a_c2sp_signed_note_openssl_accepts(
    engine: sa.Engine, key: SigningKey, tmp_path: Path
) -> None:
    """The note is origin/size/base64 root, signed '— origin base64(keyhash||sig)', and
    openssl verifies the Ed25519 signature over the note text."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _fill(ledger, key, 3, checkpoint_each=False)
    checkpoint = ledger.create_checkpoint(key, ORIGIN)
    text, _, signature_line = checkpoint.note.partition("\n\n")
    text += "\n"
    assert text == f"{ORIGIN}\n3\n{base64.b64encode(ledger.root_hash(3)).decode()}\n"
    assert signature_line.startswith(f"\u2014 {ORIGIN} ")
    blob = base64.b64decode(signature_line.split(" ")[2])
    assert blob[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + key.public.raw).digest()[:4]
    assert blob[:4] == note_key_hash(ORIGIN, key.public)
    (tmp_path / "note.txt").write_bytes(text.encode())
    (tmp_path / "note.sig").write_bytes(blob[4:])
    (tmp_path / "key.pem").write_bytes(key.public.pem())
    verify = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
              "-in", "note.txt", "-sigfile", "note.sig"]
    done = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Signature Verified Successfully" in done.stdout
    head = verify_note(checkpoint.note, ORIGIN, key.public)
    assert (head.size, head.root_hash) == (3, ledger.root_hash(3))
    assert ledger.latest_checkpoint() == checkpoint
    assert ledger.checkpoint_covering(2) == checkpoint


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_database_refuses_update_and_delete_on_ledger_tables(
    engine: sa.Engine, key: SigningKey, table: str
) -> None:
    """The append-only triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _fill(ledger, key, 2)  # two entries complete one interior node; checkpoints exist
    column = {"ledger_entries": "actor", "ledger_nodes": "hash",
              "ledger_checkpoints": "origin"}[table]
    value = "'x'" if column != "hash" else "hash"
    statements = [f"UPDATE {table} SET {column} = {value}", f"DELETE FROM {table}"]
    if engine.dialect.name == "postgresql":
        statements.append(f"TRUNCATE {table}")
    for statement in statements:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    ledger.verify([key.public])


def test_concurrent_appends_get_distinct_consecutive_positions(
    database_url: str, key: SigningKey
) -> None:
    """Four writers with their own engines append at once; the ledger stays one tree."""
    setup = make_engine(database_url)
    upgrade(setup)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        engine = make_engine(database_url)
        try:
            ledger = Ledger(engine, origin=ORIGIN, signer=key)
            for i in range(15):
                ledger.append(actor=f"w{n}", action="note.added", subject=f"w{n}:{i}",
                              payload={"i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    ledger = Ledger(setup, origin=ORIGIN)
    ledger.create_checkpoint(key, ORIGIN)
    report = ledger.verify([key.public])
    assert report.entries == 60
    assert sorted(e.subject for e in ledger.entries()) == sorted(
        f"w{n}:{i}" for n in range(4) for i in range(15)
    )
    setup.dispose()


def test_verify_reports_the_ledger_when_intact(engine: sa.Engine, key: SigningKey) -> None:
    """An untouched ledger verifies, with its root and its unsigned tail counted."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _fill(ledger, key, 9)
    ledger.append(actor="t", action="access.viewed", subject="capture:1", payload={})
    report = ledger.verify([key.public])
    assert report.entries == 10
    assert report.checkpoints == 9
    assert report.root_hash == ledger.root_hash(10)
    assert report.unsigned_entries == 1


# -- tampering behind the application's back ------------------------------------------------


@pytest.fixture
def tampered(engine: sa.Engine, key: SigningKey) -> Ledger:
    """Nine entries, a checkpoint after each, triggers dropped (as an attacker would)."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _fill(ledger, key, 9)
    _drop_triggers(engine)
    return ledger


def _verify_fails(ledger: Ledger, key: SigningKey) -> LedgerIntegrityError:
    with pytest.raises(LedgerIntegrityError) as caught:
        ledger.verify([key.public])
    return caught.value


def test_edited_payload_is_named(tampered: Ledger, key: SigningKey) -> None:
    """A payload edited in place: the entry's content no longer matches its leaf hash."""
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_entries SET payload = :p WHERE seq = 5"),
                     {"p": '{"i":5,"text":"forged"}'})
    error = _verify_fails(tampered, key)
    assert error.seq == 5
    assert "entry 5 (note.added capture:5) was altered" in str(error)


def test_edited_entry_with_recomputed_leaf_hash_is_named(tampered: Ledger,
                                                         key: SigningKey) -> None:
    """An edit that also recomputes the leaf hash is caught by the entry's signature."""
    row = tampered.entry(4)
    payload = {"i": 4, "text": "forged"}
    forged = _leaf_of(4, row.time, payload, row.subject, row.signed_by)
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_entries SET payload = :p, leaf_hash = :h "
                             "WHERE seq = 4"),
                     {"p": rfc8785.dumps(payload).decode(), "h": forged})
    error = _verify_fails(tampered, key)
    assert error.seq == 4
    assert "entry 4 (note.added capture:4) has a signature that does not verify" in str(error)


def test_deleted_entry_is_named(tampered: Ledger, key: SigningKey) -> None:
    """A row deleted from the middle leaves a gap that is named."""
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq = 3"))
    error = _verify_fails(tampered, key)
    assert error.seq == 3
    assert "entry 3 is missing" in str(error)


def test_deleted_tail_is_named(tampered: Ledger, key: SigningKey) -> None:
    """Rows deleted from the end are found through the checkpoint that covered them."""
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq >= 7"))
    error = _verify_fails(tampered, key)
    assert error.seq == 7
    assert "entries from 7 on are missing" in str(error)


def test_inserted_entry_is_named(tampered: Ledger, key: SigningKey) -> None:
    """An entry slipped in at position 2 (later rows renumbered, every leaf hash
    recomputed so each row is self-consistent, signatures kept) is named."""
    rows = list(tampered.entries())
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM ledger_entries"))
        forged = [rows[0], rows[1], LedgerEntry(2, rows[1].time, "tester", "note.added",
                                                "capture:planted", {"planted": True},
                                                key.key_id, rows[1].signature)]
        forged += [LedgerEntry(e.seq + 1, e.time, e.actor, e.action, e.subject, e.payload,
                               e.signed_by, e.signature)
                   for e in rows[2:]]
        for e in forged:
            conn.execute(
                sa.text("INSERT INTO ledger_entries (seq, time, actor, action, subject, "
                        "payload, leaf_hash, signed_by, signature) "
                        "VALUES (:s, :t, :a, :x, :sub, :p, :h, :k, :sig)"),
                {"s": e.seq, "t": e.time, "a": e.actor, "x": e.action, "sub": e.subject,
                 "p": rfc8785.dumps(dict(e.payload)).decode(), "h": e.leaf_hash(),
                 "k": e.signed_by, "sig": e.signature},
            )
    error = _verify_fails(tampered, key)
    assert error.seq == 2
    assert "entry 2 (note.added capture:planted) has a signature that does not verify" in str(
        error)


def test_altered_stored_node_is_named(tampered: Ledger, key: SigningKey) -> None:
    """A stored interior node that the entries do not produce is named by its range."""
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND idx = 1"),
                     {"h": b"\x00" * 32})
    error = _verify_fails(tampered, key)
    assert error.seq == 4
    assert "entries 4-7 do not match the tree stored" in str(error)


def test_forged_checkpoint_signature_is_named(tampered: Ledger, key: SigningKey) -> None:
    """A checkpoint whose signature was altered fails, naming the checkpoint."""
    latest = tampered.latest_checkpoint()
    assert latest is not None
    text, _, line = latest.note.partition("\n\n")
    name, blob = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 1
    note = f"{text}\n\n{name} {base64.b64encode(bytes(raw)).decode()}\n"
    with tampered.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_checkpoints SET note = :n WHERE id = :i"),
                     {"n": note, "i": latest.id})
    error = _verify_fails(tampered, key)
    assert f"checkpoint #{latest.id} (size 9)" in str(error)
    assert "does not verify" in str(error)


def test_checkpoint_by_another_key_is_refused(engine: sa.Engine, key: SigningKey) -> None:
    """Another key signs no checkpoint of entries it did not authenticate; a checkpoint
    row it signed anyway (written into the database) is refused by verification."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _fill(ledger, key, 2, checkpoint_each=False)
    intruder = SigningKey.generate()
    with pytest.raises(LedgerIntegrityError, match=(
            r"entry 0 .* is signed by key .*, but that key is not in the archive's key history")):
        ledger.create_checkpoint(intruder, ORIGIN)
    root = ledger.root_hash(2)
    note = sign_checkpoint(ORIGIN, 2, root, intruder)
    with engine.begin() as conn:
        conn.execute(sa.insert(checkpoints_table).values(
            tree_size=2, root_hash=root, origin=ORIGIN, key_id=intruder.key_id,
            note=note, created="2026-01-02T03:04:05.000000Z"))
    with pytest.raises(LedgerIntegrityError, match="not in the archive's key history"):
        ledger.verify([key.public])


def test_database_failures_are_ledger_errors(tmp_path: Path) -> None:
    """A database without the ledger tables gives LedgerError, not a raw SQL error."""
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    ledger = Ledger(engine, origin=ORIGIN, signer=SigningKey.generate())
    with pytest.raises(LedgerError, match="cannot append to the ledger"):
        ledger.append(actor="a", action="b", subject="c", payload={})
    engine.dispose()


# -- entry authentication: only a holder of the archive's key writes what a checkpoint signs --


def _genesis(ledger: Ledger, key: SigningKey) -> None:
    """The first entry of an archive's ledger: the key that signs it, self-signed."""
    ledger.append(actor="tester", action="key.created", subject=f"key:{key.key_id}",
                  payload=rotation_payload(key))


@pytest.fixture
def signed(engine: sa.Engine, key: SigningKey) -> Ledger:
    """key.created, six entries, a checkpoint of all seven, then two more entries."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _genesis(ledger, key)
    _fill(ledger, key, 6, checkpoint_each=False)
    ledger.create_checkpoint(key, ORIGIN)
    _fill(ledger, key, 2, checkpoint_each=False)
    return ledger


def _checkpoints(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(checkpoints_table))
                   .scalar_one())


def test_a_ledger_without_a_signer_refuses_to_append(engine: sa.Engine) -> None:
    """No entry is written unauthenticated: a reading Ledger cannot append."""
    with pytest.raises(LedgerError, match="this ledger has no signing key, so it cannot "
                                          "append"):
        Ledger(engine, origin=ORIGIN).append(actor="a", action="b", subject="c", payload={})
    assert Ledger(engine).size() == 0


def test_entry_signature_is_ed25519_over_domain_separated_text_openssl_accepts(
    signed: Ledger, key: SigningKey, tmp_path: Path
) -> None:
    """Each entry is signed at append time over 'evidence-archiver/ledger-entry/v1',
    origin, seq and leaf hash; openssl verifies it with the public key alone."""
    entry = signed.entry(3)
    assert entry.signed_by == key.key_id
    assert entry.signature is not None
    text = (f"evidence-archiver/ledger-entry/v1\n{ORIGIN}\n3\n"
            f"{entry.leaf_hash().hex()}\n").encode()
    (tmp_path / "entry.txt").write_bytes(text)
    (tmp_path / "entry.sig").write_bytes(entry.signature)
    (tmp_path / "key.pem").write_bytes(key.public.pem())
    verify = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
              "-in", "entry.txt", "-sigfile", "entry.sig"]
    done = subprocess.run(verify, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert b'"signed_by":"' + key.key_id.encode() + b'"' in entry.leaf_bytes()


def test_forged_row_after_newest_checkpoint_is_named_and_never_signed(
    signed: Ledger, key: SigningKey
) -> None:
    """The reported defect: a well-formed row (right leaf hash and nodes) inserted after
    the newest checkpoint. Verification names it, and checkpointing refuses, naming it,
    instead of signing it in."""
    forged = append_row(signed.engine)
    assert forged.seq == 9
    before = _checkpoints(signed.engine)
    error = _verify_fails(signed, key)
    assert error.seq == 9
    assert ("entry 9 (note.added case:planted) carries no signature and no signed "
            "checkpoint covers it") in str(error)
    with pytest.raises(LedgerIntegrityError, match=r"^no checkpoint signed: entry 9 ") as caught:
        signed.create_checkpoint(key, ORIGIN)
    assert caught.value.seq == 9
    assert _checkpoints(signed.engine) == before


def test_forged_rotation_gives_the_forgers_key_nothing(
    signed: Ledger, key: SigningKey, engine: sa.Engine
) -> None:
    """A key.rotated row handing authority to the forger's key (signed by it), then rows
    the forger signed: the rotation is named by verify, by the key history and by
    checkpointing; the forger's key is never among the archive's keys."""
    forger = SigningKey.generate()
    rotation = forged_rotation(engine, forger, ORIGIN)
    append_row(engine, sign_with=forger, origin=ORIGIN)
    message = (f"entry {rotation.seq} (key.rotated key:{forger.key_id}) is signed by key "
               f"{forger.key_id[:16]}…, but the archive's key then was {key.key_id[:16]}…")
    assert message in str(_verify_fails(signed, key))
    with pytest.raises(LedgerIntegrityError, match=re.escape(message)):
        signed.key_history()
    with pytest.raises(LedgerIntegrityError, match=re.escape(message)):
        signed.create_checkpoint(key, ORIGIN)
    # Nor can the forger checkpoint it: its key signed no checkpoint, so the whole ledger
    # is checked from the first key entry on, and the rotation is found the same way.
    with pytest.raises(LedgerIntegrityError, match=re.escape(message)):
        signed.create_checkpoint(forger, ORIGIN)


def test_unsigned_forged_rotation_is_named_too(signed: Ledger, key: SigningKey,
                                              engine: sa.Engine) -> None:
    """An unsigned key.rotated row (looking like one from before entry authentication)
    after the newest checkpoint is named; the key history refuses it."""
    forger = SigningKey.generate()
    rotation = forged_rotation(engine, forger, ORIGIN, signed=False)
    append_row(engine, sign_with=forger, origin=ORIGIN)
    error = _verify_fails(signed, key)
    assert error.seq == rotation.seq
    assert "carries no signature and no signed checkpoint covers it" in str(error)
    with pytest.raises(LedgerIntegrityError, match=f"entry {rotation.seq} "):
        signed.key_history()


def test_rotation_hands_authority_to_the_new_key(engine: sa.Engine, key: SigningKey) -> None:
    """key.rotated, signed by the old key, makes the new key the one that signs: entries
    after it verify under the new key, the old key may no longer append, and the new
    key's first checkpoint checks the whole ledger and signs it."""
    old = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    _genesis(old, key)
    _fill(old, key, 3)
    new_key = SigningKey.generate()
    old.append(actor="tester", action="key.rotated", subject=f"key:{new_key.key_id}",
               payload=rotation_payload(new_key))
    with pytest.raises(LedgerError, match="is not the archive's current key"):
        old.append(actor="tester", action="note.added", subject="case:x", payload={})
    new = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=new_key)
    entry = new.append(actor="tester", action="note.added", subject="case:x", payload={})
    assert entry.signed_by == new_key.key_id
    with pytest.raises(LedgerError, match="is not the archive's current key"):
        old.create_checkpoint(key, ORIGIN)
    checkpoint = new.create_checkpoint(new_key, ORIGIN)
    assert checkpoint.tree_size == 6
    assert [k.key_id for k in new.key_history()] == [key.key_id, new_key.key_id]
    report = new.verify([key.public])
    assert (report.entries, report.checkpoints, report.unsigned_entries) == (6, 4, 0)


def _legacy_ledger(engine: sa.Engine, key: SigningKey) -> Ledger:
    """A ledger as written before entry authentication: rows with no signature, a
    checkpoint of the first three, two more after it."""
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    append_row(engine, action="key.created", subject=f"key:{key.key_id}",
               payload=rotation_payload(key), actor="tester")
    for i in range(2):
        append_row(engine, subject=f"capture:{i}", actor="tester")
    ledger.create_checkpoint(key, ORIGIN, legacy=True)
    for i in range(2, 4):
        append_row(engine, subject=f"capture:{i}", actor="tester")
    return ledger


def test_entries_from_before_authentication_are_trusted_only_under_a_checkpoint(
    engine: sa.Engine, key: SigningKey
) -> None:
    """Unsigned (older) entries pass where a signed checkpoint covers them; the tail no
    checkpoint covers is refused, except by the upgrade's one legacy checkpoint."""
    ledger = _legacy_ledger(engine, key)
    error = _verify_fails(ledger, key)
    assert error.seq == 3
    with pytest.raises(LedgerIntegrityError, match="no checkpoint signed: entry 3 "):
        ledger.create_checkpoint(key, ORIGIN)
    ledger.create_checkpoint(key, ORIGIN, legacy=True)
    ledger.append(actor="tester", action="note.added", subject="case:new", payload={})
    ledger.create_checkpoint(key, ORIGIN)
    report = ledger.verify([key.public])
    assert (report.entries, report.legacy_entries, report.unsigned_entries) == (6, 5, 0)


def test_a_stripped_signature_is_named_even_under_a_checkpoint(
    signed: Ledger, key: SigningKey, engine: sa.Engine
) -> None:
    """The leaf names its signer, so removing the signature of a covered entry (to make
    it look older than entry authentication) is named."""
    drop_triggers(engine)
    rewrite_row(engine, 4, signature=None)
    error = _verify_fails(signed, key)
    assert error.seq == 4
    assert "carries no signature: it was removed" in str(error)


def test_checkpointing_refuses_a_stored_tree_that_is_not_the_entries(
    signed: Ledger, key: SigningKey, engine: sa.Engine
) -> None:
    """A node over the entries since the last checkpoint rewritten (the rows untouched):
    the root the entries give is not the stored tree's, and nothing is signed."""
    drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_nodes SET hash = :h WHERE level = 3 AND idx = 0"),
                     {"h": b"\x01" * 32})
    with pytest.raises(LedgerIntegrityError,
                       match="the stored tree over entries 7-8 is not the tree of those"):
        signed.create_checkpoint(key, ORIGIN)


def test_checkpointing_refuses_when_the_signed_tree_was_rewritten(
    signed: Ledger, key: SigningKey, engine: sa.Engine
) -> None:
    """A stored node under the previous checkpoint rewritten: the new tree would not
    extend the signed one, so nothing is signed."""
    drop_triggers(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND idx = 0"),
                     {"h": b"\x01" * 32})
    with pytest.raises(LedgerIntegrityError,
                       match=r"the stored tree no longer gives the root signed in checkpoint"):
        signed.create_checkpoint(key, ORIGIN)


def _archive_before_entry_signing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, sa.Engine, SigningKey]:
    """An archive from before entry signing (schema 0004: unsigned rows, a checkpoint of
    the first three, two rows after it)."""
    from alembic import command
    from archive_cli import PASSPHRASE, archive_environment

    from archiver import models, schema
    from archiver.settings import load_settings

    home = tmp_path / "archive"
    home.mkdir(mode=0o700)
    archive_environment(monkeypatch, home, database_url)
    settings = load_settings()
    engine = make_engine(settings.database_url)
    config = schema._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    key = SigningKey.generate()
    key.write_encrypted(settings.key_file, PASSPHRASE.encode())
    with engine.begin() as conn:
        conn.execute(sa.insert(models.archive_meta), [
            {"key": "origin", "value": ORIGIN}, {"key": "created", "value": "2026-01-01"}])
        conn.execute(sa.insert(models.signing_keys).values(
            key_id=key.key_id, algorithm="ed25519", public_pem=key.public.pem().decode(),
            created="2026-01-01T00:00:00.000000Z"))
    append_row(engine, action="key.created", subject=f"key:{key.key_id}",
               payload=rotation_payload(key))
    for i in range(2):
        append_row(engine, subject=f"capture:{i}")
    root = _mth_of_hashes(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(checkpoints_table).values(
            tree_size=3, root_hash=root, origin=ORIGIN, key_id=key.key_id,
            note=sign_checkpoint(ORIGIN, 3, root, key), created="2026-01-01T00:00:00Z"))
    for i in range(2, 4):
        append_row(engine, subject=f"capture:{i}")
    return home, engine, key


def test_init_upgrading_an_older_ledger_signs_its_unsigned_tail_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """'archiver init' upgrades an archive from before entry signing and signs its
    unsigned tail in, once; new entries are signed; an unsigned row forged afterwards is
    refused, and running init again does not sign it in."""
    from archive_cli import Cli

    home, engine, key = _archive_before_entry_signing(database_url, tmp_path, monkeypatch)
    cli = Cli(home, capsys)
    cli.ok("init")
    report = cli.json("ledger", "verify")
    assert (report["ok"], report["entries"], report["legacy_entries"],
            report["unsigned_entries"]) == (True, 5, 5, 0)
    with cli.archive() as archive:
        entry = archive.ledger.append(actor="tester", action="note.added",
                                      subject="case:new", payload={})
        assert entry.signed_by == key.key_id
    cli.ok("ledger", "checkpoint")
    forged = append_row(engine).seq
    cli.ok("init")
    code, _out, err = cli("ledger", "checkpoint")
    assert code == 1
    assert err.startswith(f"archiver: error: no checkpoint signed: entry {forged} (")
    assert cli("ledger", "verify")[0] == 1
    engine.dispose()


def test_init_interrupted_after_the_upgrade_signs_the_unsigned_tail_when_run_again(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An 'archiver init' killed after the schema upgrade and before its one checkpoint
    (simulated: the upgrade alone, then a signed entry from another command): the next
    init finds the unsigned tail that predates entry signing and signs it in; an unsigned
    row forged after a signed one is still refused and named, by init's rerun too."""
    from archive_cli import Cli

    from archiver import schema

    home, engine, _key = _archive_before_entry_signing(database_url, tmp_path, monkeypatch)
    schema.upgrade(engine)
    cli = Cli(home, capsys)
    with cli.archive() as archive:
        archive.ledger.append(actor="tester", action="note.added", subject="case:new",
                              payload={})
    cli.ok("init")
    report = cli.json("ledger", "verify")
    assert (report["ok"], report["entries"], report["legacy_entries"],
            report["unsigned_entries"]) == (True, 6, 5, 0)
    forged = append_row(engine).seq
    cli.ok("init")
    code, _out, err = cli("ledger", "checkpoint")
    assert code == 1
    assert err.startswith(f"archiver: error: no checkpoint signed: entry {forged} (")
    code, out, _err = cli("ledger", "verify", "--json")
    assert code == 1
    assert f'"seq": {forged}' in out
    engine.dispose()


def test_the_upgrades_checkpoint_never_signs_an_unsigned_row_after_a_signed_one(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one checkpoint allowed to sign unsigned entries (legacy) takes only those older
    than every signed entry: a row forged after a signed one is refused and named, and
    Ledger.predating_tail does not offer it."""
    from archiver import schema

    _home, engine, key = _archive_before_entry_signing(database_url, tmp_path, monkeypatch)
    schema.upgrade(engine)
    ledger = Ledger(engine, clock=_clock(), origin=ORIGIN, signer=key)
    assert ledger.predating_tail() == 2
    ledger.append(actor="tester", action="note.added", subject="case:new", payload={})
    assert ledger.predating_tail() == 2
    forged = append_row(engine).seq
    assert ledger.predating_tail() == 0
    with pytest.raises(LedgerIntegrityError, match=rf"^no checkpoint signed: entry {forged} "
                       r"\(note\.added .*\) carries no signature") as refused:
        ledger.create_checkpoint(key, ORIGIN, legacy=True)
    assert refused.value.seq == forged
    latest = ledger.latest_checkpoint()
    assert latest is not None
    assert latest.tree_size == 3
    engine.dispose()


def _mth_of_hashes(engine: sa.Engine) -> bytes:
    with engine.connect() as conn:
        hashes = [bytes(h) for h in conn.execute(
            sa.text("SELECT leaf_hash FROM ledger_entries ORDER BY seq")).scalars()]
    builder = merkle.TreeBuilder()
    for value in hashes:
        builder.add(value)
    return builder.root()
