"""Exporting a case as an evidence bundle (the format is :mod:`chain_of_custody.bundle`).

The flow of one export:

1. select the captures (the whole case, or some of its captures) and their ledger
   entries: every entry about those captures, about the case, and the key history;
2. check every capture before anything is written: its ``capture.completed`` entry names
   the manifest, the manifest's signature verifies with a key from the ledger's key
   history; the expected digests of every file come from that signed manifest;
3. pick ONE checkpoint covering every selected entry: the earliest one already
   timestamped by every configured TSA, else the current head's, timestamped now. A TSA
   that is down does not stop the export: the bundle, its report and ``verify-bundle``
   say that the time is not attested;
4. stage on disk under ``work_dir``: artifacts hard-linked from a local store on the same
   filesystem (else streamed from whichever store holds them), a WACZ per capture built
   from its WARC(s) by the ``wacz`` tool, custody files, keys, report, ``VERIFY.md``;
5. stream every file into the ZIP with :class:`~chain_of_custody.bundle.BagWriter`,
   which computes SHA-256 and SHA-512 as it goes; an artifact whose bytes differ from
   its signed manifest aborts the export. The writer adds the bag's manifests, then the
   tag manifests, then the Ed25519 signature over ``tagmanifest-sha256.txt``. Memory
   stays flat whatever the case's size; the ZIP is hashed as it is written and
   published atomically;
6. append ``bundle.exported`` (the ZIP's digests, who asked, what it holds) and sign a
   checkpoint over it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from archiver import __version__, models
from archiver.archive import Archive, Capture
from archiver.clock import rfc3339
from archiver.errors import ArchiverError, NotFoundError
from archiver.export.guide import verify_md
from archiver.export.report import (
    ReportCapture,
    ReportData,
    ReportEntry,
    ReportTimestamp,
    render_html,
    render_pdf,
)
from archiver.versions import software_versions
from chain_of_custody import merkle
from chain_of_custody.bundle import BagWriter
from chain_of_custody.bundle.layout import (
    BUNDLE_TYPE,
    CHECKPOINT_FILE,
    INDEX_FILE,
    KEY_HISTORY_FILE,
    KEY_HISTORY_TYPE,
    PROOF_TYPE,
    REPORT_HTML,
    REPORT_PDF,
    VERIFY_FILE,
    capture_dir,
    check_file_name,
    entry_path,
    key_path,
    proof_path,
    replay_path,
    token_paths,
)
from chain_of_custody.checkpoint import verifier_key
from chain_of_custody.digest import CHUNK_SIZE, Digest, Hasher, digest_bytes
from chain_of_custody.errors import CustodyError, VerificationError
from chain_of_custody.ledger import KEY_ACTIONS, Checkpoint, LedgerEntry
from chain_of_custody.manifest import MANIFEST_FILE, SignedManifest, verify_manifest
from chain_of_custody.manifest import SIGNATURE_FILE as MANIFEST_SIGNATURE_FILE
from chain_of_custody.timestamp import StoredToken, TokenInfo, verify_token
from storage.errors import StorageError
from storage.files import publish
from storage.local import LocalBlobStore

MAX_SMALL_BLOB = 16 * 1024 * 1024
_WACZ_DRIVER = """
import contextlib, io, json, sys
from wacz.main import main
failed = {}
for job in json.load(open(sys.argv[1])):
    for argv in job["attempts"]:
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            try:
                code = main(argv)
            except Exception as exc:  # wacz raises ValueError for a page not in the WARC
                code = 1
                print(repr(exc))
        if code == 0:
            break
    else:
        lines = said.getvalue().strip().splitlines()
        failed[job["target"]] = lines[-1] if lines else "failed"
print(json.dumps(failed))
"""


class DamagedEvidence(ArchiverError):
    """A capture's stored evidence (or its record) does not match its signed manifest or
    ledger entry: the capture cannot be exported until an auditor verifies it."""

    def __init__(self, message: str, *, capture_id: str) -> None:
        super().__init__(message)
        self.capture_id = capture_id


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and recorded."""

    path: Path
    digest: Digest
    case: str
    bag_name: str
    captures: tuple[str, ...]
    entries: int
    checkpoint: Checkpoint
    timestamps: tuple[StoredToken, ...]
    timestamp_problems: tuple[str, ...]
    ledger_seq: int
    signing_key_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "sha256": self.digest.sha256,
            "sha512": self.digest.sha512,
            "size": self.digest.size,
            "case": self.case,
            "bag": self.bag_name,
            "captures": list(self.captures),
            "entries": self.entries,
            "checkpoint": {"tree_size": self.checkpoint.tree_size,
                           "root_hash": self.checkpoint.root_hash.hex()},
            "timestamps": [{"tsa": t.tsa_url, "gen_time": t.gen_time}
                           for t in self.timestamps],
            "timestamp_problems": list(self.timestamp_problems),
            "ledger_seq": self.ledger_seq,
            "signing_key_id": self.signing_key_id,
        }


