"""Helpers for the trusted-timestamp and evidence-bundle tests (fixtures: conftest.py).

* A local RFC 3161 Time-Stamping Authority: an openssl CA and TSA certificate
  (``extendedKeyUsage = critical, timeStamping``), ``openssl ts -reply`` behind an HTTP
  server on 127.0.0.1 port 0 answering ``application/timestamp-reply``. The config
  follows TOOLS.md: ``signer_digest = sha256``, ``ess_cert_id_alg = sha256`` and no
  ``certs =`` line. TSAs with short-lived or expired certificates are made on demand.
* ``Cli``: runs ``archiver`` in-process against one archive (as in tests/archiver).
* ``seed_capture``: a capture with media and other artifacts, sealed, stored and put on
  the ledger with the archive's own key and library calls, the way the pipeline will
  once media and browser capture land (those fetchers are another engineer's work).
* Helpers to unzip a bundle, tamper with it, re-bag it with the Library of Congress
  ``bagit`` library, re-sign it, and zip it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import archive_cli
import bagit
import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from archiver import models
from archiver.archive import Archive, Capture
from archiver.clock import rfc3339
from chain_of_custody.bundle import SIGNED_TAG_MANIFEST, TAG_SIGNATURE_FILE
from chain_of_custody.digest import Digest, digest_bytes
from chain_of_custody.keys import SigningKey
from chain_of_custody.manifest import MANIFEST_FILE, Artifact, build_manifest, sign_manifest
from chain_of_custody.manifest import SIGNATURE_FILE as MANIFEST_SIGNATURE_FILE

PASSPHRASE = archive_cli.PASSPHRASE
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"

TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256

[ v3_tsa ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
"""


def run(*argv: str, cwd: Path | None = None, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A tool's run; with ``check`` a failure shows its output."""
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env=env)
    if check:
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    return done


def tool(name: str) -> str:
    """A console script of the project's venv (bagit.py, warcio, wacz)."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else name


def tool_env() -> dict[str, str]:
    """The environment with the venv's console scripts first on PATH (for VERIFY.md)."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# -- a local Time-Stamping Authority --------------------------------------------------------


