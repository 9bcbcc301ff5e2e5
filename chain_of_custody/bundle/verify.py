"""The verifier: checks an evidence bundle completely, offline, with nothing else.

What the signature proves: the tag manifest lists the digest of every tag file, among
them the payload manifests, which list the digest of every payload file. One Ed25519
signature over ``tagmanifest-sha256.txt`` therefore covers every byte of the bag. It
attributes the bag to the archive only if the verifier already trusts the key (given as
``trusted_key_ids``); without that, a consistent bag could have been made by anyone, and
the report says so in as many words. The same holds for the TSA: a token checked against
the CA certificate shipped in the bundle shows consistency, one checked against a CA the
verifier brings (``tsa_roots``) shows the time.

Independently of the bag: each ``manifest.json`` is signed at capture time, each capture
is on the ledger by an entry naming its manifest's digest, each entry folds into the
signed checkpoint by its inclusion proof, and the checkpoint's tokens date it.

Threat model notes (those of reading the ZIP are in :mod:`.zipread`):

* The layout is fixed (:mod:`.layout`): the verifier derives every path from ids, so
  ``bundle.json`` cannot point a capture's manifest at another capture's file.
* Every problem is reported, not just the first: a court expert needs the whole picture.
* It never raises for what is inside the bundle: every failure is a check that failed,
  naming the file. Every message is bounded (quoted values are cut and escaped, a
  detail is at most :data:`MAX_DETAIL` characters), JSON is read with a depth limit,
  without ``NaN``/``Infinity``, huge numbers or duplicate keys, and every loop over
  what the bundle lists is bounded by the number of files it holds (indexes are built
  once, so no check is quadratic in what an attacker writes).

WARC record digests are checked by a ``warc_checker`` the caller injects (this package
must not depend on a WARC library, see the design's package table); without one the
check is reported as not done, never as passed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import rfc8785
from cryptography import x509

from chain_of_custody import merkle
from chain_of_custody.bundle.layout import (
    ALGORITHMS,
    BAG_INFO_FILE,
    BAGIT_FILE,
    BAGIT_VERSION,
    BUNDLE_TYPE,
    CHECKPOINT_FILE,
    INDEX_FILE,
    KEY_HISTORY_FILE,
    PAYLOAD_DIR,
    PROOF_TYPE,
    SIGNED_TAG_MANIFEST,
    TAG_SIGNATURE_FILE,
    VERIFY_FILE,
    capture_dir,
    decode_path,
    entry_path,
    key_path,
    parse_tags,
    payload_manifest,
    proof_path,
    replay_path,
    tag_manifest,
    token_paths,
)
from chain_of_custody.bundle.zipread import BagReader, ZipView, quote
from chain_of_custody.checkpoint import TreeHead, verify_note
from chain_of_custody.digest import CHUNK_SIZE, Digest, Hasher
from chain_of_custody.errors import CustodyError, ProofError, VerificationError
from chain_of_custody.keys import PublicKey
from chain_of_custody.ledger import KEY_ACTIONS
from chain_of_custody.manifest import MANIFEST_FILE, Manifest, ManifestArtifact, verify_manifest
from chain_of_custody.manifest import SIGNATURE_FILE as MANIFEST_SIGNATURE_FILE
from chain_of_custody.times import rfc3339
from chain_of_custody.timestamp import load_certificates, split_chain, verify_token

CLOCK_TOLERANCE = timedelta(minutes=5)
MAX_DETAIL = 1000
"""The longest a check's detail may be, in characters; beyond, it is cut."""
MAX_JSON_DEPTH = 64
_MAX_LISTED = 20  # problems of one kind printed one by one; beyond, a count
# Lone surrogates too: bytes a decoder kept with ``surrogateescape`` would be written
# back raw by a stream that allows it (or fail to print at all).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                      r"\ud800-\udfff]")
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, RecursionError,
              VerificationError)

WarcChecker = Callable[[IO[bytes]], "WarcCheck"]
#: ``on_progress(members_done, members, bytes_done, total_bytes)``: how far a
#: verification is. ``total_bytes`` is an estimate made before reading (every member
#: once, the WARCs and replay files a second time); ``bytes_done`` may fall short of it.
OnProgress = Callable[[int, int, int, int], None]
"""Reads one WARC file to its end and checks every record's block and payload digest."""


@dataclass(frozen=True)
class WarcCheck:
    """What a :data:`WarcChecker` found: records read, digests verified, revisit records
    found to match the record they refer to (``WARC-Refers-To``, same payload digest),
    problems."""

    records: int
    digests_checked: int
    problems: tuple[str, ...] = ()
    revisits_checked: int = 0


# -- the report ---------------------------------------------------------------------------


OK, FAIL, WARN = "ok", "fail", "warn"


@dataclass(frozen=True)
class Check:
    """One named check and its outcome: ``ok``, ``fail`` or ``warn`` (not a failure, but
    something the person relying on the bundle must know: what was *not* established)."""

    name: str
    status: str
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class BundleReport:
    """Everything :func:`verify_bundle` checked, in order."""

    path: str
    checks: tuple[Check, ...]
    case: str | None = None
    signer_key_id: str | None = None
    signer_trusted: bool | None = None
    """True: signed by a trusted key; False: by another; None: no trusted key given."""
    timestamps: tuple[str, ...] = ()
    """The genTime of every token that verified (RFC 3339)."""

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    def as_json(self) -> dict[str, Any]:
        return {
            "bundle": self.path,
            "ok": self.ok,
            "case": self.case,
            "signer_key_id": self.signer_key_id,
            "signer_trusted": self.signer_trusted,
            "timestamps": list(self.timestamps),
            "checks": [c.as_json() for c in self.checks],
        }