@dataclass(frozen=True)
class _File:
    """One payload file: where it is staged, and the digest it must have (if known)."""

    path: str
    source: Path
    expected: Digest | None = None


@dataclass
class _Plan:
    case: str
    actor: str
    exported_at: datetime
    bag_name: str
    captures: list[Capture]
    manifests: dict[str, SignedManifest] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    tokens: list[StoredToken] = field(default_factory=list)
    token_infos: list[TokenInfo] = field(default_factory=list)
    timestamp_problems: list[str] = field(default_factory=list)
    files: list[_File] = field(default_factory=list)


class Progress(Protocol):
    """What an export tells a progress display (the CLI's, on a terminal)."""

    def start(self, captures: int, total_bytes: int) -> None:
        """The bundle will hold ``captures`` captures' files and ``total_bytes`` bytes
        of payload (0 while the files are still being gathered)."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more were written into the bundle."""

    def capture_done(self) -> None:
        """One more capture's files are in the bundle."""


class _NoProgress:
    def start(self, captures: int, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def capture_done(self) -> None:
        pass


def export_case(
    archive: Archive,
    *,
    case: str,
    out: Path,
    capture_ids: Sequence[str] = (),
    actor: str | None = None,
    context: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the evidence bundle of ``case`` (or of some of its captures) to ``out``.

    Raises :class:`NotFoundError` (no such case or capture, or a capture of another
    case), :class:`ArchiverError` (``out`` exists or cannot be written, a capture does
    not verify, a stored copy differs from its signed manifest, the WACZ cannot be
    built). Nothing is recorded on the ledger unless the bundle was written completely.
    ``progress`` is told how far the writing of the bundle is. ``context`` (what the
    person asked through: token or session id, client address) is recorded in the
    ``bundle.exported`` payload.
    """
    shown: Progress = progress or _NoProgress()
    actor = actor or archive.settings.operator
    out = out.expanduser().absolute()
    if out.exists():
        raise ArchiverError(f"{out} already exists; an export never replaces a file")
    if not out.parent.is_dir():
        raise ArchiverError(f"cannot write {out}: {out.parent} is not a directory")
    exported_at = archive.clock()
    plan = _Plan(case=case, actor=actor, exported_at=exported_at,
                 bag_name=_bag_name(case, exported_at), captures=_select(archive, case,
                                                                         capture_ids))
    keys = archive.public_keys()
    for capture in plan.captures:
        if capture.ok:
            plan.manifests[capture.id] = _checked_manifest(archive, capture, keys)
    plan.entries = _entries(archive, case, plan.captures)
    _choose_checkpoint(archive, plan)
    staging = archive.settings.work_dir / f"export-{uuid.uuid4().hex}"
    staging.mkdir(parents=True, mode=0o700)
    written = sum(1 for c in plan.captures if c.ok)
    shown.start(written, 0)
    try:
        _stage(archive, plan, staging)
        shown.start(written, sum(f.source.stat().st_size for f in plan.files))
        digest = _write_zip(archive, plan, out, shown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    try:
        entry = _record(archive, plan, actor, out, digest, context)
    except CustodyError as exc:
        out.unlink(missing_ok=True)  # an export that is not on the ledger must not exist
        raise ArchiverError(f"the bundle could not be recorded on the ledger, so it was "
                            f"removed: {exc}") from exc
    archive.checkpoint()  # the export event itself gets signed (and timestamped) at once
    return ExportReport(
        path=out, digest=digest, case=case, bag_name=plan.bag_name,
        captures=tuple(c.id for c in plan.captures), entries=len(plan.entries),
        checkpoint=checkpoint, timestamps=tuple(plan.tokens),
        timestamp_problems=tuple(plan.timestamp_problems), ledger_seq=entry.seq,
        signing_key_id=archive.signing_key.key_id,
    )


def _record(archive: Archive, plan: _Plan, actor: str, out: Path, digest: Digest,
            context: Mapping[str, str] | None) -> LedgerEntry:
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    payload: dict[str, Any] = {
        "bundle_sha256": digest.sha256,
        "bundle_sha512": digest.sha512,
        "bundle_size": digest.size,
        "file_name": out.name,
        "bag": plan.bag_name,
        "captures": [c.id for c in plan.captures],
        "entries": len(plan.entries),
        "checkpoint_tree_size": checkpoint.tree_size,
        "checkpoint_root_hash": checkpoint.root_hash.hex(),
        "timestamps": [{"tsa": t.tsa_url, "gen_time": t.gen_time} for t in plan.tokens],
        "timestamp_problems": plan.timestamp_problems,
        "signing_key_id": archive.signing_key.key_id,
    }
    if context:
        payload["context"] = dict(context)
    return archive.ledger.append(actor=actor, action="bundle.exported",
                                 subject=f"case:{plan.case}", payload=payload)


def _bag_name(case: str, when: datetime) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", case).strip("-.")[:60] or "case"
    return f"evidence-{slug}-{rfc3339(when)[:19].replace(':', '').replace('-', '')}Z"


# -- selecting --------------------------------------------------------------------------------


def _select(archive: Archive, case: str, capture_ids: Sequence[str]) -> list[Capture]:
    with archive.engine.connect() as conn:
        exists = conn.execute(
            sa.select(models.cases.c.id).where(models.cases.c.name == case)
        ).scalar_one_or_none()
    if exists is None:
        raise NotFoundError(f"no case named {case!r}")
    if not capture_ids:
        # Not list_captures(): it reads the artifact rows of every capture of the archive.
        c = models.captures.c
        with archive.engine.connect() as conn:
            ids = conn.execute(
                sa.select(c.id).where(c.case_id == exists).order_by(c.requested_at, c.id)
            ).scalars().all()
        if not ids:
            raise NotFoundError(f"case {case!r} has no captures to export")
        return [archive.get_capture(capture_id) for capture_id in ids]
    chosen: dict[str, Capture] = {}
    for prefix in capture_ids:
        capture = archive.get_capture(prefix)
        if capture.case != case:
            raise NotFoundError(f"capture {capture.id} is not in case {case!r} "
                                f"(it is in {capture.case!r})")
        chosen.setdefault(capture.id, capture)
    return list(chosen.values())


def _entries(archive: Archive, case: str, captures: Sequence[Capture]) -> list[LedgerEntry]:
    found: dict[int, LedgerEntry] = {}
    for capture in captures:
        for entry in archive.ledger.entries(subject=f"capture:{capture.id}"):
            found[entry.seq] = entry
    for entry in archive.ledger.entries(subject=f"case:{case}"):
        found[entry.seq] = entry
    for entry in archive.ledger.entries(actions=KEY_ACTIONS):
        found[entry.seq] = entry
    return [found[seq] for seq in sorted(found)]


def _read_small(archive: Archive, sha256: str, what: str, capture_id: str) -> bytes:
    try:
        with archive.store.open(sha256) as stream:
            data: bytes = stream.read(MAX_SMALL_BLOB)
    except StorageError as exc:
        raise ArchiverError(f"cannot read {what}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DamagedEvidence(f"the stored {what} does not match its sha256",
                              capture_id=capture_id)
    return data


def _checked_manifest(
    archive: Archive, capture: Capture, keys: Mapping[str, Any]
) -> SignedManifest:
    """The capture's signed manifest (and its bytes and signature), checked against the
    ledger and the key history: what the bundle's files must match."""
    hint = f"capture {capture.id} cannot be exported; run 'archiver verify {capture.id}'"
    damaged = partial(DamagedEvidence, capture_id=capture.id)
    if capture.ledger_seq is None or capture.manifest_sha256 is None:
        raise damaged(f"{hint}: it has no ledger entry")
    try:
        entry = archive.ledger.entry(capture.ledger_seq)
    except CustodyError as exc:
        raise damaged(f"{hint}: {exc}") from exc
    payload = entry.payload
    if (entry.action != "capture.completed" or entry.subject != f"capture:{capture.id}"
            or payload.get("manifest_sha256") != capture.manifest_sha256):
        raise damaged(f"{hint}: its ledger entry does not record its manifest")
    signature_sha = payload.get("signature_sha256")
    if not isinstance(signature_sha, str):
        signature_sha = capture.artifact(MANIFEST_SIGNATURE_FILE).sha256
    canonical = _read_small(archive, capture.manifest_sha256, f"manifest of {capture.id}",
                            capture.id)
    signature = _read_small(archive, signature_sha, f"signature of {capture.id}", capture.id)
    try:
        manifest = verify_manifest(canonical, signature, keys)
    except VerificationError as exc:
        raise damaged(f"{hint}: {exc}") from exc
    if manifest.capture_id != capture.id:
        raise damaged(f"{hint}: its manifest is of another capture")
    for artifact in manifest.artifacts:
        try:
            check_file_name(artifact.name)
        except ValueError as exc:
            raise damaged(f"{hint}: {exc}") from exc
    return SignedManifest(manifest, canonical, signature)


def _choose_checkpoint(archive: Archive, plan: _Plan) -> None:
    """One checkpoint covering every selected entry, timestamped if at all possible."""
    timestamper = archive.timestamper
    urls = timestamper.tsa_urls
    needed = plan.entries[-1].seq + 1
    checkpoint = timestamper.log.earliest_stamped(needed, urls)
    if checkpoint is None:
        checkpoint, results = archive.stamped_checkpoint(force=True)
        if not urls:
            plan.timestamp_problems.append(
                "no Time-Stamping Authority is configured ([timestamp] authorities)")
        plan.timestamp_problems += [f"{r.tsa_url}: {r.problem}" for r in results if not r.ok]
    plan.checkpoint = checkpoint
    note = checkpoint.note.encode("utf-8")
    seen: set[str] = set()
    for token in archive.timestamps(checkpoint):
        if token.tsa_url in seen:
            continue  # two processes stamped the same checkpoint: one token per TSA suffices
        try:  # verify twice: it verified when obtained; it must still, before we ship it
            info = verify_token(token.response, note, ca_pem=token.ca_pem.encode("ascii"))
        except VerificationError as exc:
            plan.timestamp_problems.append(f"{token.tsa_url}: its token does not verify: "
                                           f"{exc}")
            continue
        seen.add(token.tsa_url)
        plan.tokens.append(token)
        plan.token_infos.append(info)


# -- staging ----------------------------------------------------------------------------------


def _stage(archive: Archive, plan: _Plan, staging: Path) -> None:
    def place(path: str) -> Path:
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write(path: str, data: bytes) -> None:
        place(path).write_bytes(data)
        plan.files.append(_File(path, staging / path))

    replays: list[_Replay] = []
    for capture in plan.captures:
        if not capture.ok:
            continue
        sealed = plan.manifests[capture.id]
        folder = capture_dir(capture.id)
        write(f"{folder}/{MANIFEST_FILE}", sealed.canonical)
        write(f"{folder}/{MANIFEST_SIGNATURE_FILE}", sealed.signature)
        warcs = []
        for artifact in sealed.manifest.artifacts:
            path = f"{folder}/{artifact.name}"
            _stage_blob(archive, artifact.sha256, place(path))
            plan.files.append(_File(path, staging / path, artifact.digest))
            if artifact.role == "warc":
                warcs.append(staging / path)
        if warcs:
            path = replay_path(capture.id)
            replays.append(_Replay(capture, warcs, place(path)))
            plan.files.append(_File(path, staging / path))
    _build_waczs(replays, staging, plan)
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    write(CHECKPOINT_FILE, checkpoint.note.encode("utf-8"))
    for entry in plan.entries:
        write(entry_path(entry.seq), entry.leaf_bytes())
        proof = archive.ledger.inclusion_proof(entry.seq, checkpoint.tree_size)
        merkle.verify_inclusion(entry.leaf_hash(), entry.seq, checkpoint.tree_size, proof,
                                checkpoint.root_hash)
        write(proof_path(entry.seq), _json({
            "type": PROOF_TYPE,
            "seq": entry.seq,
            "leaf": entry_path(entry.seq),
            "leaf_hash": entry.leaf_hash().hex(),
            "tree_size": checkpoint.tree_size,
            "root_hash": checkpoint.root_hash.hex(),
            "checkpoint": CHECKPOINT_FILE,
            "inclusion_proof": [h.hex() for h in proof],
        }))
    for number, token in enumerate(plan.tokens, 1):
        token_file, ca_file = token_paths(number)
        write(token_file, token.response)
        write(ca_file, token.ca_pem.encode("ascii"))
    keys = _stage_keys(archive, plan, write)
    index = _index(archive, plan)
    write(INDEX_FILE, _json(index))
    report = _report_data(archive, plan, keys)
    write(REPORT_HTML, render_html(report))
    render_pdf(report, place(REPORT_PDF))
    plan.files.append(_File(REPORT_PDF, staging / REPORT_PDF))


def _stage_blob(archive: Archive, sha256: str, target: Path) -> None:
    """Put blob ``sha256`` at ``target``: a hard link to a local store's copy when one
    is on this filesystem (no bytes copied), else a streamed copy. The bytes are checked
    against the signed manifest later, as they are zipped."""
    for store in archive.store.stores:
        if isinstance(store, LocalBlobStore):
            try:
                os.link(store.path_for(sha256), target)
                return
            except OSError:
                continue  # not held there, another filesystem, or links not allowed
    try:
        with archive.store.open(sha256) as stream, target.open("xb") as copy:
            shutil.copyfileobj(stream, copy, CHUNK_SIZE)
    except StorageError as exc:
        raise ArchiverError(f"cannot read blob {sha256}: {exc}") from exc


def _damaged(path: str) -> DamagedEvidence:
    capture_id = path.split("/")[2]
    return DamagedEvidence(f"{path} does not match its capture's signed manifest; the "
                           f"stored copy may be damaged: run 'archiver verify {capture_id}'",
                           capture_id=capture_id)


def _check_staged(item: _File) -> None:
    hasher = Hasher()
    with item.source.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            hasher.update(chunk)
    if hasher.digest() != item.expected:
        raise _damaged(item.path)


@dataclass(frozen=True)
class _Replay:
    capture: Capture
    warcs: list[Path]
    target: Path


def _build_waczs(replays: Sequence[_Replay], staging: Path, plan: _Plan) -> None:
    """A WACZ of each capture's WARC(s), by the ``wacz`` tool, all in one subprocess (it
    prints, its imports take a while, and its memory is its own). A page list names the
    captured page when it is in the WARC; without it, the WACZ is built without one."""
    if not replays:
        return
    jobs = []
    for replay in replays:
        capture = replay.capture
        command = ["create", "-o", str(replay.target), *[str(w) for w in replay.warcs],
                   "--title", f"Capture {capture.id}",
                   "--desc", f"Evidence Archiver capture of {capture.url} requested by "
                             f"{capture.requested_by} at {capture.requested_at}"]
        attempts = [[*command, "--url", capture.final_url], command] if capture.final_url \
            else [command]
        jobs.append({"target": str(replay.target), "attempts": attempts})
    job_file = staging / "wacz-jobs.json"
    job_file.write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, "-c", _WACZ_DRIVER, str(job_file)],
                          capture_output=True, text=True, check=False, cwd=staging)
    job_file.unlink()
    try:
        failed: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        lines = done.stderr.strip().splitlines()
        raise ArchiverError("cannot build the replay WACZ files: wacz stopped: "
                            f"{lines[-1] if lines else done.returncode}") from None
    for replay in replays:
        if str(replay.target) not in failed:
            continue
        # A damaged WARC is the likelier cause, and the one a person must hear of.
        for item in plan.files:
            if item.source in replay.warcs and item.expected is not None:
                _check_staged(item)
        raise ArchiverError(f"cannot build the WACZ of capture {replay.capture.id}: wacz "
                            f"said: {failed[str(replay.target)]}")