@dataclass
class LocalCa:
    """An openssl-made root CA that issues TSA certificates."""

    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key(self) -> Path:
        return self.directory / "ca.key"

    @classmethod
    def create(cls, directory: Path, name: str = "Test TSA Root") -> LocalCa:
        directory.mkdir(parents=True, exist_ok=True)
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
            "-subj", f"/CN={name}", cwd=directory)
        return cls(directory)

    def issue_tsa_with_openssl(self, directory: Path, name: str = "Test TSA") -> None:
        """tsa.key + tsa.pem in ``directory``, made and signed by openssl."""
        (directory / "tsa.cnf").write_text(TSA_CONFIG.format(dir=directory))
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={name}",
            cwd=directory)
        run("openssl", "x509", "-req", "-in", "tsa.csr", "-CA", str(self.cert),
            "-CAkey", str(self.key), "-CAcreateserial", "-out", "tsa.pem", "-days", "365",
            "-extfile", "tsa.cnf", "-extensions", "v3_tsa", cwd=directory)

    def issue_tsa_valid(self, directory: Path, not_before: dt.datetime, not_after: dt.datetime,
                        name: str = "Short-lived TSA") -> None:
        """tsa.key + tsa.pem valid exactly [not_before, not_after] (openssl's ``x509``
        only counts days, so this one is made with ``cryptography``)."""
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                           critical=True)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        (directory / "tsa.cnf").write_text(TSA_CONFIG.format(dir=directory))
        (directory / "tsa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (directory / "tsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _TsaHandler(BaseHTTPRequestHandler):
    server: _TsaServer

    def do_POST(self) -> None:
        tsa = self.server.tsa
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        tsa.requests.append(self.path)
        if tsa.status != 200:
            self.send_response(tsa.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        reply = tsa.reply(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_args: Any) -> None:
        pass


class _TsaServer(ThreadingHTTPServer):
    tsa: LocalTsa


@dataclass
class LocalTsa:
    """``openssl ts -reply`` over HTTP on 127.0.0.1 (port 0)."""

    directory: Path
    ca: LocalCa
    requests: list[str] = field(default_factory=list)
    status: int = 200
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _TsaServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/tsr"

    def authority(self, path: str = "/tsr") -> dict[str, str]:
        """This TSA as a ``[timestamp] authorities`` entry."""
        return {"url": self.url.replace("/tsr", path), "ca_file": str(self.ca.cert)}

    def reply(self, query: bytes) -> bytes:
        with self._lock:  # openssl ts keeps its serial number in a file
            name = uuid.uuid4().hex
            query_file = self.directory / f"{name}.tsq"
            reply_file = self.directory / f"{name}.tsr"
            query_file.write_bytes(query)
            run("openssl", "ts", "-reply", "-config", str(self.directory / "tsa.cnf"),
                "-queryfile", str(query_file), "-out", str(reply_file))
            return reply_file.read_bytes()

    def start(self) -> LocalTsa:
        (self.directory / "serial").write_text("01\n")
        server = _TsaServer(("127.0.0.1", 0), _TsaHandler)
        server.tsa = self
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- the archive through its command ----------------------------------------------------


class Cli(archive_cli.Cli):
    """The shared in-process ``archiver``, plus the archive's key and TSA settings."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(home, capsys)
        self.monkeypatch = monkeypatch

    def key(self) -> SigningKey:
        return SigningKey.load_encrypted(self.home / "keys" / "signing-key.pem",
                                         PASSPHRASE.encode())

    def authorities(self, *entries: dict[str, str]) -> None:
        self.monkeypatch.setenv("ARCHIVER_TIMESTAMP__AUTHORITIES", json.dumps(list(entries)))


def _browser_can_be_disabled() -> bool:
    from archiver.settings import Settings

    section = Settings.model_fields.get("browser")
    fields = getattr(section.annotation, "model_fields", {}) if section else {}
    return "enabled" in fields


def archive_environment(monkeypatch: pytest.MonkeyPatch, home: Path, database_url: str,
                        *, browser: bool = False) -> None:
    """The shared test environment. ``browser=False`` turns the capture's browser view
    off where the pipeline has one (these tests are about custody, and Chromium costs
    seconds per capture); the pristine bundle keeps it, to show every artifact it makes
    is exported."""
    extra = {"ARCHIVER_TIMESTAMP__TIMEOUT_SECONDS": "10"}
    if not browser and _browser_can_be_disabled():
        extra["ARCHIVER_BROWSER__ENABLED"] = "false"
    archive_cli.archive_environment(monkeypatch, home, database_url, extra)


# -- captures with more than a WARC ----------------------------------------------------------


def seed_capture(
    archive: Archive,
    *,
    case: str,
    like: Capture,
    extra: Sequence[tuple[Path, str, str, str]],
    actor: str = "analyst@test.example",
) -> str:
    """A completed capture of ``like.url`` in ``case``: the WARC and provenance of
    ``like`` plus ``extra`` files (path, name, role, media type), sealed with the archive's
    key, stored, on the ledger and in the tables as the capture pipeline records one."""
    key = archive.signing_key
    capture_id = str(uuid.uuid4())
    now = rfc3339(archive.clock())
    artifacts = [Artifact(a.name, a.role, a.media_type, Digest(a.sha256, a.sha512, a.size))
                 for a in like.artifacts if a.role not in ("manifest", "signature")]
    for path, name, role, media_type in extra:
        digest = _digest_file(path)
        archive.store.put_file(path, sha256=digest.sha256, size=digest.size)
        artifacts.append(Artifact(name, role, media_type, digest))
    requested = {"url": like.url, "by": actor, "at": now, "via": "cli", "source": None,
                 "case": case, "note": "seeded with media"}
    manifest = build_manifest(
        capture_id=capture_id, requested=requested,
        happened={"started": now, "ended": now, "host": socket.gethostname(), "software": {},
                  "fetchers": {}},
        target={"final_url": like.final_url, "http_status": like.http_status, "peer_ip": None,
                "tls_certificate_sha256": None, "redirects": [], "content_type": None},
        artifacts=artifacts, key_id=key.key_id,
    )
    signed = sign_manifest(manifest, key)
    sealed = [*artifacts,
              Artifact(MANIFEST_FILE, "manifest", "application/json", signed.digest),
              Artifact(MANIFEST_SIGNATURE_FILE, "signature", "application/octet-stream",
                       digest_bytes(signed.signature))]
    for data in (signed.canonical, signed.signature):
        scratch = archive.settings.work_dir / f"seed-{uuid.uuid4().hex}"
        scratch.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_bytes(data)
        archive.store.put_file(scratch, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        scratch.unlink()
    with archive.engine.begin() as conn:
        case_id = conn.execute(sa.select(models.cases.c.id).where(models.cases.c.name == case)
                               ).scalar_one_or_none()
        if case_id is None:
            case_id = conn.execute(sa.insert(models.cases).values(name=case, created=now)
                                   ).inserted_primary_key[0]  # type: ignore[index]
        archive.ledger.append(actor=actor, action="capture.requested",
                              subject=f"capture:{capture_id}",
                              payload={"url": like.url, "case": case}, connection=conn)
        entry = archive.ledger.append(
            actor="service:archiver", action="capture.completed",
            subject=f"capture:{capture_id}",
            payload={"url": like.url, "manifest_sha256": signed.digest.sha256,
                     "signature_sha256": digest_bytes(signed.signature).sha256,
                     "key_id": key.key_id,
                     "artifacts": [{"name": a.name, "sha256": a.digest.sha256,
                                    "size": a.digest.size} for a in sealed]},
            connection=conn,
        )
        conn.execute(sa.insert(models.captures).values(
            id=capture_id, url=like.url, case_id=case_id, note="seeded with media",
            requested_by=actor, requested_via="cli", requested_at=now, status="completed",
            started=now, ended=now, final_url=like.final_url, http_status=like.http_status,
            manifest_sha256=signed.digest.sha256, key_id=key.key_id, ledger_seq=entry.seq,
        ))
        conn.execute(sa.insert(models.artifacts), [
            {"capture_id": capture_id, "name": a.name, "role": a.role,
             "media_type": a.media_type, "size": a.digest.size, "sha256": a.digest.sha256,
             "sha512": a.digest.sha512} for a in sealed])
    archive.checkpoint()
    return capture_id


def _digest_file(path: Path) -> Digest:
    from chain_of_custody.digest import digest_stream

    with path.open("rb") as stream:
        return digest_stream(stream)


# -- bundles: unzip, tamper, re-bag, re-sign, zip ------------------------------------------


def unzip(bundle: Path, into: Path) -> Path:
    """Extract a bundle; return its bag folder."""
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(into)
    (bag,) = [p for p in into.iterdir() if p.is_dir()]
    return bag


def rezip(bag: Path, out: Path) -> Path:
    """Zip a bag folder again, as one folder, in name order."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(p for p in bag.rglob("*") if p.is_file()):
            archive.write(path, f"{bag.name}/{path.relative_to(bag).as_posix()}")
    return out


def rebag(bag: Path, key: SigningKey | None) -> None:
    """Make the bag's manifests agree with its files again (the Library of Congress
    ``bagit`` library recomputes them), then re-sign the tag manifest with ``key``:
    what someone holding that key could do to a bundle."""
    bagit.Bag(str(bag)).save(manifests=True)
    if key is not None:
        (bag / TAG_SIGNATURE_FILE).write_bytes(key.sign((bag / SIGNED_TAG_MANIFEST).read_bytes()))


def copy_bag(bag: Path, into: Path) -> Path:
    target = into / bag.name
    shutil.copytree(bag, target)
    return target


def openssl_verifies(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run("openssl", *argv, cwd=cwd, check=False)


def epoch(gen_time: str) -> int:
    return int(dt.datetime.fromisoformat(gen_time.replace("Z", "+00:00")).timestamp())