# -- the verifier -------------------------------------------------------------------------


@dataclass
class _State:
    """What earlier checks established, for later ones."""

    digests: dict[str, Digest] = field(default_factory=dict)
    index: dict[str, Any] | None = None
    keys: dict[str, PublicKey] = field(default_factory=dict)
    signer: str | None = None
    head: TreeHead | None = None
    note: bytes | None = None
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    token_times: list[str] = field(default_factory=list)
    trusted: bool | None = None


def verify_bundle(
    path: Path,
    *,
    trusted_key_ids: Collection[str] = (),
    tsa_roots: Sequence[x509.Certificate] | None = None,
    warc_checker: WarcChecker | None = None,
    on_progress: OnProgress | None = None,
) -> BundleReport:
    """Check an evidence bundle completely, offline: the bag, every digest, every
    signature, every inclusion proof, the checkpoint, the timestamp tokens, every WARC.

    ``trusted_key_ids``: key ids (SHA-256 hex of the raw Ed25519 key) the person
    verifying trusts; the bundle must be signed by one of them. ``tsa_roots``: the TSA
    CA certificates they trust (default: those shipped in the bundle, reported as not
    anchored). Returns the report of every check; raises :class:`BundleError` only when
    the file is not a ZIP at all. ``on_progress`` (see :data:`OnProgress`) is called
    after every member checked and every 1 MiB or so read, never more often.
    """
    bundle = BagReader(path)
    try:
        return _Verifier(bundle, str(path), trusted_key_ids, tsa_roots, warc_checker,
                         _Meter(on_progress)).run()
    finally:
        bundle.close()