def _stage_keys(
    archive: Archive, plan: _Plan, write: Callable[[str, bytes], None]
) -> list[dict[str, Any]]:
    """The public keys, from the ledger's key history (the table is not trusted)."""
    public = archive.public_keys()
    signing = archive.signing_key.key_id
    if signing not in public:
        raise ArchiverError(f"the signing key {signing} is not in the ledger's key history")
    table = {row["key_id"]: row for row in archive.key_history()}
    registered = {str(e.payload.get("key_id")): e for e in plan.entries
                  if e.action in KEY_ACTIONS}
    keys = []
    for key_id, key in public.items():
        write(key_path(key_id), key.pem())
        entry = registered.get(key_id)
        keys.append({
            "key_id": key_id,
            "algorithm": key.algorithm,
            "file": key_path(key_id),
            "created": entry.time if entry else table.get(key_id, {}).get("created"),
            "retired": table.get(key_id, {}).get("retired"),
            "ledger_seq": entry.seq if entry else None,
            "checkpoint_verifier_key": verifier_key(archive.origin, key),
        })
    write(KEY_HISTORY_FILE, _json({"type": KEY_HISTORY_TYPE, "origin": archive.origin,
                                   "signing_key_id": signing, "keys": keys}))
    return keys


def _capture_json(capture: Capture, sealed: SignedManifest | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": capture.id, "url": capture.url, "status": capture.status,
        "requested_by": capture.requested_by, "requested_at": capture.requested_at,
        "requested_via": capture.requested_via, "note": capture.note,
        "final_url": capture.final_url, "http_status": capture.http_status,
        "reason": capture.reason, "message": capture.message,
        "manifest_sha256": capture.manifest_sha256, "ledger_seq": capture.ledger_seq,
        "files": [], "replay": None,
    }
    if sealed is not None:
        artifacts = sealed.manifest.artifacts
        data["files"] = [f"{capture_dir(capture.id)}/{name}" for name in
                         [MANIFEST_FILE, MANIFEST_SIGNATURE_FILE, *[a.name for a in artifacts]]]
        if any(a.role == "warc" for a in artifacts):
            data["replay"] = replay_path(capture.id)
    return data


