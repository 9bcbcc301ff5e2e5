"""The key and ledger commands: ``key show|rotate``,
``ledger verify|checkpoint|proof|timestamp|list``.

Imports of the archive happen inside each command (see :mod:`archiver.cli.main`).
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import TYPE_CHECKING, Any, TextIO

from archiver.cli.common import EXIT_FAILED, EXIT_OK, emit_json, shown

if TYPE_CHECKING:
    from archiver.archive import Archive
    from archiver.settings import Settings


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``command`` (``key`` or ``ledger``)."""
    if command == "key":
        sub = p.add_subparsers(dest="key_command", required=True, metavar="SUBCOMMAND")
        q = sub.add_parser("show", help="print the current public key (PEM) and its id")
        q.add_argument("--all", action="store_true", help="every key in the key history")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("rotate", help="replace the signing key by a new one (same "
                                          "passphrase); the old key signs the hand-over")
        q.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_key)
    elif command == "ledger":
        sub = p.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
        q = sub.add_parser("verify", help="recompute every hash and check every checkpoint")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("checkpoint", help="sign the current ledger head")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("proof", help="inclusion proof of one entry")
        q.add_argument("seq", type=int)
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("timestamp", help="get RFC 3161 tokens of the newest checkpoint now")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("list", help="entries, oldest first: one person's activity with "
                                        "--actor")
        q.add_argument("--actor", help="only this actor's entries: a login name (alice: "
                                       "user:alice) or a whole actor (os:root@host)")
        q.add_argument("--action", action="append", dest="actions", metavar="ACTION",
                       help="only entries of this action (repeatable), e.g. auth.failed")
        q.add_argument("--subject", help="only entries about this subject, e.g. case:Case 7")
        q.add_argument("--json", action="store_true", help="one JSON object per entry")
        p.set_defaults(handler=cmd_ledger)