class _Verifier:
    def __init__(
        self,
        bundle: BagReader,
        path: str,
        trusted_key_ids: Collection[str],
        tsa_roots: Sequence[x509.Certificate] | None,
        warc_checker: WarcChecker | None,
        meter: _Meter | None = None,
    ) -> None:
        self.bundle = bundle
        self.meter = meter or _Meter(None)
        self.path = path
        self.trusted = {k.lower() for k in trusted_key_ids}
        self.tsa_roots = tsa_roots
        self.warc_checker = warc_checker
        self.checks: list[Check] = []
        self.state = _State()

    def ok(self, name: str, detail: str = "") -> None:
        self.checks.append(Check(bounded(name), OK, bounded(detail)))

    def fail(self, name: str, detail: str) -> None:
        self.checks.append(Check(bounded(name), FAIL, bounded(detail)))

    def warn(self, name: str, detail: str) -> None:
        self.checks.append(Check(bounded(name), WARN, bounded(detail)))

    def fail_many(self, name: str, problems: Sequence[str]) -> None:
        for problem in problems[:_MAX_LISTED]:
            self.fail(name, problem)
        if len(problems) > _MAX_LISTED:
            self.fail(name, f"... and {len(problems) - _MAX_LISTED} more problems like these")

    def run(self) -> BundleReport:
        for warning in self.bundle.warnings[:_MAX_LISTED]:
            self.warn("ZIP structure", warning)
        if self.bundle.problems:
            self.fail_many("ZIP structure", self.bundle.problems)
            return self._report()
        self.ok("ZIP structure", f"one bag folder {self.bundle.root!r}, "
                                 f"{len(self.bundle.members)} files")
        members = self.bundle.members
        reread = sum(info.file_size for name, info in members.items()
                     if name.endswith((".warc", ".warc.gz", ".wacz")))
        self.meter.start(len(members), sum(i.file_size for i in members.values()) + reread)
        steps = ((BAGIT_FILE, self._bagit_txt), ("bag", self._bag),
                 ("bundle signature", self._signature), ("signer", self._trust),
                 ("bundle index", self._index), ("key history", self._keys),
                 ("checkpoint", self._checkpoint), ("ledger entries", self._entries),
                 ("timestamp", self._timestamps), ("captures", self._captures))
        for name, step in steps:
            try:
                step()
            except _MALFORMED as exc:
                # Signed JSON of an unexpected shape: a failed check, never a traceback.
                self.fail(name, f"malformed bundle data ({type(exc).__name__}: "
                                f"{quote(str(exc), 300)[1:-1]})")
        return self._report()

    def _report(self) -> BundleReport:
        index = self.state.index or {}
        case = index.get("case")
        return BundleReport(
            path=self.path,
            checks=tuple(self.checks),
            case=case if isinstance(case, str) else None,
            signer_key_id=self.state.signer,
            signer_trusted=self.state.trusted,
            timestamps=tuple(self.state.token_times),
        )

    # -- the bag ------------------------------------------------------------------------

    def _bagit_txt(self) -> None:
        name = BAGIT_FILE
        try:
            raw = self.bundle.read_small(name)
            if raw.startswith(b"\xef\xbb\xbf"):
                raise VerificationError("bagit.txt must not begin with a byte-order mark")
            tags = parse_tags(raw.decode("utf-8"))
        except (VerificationError, UnicodeDecodeError) as exc:
            self.fail(name, f"not a BagIt bag: {exc}")
            return
        version = tags.get("BagIt-Version", [""])[0]
        encoding = tags.get("Tag-File-Character-Encoding", [""])[0]
        if version != BAGIT_VERSION or encoding.upper() != "UTF-8":
            self.fail(name, f"declares BagIt-Version {version!r} and encoding {encoding!r}; "
                            f"a bundle is BagIt {BAGIT_VERSION}, UTF-8")
            return
        self.ok(name, f"BagIt {version}, {encoding}")

    def _read_manifest(self, name: str) -> dict[str, str] | None:
        try:
            text = self.bundle.read_small(name).decode("utf-8")
        except (VerificationError, UnicodeDecodeError) as exc:
            self.fail(name, f"{name}: {exc}")
            return None
        entries: dict[str, str] = {}
        problems = []
        algorithm = name.rsplit("-", 1)[1].removesuffix(".txt")
        width = {"sha256": 64, "sha512": 128}[algorithm]
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(None, 1)
            if len(parts) != 2 or not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", parts[0]):
                problems.append(f"{name} line {number} is not '<{algorithm}> <path>'")
                continue
            file_path = decode_path(parts[1].lstrip("*").rstrip("\r"))
            if file_path in entries:
                problems.append(f"{name} lists {file_path} twice")
                continue
            if (file_path.startswith("/") or ".." in file_path.split("/")
                    or "\\" in file_path):
                problems.append(f"{name} lists an unsafe path {file_path!r}")
                continue
            entries[file_path] = parts[0].lower()
        if problems:
            self.fail_many(name, problems)
        return entries

    def _bag(self) -> None:
        payload = sorted(n for n in self.bundle.members if n.startswith(PAYLOAD_DIR))
        tags = sorted(n for n in self.bundle.members if not n.startswith(PAYLOAD_DIR))
        damaged = []
        for name in payload + tags:
            try:
                self.state.digests[name] = self.bundle.digest(name, self.meter.read)
            except VerificationError as exc:
                damaged.append(str(exc))
            self.meter.member_done()
        if damaged:
            self.fail_many("ZIP members", damaged)
        for algorithm in ALGORITHMS:
            name = payload_manifest(algorithm)
            if not self.bundle.has(name):
                self.fail(f"payload ({name})", f"{name} is missing: a bundle has payload "
                                               f"manifests for {' and '.join(ALGORITHMS)}")
                continue
            listed = self._read_manifest(name)
            if listed is not None:
                self._compare(f"payload ({name})", name, algorithm, listed, payload,
                              "payload file")
        self._oxum(payload)
        for algorithm in ALGORITHMS:
            name = tag_manifest(algorithm)
            if not self.bundle.has(name):
                self.fail(f"tag files ({name})", f"{name} is missing")
                continue
            listed = self._read_manifest(name)
            if listed is None:
                continue
            # BagIt: no tag manifest lists a tag manifest (of any algorithm)
            covered = [t for t in tags
                       if not t.startswith("tagmanifest-") and t != TAG_SIGNATURE_FILE]
            for must in (BAGIT_FILE, BAG_INFO_FILE, *map(payload_manifest, ALGORITHMS),
                         VERIFY_FILE):
                if must not in listed and self.bundle.has(must):
                    self.fail(f"tag files ({name})", f"{name} does not list {must}")
            self._compare(f"tag files ({name})", name, algorithm, listed, covered, "tag file")

    def _compare(self, check: str, manifest: str, algorithm: str, listed: Mapping[str, str],
                 present: Sequence[str], kind: str) -> None:
        problems = []
        for name in sorted(set(listed) - set(present)):
            problems.append(f"{name} is listed in {manifest} but missing from the bag "
                            "(a file was removed)")
        for name in sorted(set(present) - set(listed)):
            problems.append(f"{name} is in the bag but not in {manifest} "
                            f"(a {kind} was added)")
        for name in sorted(set(present) & set(listed)):
            digest = self.state.digests.get(name)
            if digest is None:
                continue  # damaged: already reported
            if getattr(digest, algorithm) != listed[name]:
                problems.append(f"{name} does not match its {algorithm} in {manifest} "
                                "(the file was altered)")
        if problems:
            self.fail_many(check, problems)
        else:
            total = sum(self.state.digests[n].size for n in present if n in self.state.digests)
            self.ok(check, f"{len(present)} {kind}s, {total} bytes, every {algorithm} matches")

    def _oxum(self, payload: Sequence[str]) -> None:
        name = BAG_INFO_FILE
        try:
            tags = parse_tags(self.bundle.read_small(name).decode("utf-8"))
        except (VerificationError, UnicodeDecodeError) as exc:
            self.fail(name, f"{name}: {exc}")
            return
        oxum = tags.get("Payload-Oxum", [""])[0]
        size = sum(self.bundle.members[n].file_size for n in payload)
        if oxum != f"{size}.{len(payload)}":
            self.fail(name, f"Payload-Oxum is {oxum!r}, the payload is {size} bytes in "
                            f"{len(payload)} files")
        else:
            self.ok(name, f"Payload-Oxum {oxum}")

    # -- who signed ---------------------------------------------------------------------

    def _signature(self) -> None:
        check = "bundle signature"
        try:
            tags = parse_tags(self.bundle.read_small(BAG_INFO_FILE).decode("utf-8"))
        except (VerificationError, UnicodeDecodeError):
            tags = {}
        key_id = tags.get("Evidence-Signing-Key-Id", [""])[0].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", key_id):
            self.fail(check, "bag-info.txt names no Evidence-Signing-Key-Id")
            return
        self.state.signer = key_id
        if not self.bundle.has(TAG_SIGNATURE_FILE):
            self.fail(check, f"the bundle is not signed: {TAG_SIGNATURE_FILE} is missing")
            return
        try:
            key = self._key_file(key_id)
            signature = self.bundle.read_small(TAG_SIGNATURE_FILE)
            signed = self.bundle.read_small(SIGNED_TAG_MANIFEST)
            key.verify(signature, signed)
        except CustodyError as exc:
            self.fail(check, f"{SIGNED_TAG_MANIFEST} signature by key {key_id} does not "
                             f"verify: {exc}")
            return
        self.ok(check, f"{SIGNED_TAG_MANIFEST} is signed by key {key_id} (Ed25519), so "
                       "every file listed under it is as signed")

    def _key_file(self, key_id: str) -> PublicKey:
        name = key_path(key_id)
        key = PublicKey.from_pem(self.bundle.read_small(name))
        if key.key_id != key_id:
            raise VerificationError(f"{name} holds key {key.key_id}, not {key_id}")
        return key

    def _trust(self) -> None:
        check = "signer"
        signer = self.state.signer
        if signer is None:
            self.fail(check, "cannot tell who signed: the bundle names no signing key")
            return
        if not self.trusted:
            self.state.trusted = None
            self.warn(check, f"integrity checked, but NOT who signed: no trusted key was "
                             f"given. The bundle is signed by key {signer}; it is the "
                             "archive's only if that is the key id the archive publishes "
                             "(pass it with --trusted-key)")
            return
        if signer in self.trusted:
            self.state.trusted = True
            self.ok(check, f"signed by the trusted key {signer}")
        else:
            self.state.trusted = False
            self.fail(check, f"the bundle is signed by key {signer}, which is not a trusted "
                             f"key ({', '.join(sorted(self.trusted))})")

    # -- what the bundle says it holds --------------------------------------------------

    def _index(self) -> None:
        check = "bundle index"
        try:
            index = load_json(self.bundle.read_small(INDEX_FILE), INDEX_FILE)
        except VerificationError as exc:
            self.fail(check, f"{INDEX_FILE} is unreadable: {exc}")
            return
        if not isinstance(index, dict) or index.get("type") != BUNDLE_TYPE:
            self.fail(check, f"{INDEX_FILE} is not a {BUNDLE_TYPE} document")
            return
        problems = []
        for key, kind in (("case", str), ("captures", list), ("custody", dict),
                          ("archive", dict)):
            if not isinstance(index.get(key), kind):
                problems.append(f"{INDEX_FILE} has no valid {key!r}")
        files = len(self.bundle.members)
        for key, items in (("captures", index.get("captures")),
                           ("custody entries", index.get("custody", {}).get("entries")),
                           ("timestamps", index.get("custody", {}).get("timestamps"))):
            if isinstance(items, list) and len(items) > files:
                problems.append(f"{INDEX_FILE} lists {len(items)} {key}, more than the "
                                f"{files} files of the bundle could hold")
        if problems:
            self.fail_many(check, problems)
            return
        self.state.index = index
        try:
            tags = parse_tags(self.bundle.read_small(BAG_INFO_FILE).decode("utf-8"))
        except (VerificationError, UnicodeDecodeError):
            tags = {}
        if _words(tags.get("Evidence-Case", [""])[0]) != _words(index["case"]):
            problems.append("bag-info.txt and bundle.json name different cases")
        archive_key = index["archive"].get("signing_key_id")
        if self.state.signer and archive_key != self.state.signer:
            problems.append(f"bundle.json names signing key {archive_key}, bag-info.txt "
                            f"{self.state.signer}")
        listed = {str(c.get("id")) for c in index["captures"] if isinstance(c, dict)}
        for member in self.bundle.members:
            for prefix in ("data/captures/", "data/replay/"):
                if member.startswith(prefix):
                    capture = member[len(prefix):].split("/")[0].removesuffix(".wacz")
                    if capture not in listed:
                        problems.append(f"{member} belongs to capture {capture}, which "
                                        "bundle.json does not list")
        if problems:
            self.fail_many(check, problems)
        else:
            self.ok(check, f"case {index['case']!r}: {len(listed)} captures, "
                           f"{len(index['custody'].get('entries', []))} ledger entries")

    def _keys(self) -> None:
        check = "key history"
        keys: dict[str, PublicKey] = {}
        problems = []
        try:
            history = load_json(self.bundle.read_small(KEY_HISTORY_FILE), KEY_HISTORY_FILE)
            listed = [str(k["key_id"]) for k in history["keys"]]
        except (VerificationError, KeyError, TypeError) as exc:
            self.fail(check, f"{KEY_HISTORY_FILE} is unreadable: {exc}")
            return
        if len(listed) > len(self.bundle.members):
            self.fail(check, f"{KEY_HISTORY_FILE} lists {len(listed)} keys, more than the "
                             "bundle has files")
            return
        for key_id in listed:
            try:
                keys[key_id] = self._key_file(key_id)
            except CustodyError as exc:
                problems.append(f"key {quote(key_id)}: {exc}")
        files = {n for n in self.bundle.members
                 if n.startswith("data/keys/") and n.endswith(".pem")}
        for extra in sorted(files - {key_path(k) for k in listed}):
            problems.append(f"{extra} is not in the key history")
        if self.state.signer and self.state.signer not in keys:
            problems.append(f"the bundle's signing key {self.state.signer} is not in the key "
                            "history")
        self.state.keys = keys
        if problems:
            self.fail_many(check, problems)
        else:
            self.ok(check, f"{len(keys)} key(s): " + ", ".join(keys))

    # -- the ledger ---------------------------------------------------------------------

    def _checkpoint(self) -> None:
        check = "checkpoint"
        index = self.state.index
        if index is None:
            self.fail(check, "cannot check the checkpoint: the bundle index is unreadable")
            return
        described = index["custody"].get("checkpoint") or {}
        key_id = str(described.get("key_id", ""))
        origin = str(index["archive"].get("origin", ""))
        try:
            note_bytes = self.bundle.read_small(CHECKPOINT_FILE)
            note = note_bytes.decode("utf-8")
            key = self.state.keys.get(key_id)
            if key is None:
                raise VerificationError(f"it names key {key_id or '(none)'}, which is not "
                                        "in the key history")
            head = verify_note(note, origin, key)
        except (VerificationError, UnicodeDecodeError) as exc:
            self.fail(check, f"{CHECKPOINT_FILE}: {exc}")
            return
        if (head.size != described.get("tree_size")
                or head.root_hash.hex() != described.get("root_hash")):
            self.fail(check, "bundle.json describes another tree than the signed checkpoint")
            return
        self.state.head = head
        self.state.note = note_bytes
        self.ok(check, f"signed by key {key_id} for {origin}: tree of {head.size} entries, "
                       f"root {head.root_hash.hex()}")

    def _entries(self) -> None:
        check = "ledger entries"
        index, head = self.state.index, self.state.head
        if index is None or head is None:
            self.fail(check, "cannot check the ledger entries without a valid checkpoint")
            return
        seqs = index["custody"].get("entries")
        if not isinstance(seqs, list) or not all(isinstance(s, int) for s in seqs):
            self.fail(check, "bundle.json lists no ledger entries")
            return
        problems = []
        for seq in seqs:
            try:
                self.state.entries[seq] = self._entry(seq, head)
            except (VerificationError, ValueError) as exc:
                problems.append(f"entry {seq}: {exc}")
        expected = {entry_path(s) for s in seqs} | {proof_path(s) for s in seqs}
        for member in sorted(self.bundle.members):
            if member.startswith("data/custody/") and member.endswith(".json") \
                    and member not in expected:
                problems.append(f"{member} is not a listed entry or proof")
        registered: dict[str, list[object]] = {}
        for e in self.state.entries.values():
            payload = e.get("payload")
            if e.get("action") in KEY_ACTIONS and isinstance(payload, dict):
                registered.setdefault(str(payload.get("key_id")), []).append(
                    payload.get("public_key_pem"))
        for key_id, key in self.state.keys.items():
            if not any(_same_key(pem, key) for pem in registered.get(key_id, [])):
                problems.append(f"key {key_id} is not registered by any ledger entry in "
                                "the bundle")
        if problems:
            self.fail_many(check, problems)
        else:
            self.ok(check, f"{len(seqs)} entries, each folds by its inclusion proof into "
                           f"the signed root of {head.size} entries")

    def _entry(self, seq: int, head: TreeHead) -> dict[str, Any]:
        leaf = self.bundle.read_small(entry_path(seq))
        entry = load_json(leaf, entry_path(seq))
        if not isinstance(entry, dict) or entry.get("seq") != seq:
            raise VerificationError(f"{entry_path(seq)} is not the entry of seq {seq}")
        if rfc8785.dumps(entry) != leaf:
            raise VerificationError(f"{entry_path(seq)} is not in RFC 8785 canonical form, so "
                                    "it is not the leaf that was hashed")
        proof = load_json(self.bundle.read_small(proof_path(seq)), proof_path(seq))
        if not isinstance(proof, dict) or proof.get("type") != PROOF_TYPE \
                or proof.get("seq") != seq:
            raise VerificationError(f"{proof_path(seq)} is not the inclusion proof of {seq}")
        if proof.get("tree_size") != head.size:
            raise VerificationError(f"its proof is for a tree of {proof.get('tree_size')} "
                                    f"entries, the checkpoint's has {head.size}")
        leaf_hash = merkle.leaf_hash(leaf)
        try:
            path = [bytes.fromhex(h) for h in proof.get("inclusion_proof", [])]
            computed = merkle.root_from_inclusion_proof(leaf_hash, seq, head.size, path)
        except (ValueError, TypeError) as exc:
            raise ProofError(f"its inclusion proof is malformed: {exc}") from exc
        if computed != head.root_hash:
            raise ProofError(
                f"({entry.get('action')} {entry.get('subject')}) its inclusion proof leads "
                f"to root {computed.hex()}, not to the signed checkpoint's root "
                f"{head.root_hash.hex()}"
            )
        return entry

    def _timestamps(self) -> None:
        index, note = self.state.index, self.state.note
        if index is None or note is None:
            self.fail("timestamp", "cannot check timestamps without a valid checkpoint")
            return
        described = index["custody"].get("timestamps") or []
        if not described:
            reasons = "; ".join(str(r) for r in index["custody"].get("timestamp_problems", []))
            self.warn("timestamp", "NO trusted timestamp: the checkpoint carries no RFC 3161 "
                                   "token, so the times in this bundle rest on the archive's "
                                   "own clock" + (f" (exporter: {reasons})" if reasons else ""))
            return
        problems = [str(r) for r in index["custody"].get("timestamp_problems", [])]
        if problems:
            self.warn("timestamp", "the exporter could not get every timestamp: "
                                   + "; ".join(problems))
        files = {n for n in self.bundle.members if n.startswith("data/custody/timestamps/")}
        for number, item in enumerate(described, 1):
            token_file, ca_file = token_paths(number)
            files -= {token_file, ca_file}
            self._token(f"timestamp {number} ({item.get('tsa', '?')})", token_file, ca_file,
                        note)
        for extra in sorted(files):
            self.fail("timestamp", f"{extra} is not a listed token")

    def _token(self, check: str, token_file: str, ca_file: str, note: bytes) -> None:
        try:
            response = self.bundle.read_small(token_file)
            shipped = load_certificates(self.bundle.read_small(ca_file), ca_file)
            shipped_roots, intermediates = split_chain(shipped)
            roots = list(self.tsa_roots) if self.tsa_roots is not None else shipped_roots
            info = verify_token(response, note, roots=roots, intermediates=intermediates)
        except VerificationError as exc:
            self.fail(check, f"{token_file}: {exc}")
            return
        gen_time = rfc3339(info.gen_time, timespec="seconds")
        self.state.token_times.append(gen_time)
        self.ok(check, f"the signed checkpoint existed at {gen_time} (genTime), attested by "
                       f"{info.tsa_subject} (serial {info.serial_number}, {info.hash_algorithm})"
                       f"; certificates valid at that time")
        if self.tsa_roots is None:
            self.warn(check, f"TSA not anchored: checked against the CA shipped in the bundle "
                             f"({info.root_subject}, SHA-256 {info.root_sha256}); pass the "
                             "TSA's published CA certificate with --tsa-ca to anchor it")
        late = [(seq, e.get("time")) for seq, e in sorted(self.state.entries.items())
                if _after(e.get("time"), info.gen_time + CLOCK_TOLERANCE)]
        if late:
            seq, when = late[0]
            self.warn(check, f"{len(late)} entries claim a time after this genTime (first: "
                             f"entry {seq} at {when}): the archive's clock was ahead")

    # -- the captures -------------------------------------------------------------------

    def _captures(self) -> None:
        index = self.state.index
        if index is None:
            self.fail("captures", "cannot check captures: the bundle index is unreadable")
            return
        self._by_folder: dict[str, set[str]] = {}
        for member in self.bundle.members:
            if member.startswith("data/captures/"):
                folder = "/".join(member.split("/", 3)[:3])
                self._by_folder.setdefault(folder, set()).add(member)
        self._ledger_by_subject: dict[tuple[str, str], list[int]] = {}
        for seq, entry in sorted(self.state.entries.items()):
            key = (str(entry.get("action")), str(entry.get("subject")))
            self._ledger_by_subject.setdefault(key, []).append(seq)
        for capture in index["captures"]:
            capture_id = str(capture.get("id", "")) if isinstance(capture, dict) else ""
            if not re.fullmatch(r"[0-9A-Za-z-]{1,64}", capture_id):
                self.fail("captures", f"bundle.json lists a capture with id "
                                      f"{quote(capture_id)}")
                continue
            try:
                if capture.get("status") == "completed":
                    self._capture(capture_id, capture, index["case"])
                else:
                    self._failed_capture(capture_id)
            except _MALFORMED as exc:
                self.fail(f"capture {capture_id}", f"its manifest or listing is malformed "
                                                   f"({type(exc).__name__}: "
                                                   f"{quote(str(exc), 300)[1:-1]})")

    def _failed_capture(self, capture_id: str) -> None:
        check = f"capture {capture_id}"
        found = self._ledger_by_subject.get(("capture.failed", f"capture:{capture_id}"), [])
        if found:
            self.ok(check, f"failed capture, recorded on the ledger (entry {found[0]})")
        else:
            self.fail(check, "listed as failed, but no capture.failed entry records it")

    def _capture(self, capture_id: str, listed: Mapping[str, Any], case: str) -> None:
        name = f"capture {capture_id}"
        folder = capture_dir(capture_id)
        try:
            canonical = self.bundle.read_small(f"{folder}/{MANIFEST_FILE}")
            signature = self.bundle.read_small(f"{folder}/{MANIFEST_SIGNATURE_FILE}")
            manifest = verify_manifest(canonical, signature, self.state.keys)
        except VerificationError as exc:
            self.fail(f"{name}: manifest", str(exc))
            return
        except RecursionError:
            self.fail(f"{name}: manifest", f"{folder}/{MANIFEST_FILE} is JSON nested too deep")
            return
        self.ok(f"{name}: manifest", f"{MANIFEST_FILE} signed by key {manifest.signer.key_id}")
        if manifest.capture_id != capture_id:
            self.fail(f"{name}: manifest", f"the manifest in {folder} is of capture "
                                           f"{manifest.capture_id}")
        requested = manifest.requested
        if requested.case != case:
            self.fail(f"{name}: case", f"capture {capture_id} belongs to case "
                                       f"{requested.case!r}, not to this bundle's "
                                       f"case {case!r}")
        else:
            self.ok(f"{name}: case", f"requested for case {case!r} by {requested.by} "
                                     f"at {requested.at}")
        self._capture_files(name, folder, manifest)
        self._capture_on_ledger(name, capture_id, canonical, signature)
        warcs = [a for a in manifest.artifacts if a.role == "warc"]
        for artifact in warcs:
            self._warc(name, f"{folder}/{artifact.name}")
        if listed.get("replay"):
            self._replay(name, capture_id, warcs)

    def _capture_files(self, name: str, folder: str, manifest: Manifest) -> None:
        problems = []
        expected = {f"{folder}/{a.name}": a.digest for a in manifest.artifacts}
        present = set(self._by_folder.get(folder, set()))
        present -= {f"{folder}/{MANIFEST_FILE}", f"{folder}/{MANIFEST_SIGNATURE_FILE}"}
        for file_name in sorted(set(expected) - present):
            problems.append(f"{file_name} is in the signed manifest but not in the bundle")
        for file_name in sorted(present - set(expected)):
            problems.append(f"{file_name} is not in the capture's signed manifest")
        for file_name in sorted(present & set(expected)):
            got, want = self.state.digests.get(file_name), expected[file_name]
            if got is None:
                problems.append(f"{file_name} cannot be read")
            elif got != want:
                differ = [label for label, a, b in (("size", got.size, want.size),
                                                    ("sha256", got.sha256, want.sha256),
                                                    ("sha512", got.sha512, want.sha512))
                          if a != b]
                problems.append(f"{file_name} does not match the capture's signed manifest "
                                f"({', '.join(differ)} differ)")
        if problems:
            self.fail_many(f"{name}: artifacts", problems)
        else:
            self.ok(f"{name}: artifacts", f"{len(expected)} artifacts match the signed "
                                          "manifest (size, sha256, sha512)")

    def _capture_on_ledger(
        self, name: str, capture_id: str, canonical: bytes, signature: bytes
    ) -> None:
        manifest_sha = hashlib.sha256(canonical).hexdigest()
        signature_sha = hashlib.sha256(signature).hexdigest()
        for seq in self._ledger_by_subject.get(("capture.completed", f"capture:{capture_id}"),
                                               []):
            entry = self.state.entries[seq]
            payload = entry.get("payload")
            if (isinstance(payload, dict)
                    and payload.get("manifest_sha256") == manifest_sha
                    and payload.get("signature_sha256", signature_sha) == signature_sha):
                self.ok(f"{name}: ledger", f"recorded as completed by entry {seq} at "
                                           f"{entry.get('time')}, which names this manifest")
                return
        self.fail(f"{name}: ledger", f"no capture.completed entry in this bundle records this "
                                     f"manifest (sha256 {manifest_sha})")

    def _warc(self, name: str, file_name: str) -> None:
        check = f"{name}: WARC records"
        if self.warc_checker is None:
            self.warn(check, f"{file_name}: record digests NOT checked (no WARC reader given)")
            return
        if not self.bundle.has(file_name):
            self.fail(check, f"{file_name} is missing")
            return
        if file_name not in self.state.digests:
            self.fail(check, f"{file_name} cannot be read from the ZIP (see ZIP members), so "
                             "its records were not checked")
            return
        try:
            with self.bundle.open(file_name, self.meter.read) as stream:
                result = self.warc_checker(stream)
        except VerificationError as exc:
            self.fail(check, str(exc))
            return
        if result.problems:  # they quote the WARC's own bytes: see in_ascii
            self.fail_many(check, [f"{file_name}: {in_ascii(p)}" for p in result.problems])
        else:
            self.ok(check, f"{file_name}: {result.records} records, "
                           f"{result.digests_checked} block/payload digests verified, "
                           f"{result.revisits_checked} revisits match the records they "
                           "refer to")

    def _replay(self, name: str, capture_id: str, warcs: Sequence[ManifestArtifact]) -> None:
        check = f"{name}: replay WACZ"
        wacz = replay_path(capture_id)
        if not self.bundle.has(wacz):
            self.fail(check, f"{wacz} is missing")
            return
        if wacz not in self.state.digests:
            self.fail(check, f"{wacz} cannot be read from the ZIP (see ZIP members)")
            return
        problems = []
        try:
            with self.bundle.window(wacz) as outer:
                inner = ZipView(outer, self.bundle.members[wacz].file_size, wacz)
                try:
                    problems += [f"{wacz}: {p}" for p in inner.problems]
                    for artifact in warcs if not inner.problems else ():
                        member = f"archive/{artifact.name}"
                        if member not in inner.infos:
                            problems.append(f"{wacz} holds no {member}")
                            continue
                        hasher = Hasher()
                        with inner.open(member, f"{wacz}: {member}") as stream:
                            while chunk := stream.read(CHUNK_SIZE):
                                hasher.update(chunk)
                                self.meter.read(len(chunk))
                        if hasher.digest().sha256 != artifact.sha256:
                            problems.append(f"{wacz}: {member} is not the signed WARC")
                finally:
                    inner.close()
        except VerificationError as exc:
            self.fail(check, f"{wacz} is not a readable WACZ holding the capture's WARC: "
                             f"{exc}")
            return
        if problems:
            self.fail_many(check, problems)
        else:
            self.ok(check, f"{wacz} holds the signed WARC byte for byte")