def _index(archive: Archive, plan: _Plan) -> dict[str, Any]:
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    tokens = []
    for number, token in enumerate(plan.tokens, 1):
        token_file, ca_file = token_paths(number)
        tokens.append({"tsa": token.tsa_url, "token": token_file, "ca": ca_file,
                       "gen_time": token.gen_time, "serial": token.serial,
                       "imprint_sha256": token.data_sha256})
    return {
        "type": BUNDLE_TYPE,
        "case": plan.case,
        "exported_at": rfc3339(plan.exported_at),
        "exported_by": plan.actor,
        "bag": plan.bag_name,
        "archive": {"origin": archive.origin, "signing_key_id": archive.signing_key.key_id},
        "software": software_versions(),
        "captures": [_capture_json(c, plan.manifests.get(c.id)) for c in plan.captures],
        "custody": {
            "checkpoint": {"file": CHECKPOINT_FILE, "tree_size": checkpoint.tree_size,
                           "root_hash": checkpoint.root_hash.hex(),
                           "key_id": checkpoint.key_id, "signed_at": checkpoint.created},
            "entries": [e.seq for e in plan.entries],
            "timestamps": tokens,
            "timestamp_problems": plan.timestamp_problems,
        },
        "keys": KEY_HISTORY_FILE,
        "report": [REPORT_HTML, REPORT_PDF],
    }