def cmd_ledger(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.ledger_command == "timestamp":
        from archiver.cli.export import cmd_ledger_timestamp

        return cmd_ledger_timestamp(settings, args, out)
    from archiver.archive import Archive
    from chain_of_custody.errors import LedgerIntegrityError

    with Archive.open(settings) as archive:
        if args.ledger_command == "list":
            return _list_entries(archive, args, out)
        if args.ledger_command == "verify":
            try:
                report = archive.verify_ledger()
                tokens = archive.verify_timestamps()
            except LedgerIntegrityError as exc:
                if args.json:
                    emit_json(out, {"ok": False, "seq": exc.seq, "problem": str(exc)})
                else:
                    print(shown(f"FAIL  {exc}"), file=out)
                return EXIT_FAILED
            if args.json:
                emit_json(out, {"ok": True, "entries": report.entries,
                                 "checkpoints": report.checkpoints,
                                 "root_hash": report.root_hash.hex(),
                                 "unsigned_entries": report.unsigned_entries,
                                 "legacy_entries": report.legacy_entries,
                                 "timestamp_tokens": tokens})
            else:
                print(f"ok  ledger verified: {report.entries} entries, "
                      f"{report.checkpoints} checkpoints, root {report.root_hash.hex()}",
                      file=out)
                print(f"ok  {tokens} RFC 3161 timestamp tokens verified (each over its "
                      "checkpoint, as of its genTime, against the TSA chain kept with it)",
                      file=out)
                if report.unsigned_entries:
                    print(f"    {report.unsigned_entries} newest entries are not yet in a "
                          "checkpoint (each is signed; 'archiver ledger checkpoint' signs "
                          "them in)", file=out)
                if report.legacy_entries:
                    print(f"    {report.legacy_entries} entries from before entry signing, "
                          "each covered by a signed checkpoint", file=out)
            return EXIT_OK
        if args.ledger_command == "checkpoint":
            checkpoint = archive.checkpoint()
            if args.json:
                emit_json(out, {"id": checkpoint.id, "tree_size": checkpoint.tree_size,
                                 "root_hash": checkpoint.root_hash.hex(),
                                 "key_id": checkpoint.key_id, "note": checkpoint.note})
            else:
                out.write(checkpoint.note)
            return EXIT_OK
        proof = archive.proof(args.seq)
    entry = proof.entry
    proof_hex = [h.hex() for h in proof.hashes]
    data: dict[str, Any] = {
        "seq": entry.seq,
        "leaf": entry.leaf_bytes().decode("utf-8"),
        "leaf_hash": entry.leaf_hash().hex(),
        # The entry's own Ed25519 signature (None in entries older than entry signing).
        "signed_by": entry.signed_by,
        "signature": (None if entry.signature is None
                      else base64.b64encode(entry.signature).decode("ascii")),
        "tree_size": proof.tree_size,
        "root_hash": proof.root_hash.hex(),
        "inclusion_proof": proof_hex,
        "checkpoint": proof.checkpoint.note if proof.checkpoint else None,
    }
    if args.json:
        emit_json(out, data)
    else:
        print(shown(f"entry {entry.seq}: {entry.action} {entry.subject} at {entry.time}"),
              file=out)
        print(f"  leaf hash:  {data['leaf_hash']}", file=out)
        print(f"  signed by:  {entry.signed_by or 'nobody (written before entry signing)'}",
              file=out)
        print(f"  tree size:  {proof.tree_size}", file=out)
        print(f"  root hash:  {data['root_hash']} "
              f"(base64 {base64.b64encode(proof.root_hash).decode()})", file=out)
        for i, h in enumerate(proof_hex):
            print(f"  proof[{i}]:   {h}", file=out)
        if proof.checkpoint:
            print("  signed checkpoint:", file=out)
            for line in proof.checkpoint.note.splitlines():
                print(f"    {line}", file=out)
        else:
            print("  not yet in a signed checkpoint (proof is against the current root)",
                  file=out)
    return EXIT_OK


def actor_filter(text: str) -> list[str]:
    """The actors ``ledger list --actor`` matches: ``alice`` is the person
    ``user:alice`` (and an actor written exactly ``alice``, as operators were named
    before people had accounts); text with a colon is one whole actor
    (``os:root@host``)."""
    from archiver.people.access import actor_for

    return [text] if ":" in text else [actor_for(text), text]


def _list_entries(archive: Archive, args: argparse.Namespace, out: TextIO) -> int:
    actors = None if args.actor is None else actor_filter(args.actor)
    for entry in archive.ledger.entries(actors=actors, actions=args.actions,
                                        subject=args.subject):
        if args.json:
            emit_json(out, entry.as_json())
        else:
            payload = json.dumps(entry.payload, sort_keys=True, ensure_ascii=False)
            print(shown(f"{entry.seq:>6}  {entry.time}  {entry.actor}  {entry.action}  "
                        f"{entry.subject}  {payload}"), file=out)
    return EXIT_OK


def cmd_key(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive

    if args.key_command == "rotate":
        with Archive.open(settings) as archive:
            rotation = archive.rotate_key(actor=settings.operator)
        if args.json:
            emit_json(out, {"old_key_id": rotation.old_key_id,
                            "new_key_id": rotation.new_key_id,
                            "ledger_seq": rotation.ledger_seq,
                            "retired_key_file": str(rotation.retired_key_file)})
        else:
            print(f"key {rotation.new_key_id} is the archive's signing key now; "
                  f"{rotation.old_key_id} is retired (ledger entry {rotation.ledger_seq}, "
                  f"signed by it). Its encrypted private key was kept as "
                  f"{shown(str(rotation.retired_key_file))}. Publish the new key id.",
                  file=out)
        return EXIT_OK
    with Archive.open(settings) as archive:
        history = archive.key_history()
    keys = history if args.all else [k for k in history if k["retired"] is None]
    for key in keys:
        if args.json:
            emit_json(out, key)
        else:
            state = f"retired {key['retired']}" if key["retired"] else "current"
            print(f"# key id {key['key_id']} ({key['algorithm']}, created {key['created']}, "
                  f"{state})", file=out)
            out.write(key["public_pem"])
    return EXIT_OK