class _Meter:
    """Counts what the verifier read and tells ``on_progress`` (if any): after each
    member, and when at least :data:`CHUNK_SIZE` more bytes were read."""

    def __init__(self, on_progress: OnProgress | None) -> None:
        self.on_progress = on_progress
        self.members = self.members_done = 0
        self.total = self.done = self._told = 0

    def start(self, members: int, total_bytes: int) -> None:
        self.members, self.total = members, total_bytes
        self._tell()

    def read(self, nbytes: int) -> None:
        self.done += nbytes
        if self.done - self._told >= CHUNK_SIZE:
            self._tell()

    def member_done(self) -> None:
        self.members_done += 1
        self._tell()

    def _tell(self) -> None:
        if self.on_progress is not None:
            self._told = self.done
            self.on_progress(self.members_done, self.members, self.done, self.total)


def bounded(text: str) -> str:
    """``text`` as one safe line: control characters and bidirectional overrides
    written as escapes, and at most :data:`MAX_DETAIL` characters."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", text)
    if len(text) > MAX_DETAIL:
        text = f"{text[:MAX_DETAIL]}… ({len(text) - MAX_DETAIL} more characters)"
    return text


def in_ascii(text: str) -> str:
    """``text`` in printable ASCII: every other character written as ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN`` (backslashes as they are).

    For messages made of an untrusted file's bytes by a reader that decoded them as it
    could (warcio reads a header line that is not UTF-8 as Latin-1): the byte 0xff comes
    out as the character U+00FF, which :func:`bounded` would keep and a Latin-1 terminal
    would print as the raw byte. Escaping all that is not ASCII shows the bytes as they
    are, whatever the terminal's encoding."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def load_json(raw: bytes, name: str) -> Any:
    """The JSON value of ``raw`` (file ``name``). Raises :class:`VerificationError` for
    what is not plain JSON: invalid UTF-8 or syntax, two members of one name, ``NaN`` or
    ``Infinity``, a number of more than 64 digits, nesting past :data:`MAX_JSON_DEPTH`."""
    try:
        value = json.loads(raw, object_pairs_hook=_unique, parse_constant=_no_constant,
                           parse_int=_integer, parse_float=_float)
    except RecursionError as exc:
        raise VerificationError(f"{name} is JSON nested too deep") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise VerificationError(f"{name} is not valid JSON: {quote(str(exc), 200)[1:-1]}"
                                ) from exc
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise VerificationError(f"{name} is JSON nested more than {MAX_JSON_DEPTH} deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:  # parsers disagree on which of the two wins
            raise ValueError(f"the member {quote(key, 60)} appears twice in one object")
        value[key] = item
    return value


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) > 64:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text[:400]) if len(text) <= 400 else math.inf
    if not math.isfinite(value):
        raise ValueError(f"the number {quote(text, 40)} is out of range")
    return value