def _report_data(archive: Archive, plan: _Plan, keys: Sequence[Mapping[str, Any]]) -> ReportData:
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    captures = []
    for capture in plan.captures:
        sealed = plan.manifests.get(capture.id)
        artifacts: list[Mapping[str, Any]] = []
        if sealed:
            artifacts += [a.to_json() for a in sealed.manifest.artifacts]
            for name, data in ((MANIFEST_FILE, sealed.canonical),
                               (MANIFEST_SIGNATURE_FILE, sealed.signature)):
                d = digest_bytes(data)
                artifacts.append({"name": name, "role": "signature" if name.endswith("sig")
                                  else "manifest", "size": d.size, "sha256": d.sha256,
                                  "sha512": d.sha512})
        captures.append(ReportCapture(
            id=capture.id, url=capture.url, status=capture.status,
            requested_by=capture.requested_by, requested_at=capture.requested_at,
            requested_via=capture.requested_via, note=capture.note,
            final_url=capture.final_url, http_status=capture.http_status,
            reason=capture.reason, message=capture.message, started=capture.started,
            ended=capture.ended, manifest_sha256=capture.manifest_sha256,
            signer_key_id=sealed.key_id if sealed else None,
            ledger_seq=capture.ledger_seq, artifacts=tuple(artifacts),
        ))
    return ReportData(
        case=plan.case, exported_at=rfc3339(plan.exported_at), exported_by=plan.actor,
        origin=archive.origin, signing_key_id=archive.signing_key.key_id,
        bag_name=plan.bag_name, checkpoint_size=checkpoint.tree_size,
        checkpoint_root=checkpoint.root_hash.hex(), checkpoint_key_id=checkpoint.key_id,
        software=software_versions(), captures=tuple(captures),
        entries=tuple(ReportEntry(e.seq, e.time, e.actor, e.action, e.subject, e.payload)
                      for e in plan.entries),
        timestamps=tuple(ReportTimestamp(t.tsa_url, t.gen_time, info.tsa_subject, t.serial)
                         for t, info in zip(plan.tokens, plan.token_infos, strict=True)),
        timestamp_problems=tuple(plan.timestamp_problems),
        keys=tuple(keys),
    )


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# -- the ZIP ----------------------------------------------------------------------------------