def _words(text: str) -> str:
    """A tag value as bag-info.txt can hold it: on one line, spaces collapsed."""
    return " ".join(text.split())


def _same_key(pem: object, key: PublicKey) -> bool:
    if not isinstance(pem, str):
        return False
    try:
        return PublicKey.from_pem(pem.encode("ascii")).raw == key.raw
    except (CustodyError, UnicodeEncodeError):
        return False


def _after(text: object, moment: datetime) -> bool:
    if not isinstance(text, str):
        return False
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when > moment


def parse_trusted_key(value: str) -> str:
    """A key id from what a person typed: a 64-hex key id (the SHA-256 of the raw key,
    as ``archiver key show`` prints it), or the path of a PEM public key file.

    Raises :class:`VerificationError` when it is neither.
    """
    text = value.strip().lower().removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return text
    path = Path(value)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise VerificationError(
            f"--trusted-key {value!r} is neither a 64-hex key id nor a readable PEM file"
        ) from exc
    try:
        return PublicKey.from_pem(pem).key_id
    except CustodyError as exc:
        raise VerificationError(f"--trusted-key {value}: {exc}") from exc


def load_tsa_roots(path: Path) -> list[x509.Certificate]:
    """The CA certificates in a PEM file. Raises :class:`VerificationError`."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise VerificationError(f"cannot read --tsa-ca {path}: {exc.strerror}") from exc
    return load_certificates(pem, str(path))


def iter_lines(report: BundleReport) -> Iterator[str]:
    """The report as text, one line per check, then the verdict."""
    marks = {OK: "ok  ", FAIL: "FAIL", WARN: "WARN"}
    for check in report.checks:
        yield f"{marks[check.status]}  {check.name}: {check.detail}"
    if not report.ok:
        yield (f"bundle {report.path}: FAILED verification "
               f"({len(report.failures)} failed checks)")
        return
    verdict = f"bundle {report.path}: verified"
    caveats = []
    if report.signer_trusted is None:
        caveats.append("integrity only: the signer was not checked against a trusted key")
    if not report.timestamps:
        caveats.append("no trusted timestamp")
    yield verdict + (f" ({'; '.join(caveats)})" if caveats else "")


__all__ = [
    "CLOCK_TOLERANCE",
    "FAIL",
    "OK",
    "WARN",
    "BundleReport",
    "Check",
    "OnProgress",
    "WarcCheck",
    "WarcChecker",
    "iter_lines",
    "load_tsa_roots",
    "parse_trusted_key",
    "verify_bundle",
]