def _write_zip(archive: Archive, plan: _Plan, out: Path, progress: Progress) -> Digest:
    """Write the bag to a partial file, then publish it at ``out`` (never replacing a
    file); return the ZIP's digest, computed as it was written."""
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        # 0600: a bundle holds the case's evidence and notes (see archiver.privacy).
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            bag = BagWriter(raw, root=plan.bag_name, when=plan.exported_at)
            try:
                _fill(archive, plan, bag, progress)
                digest = bag.finish(_bag_info(archive, plan), archive.signing_key)
            except BaseException:
                bag.abort()  # into the partial file, which is about to be deleted
                raise
        try:
            # linked, not renamed: fails if out appeared meanwhile (never replace a file)
            publish(partial, out, replace=False)
        except FileExistsError as exc:
            raise ArchiverError(f"{out} already exists; an export never replaces a file") \
                from exc
    except OSError as exc:
        raise ArchiverError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return digest


def _fill(archive: Archive, plan: _Plan, bag: BagWriter, progress: Progress) -> None:
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    bag.add_tag_bytes(VERIFY_FILE, verify_md(
        case=plan.case, origin=archive.origin, exported_at=rfc3339(plan.exported_at),
        exported_by=plan.actor, signing_key_id=archive.signing_key.key_id,
        checkpoint_key_id=checkpoint.key_id, tree_size=checkpoint.tree_size,
        tokens=[(number, token.tsa_url, token.gen_time)
                for number, token in enumerate(plan.tokens, 1)],
        timestamp_problems=plan.timestamp_problems,
        has_replay=any(f.path.endswith(".wacz") for f in plan.files),
    ).encode("utf-8"))
    items = sorted(plan.files, key=lambda f: f.path)
    for number, item in enumerate(items):
        digest = bag.add_payload_file(item.path, item.source, progress.advance)
        if item.expected is not None and digest != item.expected:
            raise _damaged(item.path)
        # A capture's files sit together under data/captures/<id>/: its last one is in.
        folder = _capture_folder(item.path)
        following = items[number + 1].path if number + 1 < len(items) else ""
        if folder is not None and _capture_folder(following) != folder:
            progress.capture_done()


def _capture_folder(path: str) -> str | None:
    parts = path.split("/")
    return "/".join(parts[:3]) if path.startswith("data/captures/") and len(parts) > 3 \
        else None


def _bag_info(archive: Archive, plan: _Plan) -> list[tuple[str, str]]:
    """``bag-info.txt`` (the writer adds the ``Payload-Oxum``)."""
    checkpoint = plan.checkpoint
    assert checkpoint is not None
    completed = sum(1 for c in plan.captures if c.ok)
    times = ", ".join(f"{t.gen_time} ({t.tsa_url})" for t in plan.tokens)
    return [
        ("Bag-Software-Agent", f"evidence-archiver {__version__}"),
        ("Bagging-Date", rfc3339(plan.exported_at)[:10]),
        ("Source-Organization", archive.origin),
        ("External-Identifier", plan.case),
        ("External-Description",
         f"Evidence bundle of case {plan.case}: {len(plan.captures)} captures "
         f"({completed} completed), their custody ledger entries with inclusion proofs, "
         "the signed checkpoint, trusted timestamps, the archive's public keys and a "
         "custody report. See VERIFY.md."),
        ("Evidence-Case", plan.case),
        ("Evidence-Exported-At", rfc3339(plan.exported_at)),
        ("Evidence-Exported-By", plan.actor),
        ("Evidence-Archive-Origin", archive.origin),
        ("Evidence-Signing-Key-Id", archive.signing_key.key_id),
        ("Evidence-Checkpoint", f"{checkpoint.tree_size} {checkpoint.root_hash.hex()}"),
        ("Evidence-Timestamps", times or "NONE: " + "; ".join(plan.timestamp_problems)),
    ]



__all__ = ["DamagedEvidence", "ExportReport", "export_case"]
