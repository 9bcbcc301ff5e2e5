"""Capture manifests: what was asked, what happened, what was kept, sealed by a signature.

The manifest is RFC 8785 (JCS) canonical JSON, so the signed bytes are the file itself:
``openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile
manifest.sig`` checks it with no tool of ours.

Domain separation: the signed bytes begin with the manifest's own ``type`` field
(``evidence-archiver/capture-manifest/v1``) and name the signing key, so a manifest
signature can never be replayed as a ledger checkpoint signature (a checkpoint is a
C2SP signed note, plain text that cannot parse as a JSON object) or vice versa, and a
signature cannot be re-attributed to another key.

The document, and the frozen :class:`Manifest` that models it field for field::

    type         "evidence-archiver/capture-manifest/v1"
    capture_id   str
    requested    Requested: url, by, at, via (str); source, case, note (str or null)
    happened     Happened: started, ended, host (str); software {name: version};
                 fetchers {name: {outcome: {status, reason, message}, ...}} (free-form:
                 what each fetcher reports is its own)
    target       Target: final_url (str), http_status (int), peer_ip,
                 tls_certificate_sha256, content_type (str or null),
                 redirects [{url, status}]
    artifacts    [ManifestArtifact: name, role, media_type, size, sha256, sha512]
    signer       Signer: algorithm, key_id

Reading is strict (:meth:`Manifest.parse`): a field missing, added or of another type is
refused by name, so that what a verifier shows a court is exactly what was signed, and
``Manifest.parse(b).canonical() == b`` for every manifest this package writes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import rfc8785

from chain_of_custody.digest import Digest, digest_bytes
from chain_of_custody.errors import VerificationError
from chain_of_custody.keys import ALGORITHM, PublicKey, SigningKey

MANIFEST_TYPE = "evidence-archiver/capture-manifest/v1"
MANIFEST_FILE = "manifest.json"
"""The manifest's file name, in the stores, the bundle and every guide."""
SIGNATURE_FILE = "manifest.sig"
"""The detached Ed25519 signature over exactly the bytes of ``manifest.json``."""
ROLES = frozenset(
    {"warc", "media", "metadata", "screenshot", "pdf", "dom", "certificate", "provenance"}
)
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON-compatible value."""
    return rfc8785.dumps(value)


@dataclass(frozen=True, slots=True)
class Artifact:
    """One sealed file of a capture, as the capture pipeline hands it to
    :func:`build_manifest` (and lists ``manifest.json`` and ``manifest.sig`` beside it,
    whose roles exist only outside the manifest)."""

    name: str
    role: str
    media_type: str
    digest: Digest

    def as_manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "media_type": self.media_type,
            "size": self.digest.size,
            "sha256": self.digest.sha256,
            "sha512": self.digest.sha512,
        }


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requested:
    """Who asked for what, when, and through what (``cli``, ``api``, ``watch``)."""

    url: str
    by: str
    at: str
    via: str
    source: str | None
    case: str | None
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "by": self.by, "at": self.at, "via": self.via,
                "source": self.source, "case": self.case, "note": self.note}


@dataclass(frozen=True, slots=True)
class Happened:
    """When and where the capture ran, with what software, and how each fetcher did.

    ``fetchers`` maps a fetcher's name to what it reported (its ``outcome`` and its own
    fields); those entries are free-form JSON objects, held as read-only views.
    """

    started: str
    ended: str
    host: str
    software: Mapping[str, str]
    fetchers: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"started": self.started, "ended": self.ended, "host": self.host,
                "software": dict(self.software),
                "fetchers": {name: _thaw(entry) for name, entry in self.fetchers.items()}}


@dataclass(frozen=True, slots=True)
class Redirect:
    """One redirect hop on the way to the final URL."""

    url: str
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status}


@dataclass(frozen=True, slots=True)
class Target:
    """The target as it was seen."""

    final_url: str
    http_status: int
    peer_ip: str | None
    tls_certificate_sha256: str | None
    redirects: tuple[Redirect, ...]
    content_type: str | None

    def to_json(self) -> dict[str, Any]:
        return {"final_url": self.final_url, "http_status": self.http_status,
                "peer_ip": self.peer_ip, "tls_certificate_sha256": self.tls_certificate_sha256,
                "redirects": [r.to_json() for r in self.redirects],
                "content_type": self.content_type}


@dataclass(frozen=True, slots=True)
class ManifestArtifact:
    """One file the manifest lists, with the size and digests it must have."""

    name: str
    role: str
    media_type: str
    size: int
    sha256: str
    sha512: str

    @property
    def digest(self) -> Digest:
        return Digest(self.sha256, self.sha512, self.size)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "media_type": self.media_type,
                "size": self.size, "sha256": self.sha256, "sha512": self.sha512}


@dataclass(frozen=True, slots=True)
class Signer:
    """The key that signs the manifest, named inside the signed bytes."""

    algorithm: str
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id}


@dataclass(frozen=True, slots=True)
class Manifest:
    """A capture manifest (v1), field for field. Never touches disk, clock or network.

    Made by :func:`build_manifest` or read by :meth:`parse`; its bytes are
    :meth:`canonical`. Artifact names are unique and every role is one of
    :data:`ROLES` (both are checked on the way in).
    """

    type: ClassVar[str] = MANIFEST_TYPE

    capture_id: str
    requested: Requested
    happened: Happened
    target: Target
    artifacts: tuple[ManifestArtifact, ...]
    signer: Signer

    @classmethod
    def parse(cls, canonical: bytes) -> Manifest:
        """Read a manifest from its canonical bytes (not checking any signature: see
        :func:`verify_manifest`).

        Raises :class:`VerificationError` naming the problem: not JSON, not a JSON object,
        another ``type``, not RFC 8785 canonical, a field missing, unexpected or of the
        wrong type (named by its path, e.g. ``target.http_status``), an artifact listed
        twice, an unknown role.
        """
        return cls.from_json(_load(canonical))

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Manifest:
        """The model of an already parsed document (its form is not checked: only
        :meth:`parse` sees bytes). Raises :class:`VerificationError` as :meth:`parse`."""
        root = _Fields(document, "")
        type_ = root.text("type")
        if type_ != MANIFEST_TYPE:
            raise VerificationError(f"manifest type is not {MANIFEST_TYPE}")
        requested = root.object("requested")
        happened = root.object("happened")
        target = root.object("target")
        signer = root.object("signer")
        manifest = cls(
            capture_id=root.text("capture_id"),
            requested=Requested(
                url=requested.text("url"), by=requested.text("by"), at=requested.text("at"),
                via=requested.text("via"), source=requested.optional_text("source"),
                case=requested.optional_text("case"), note=requested.optional_text("note"),
            ),
            happened=Happened(
                started=happened.text("started"), ended=happened.text("ended"),
                host=happened.text("host"),
                software=_software(happened.object("software")),
                fetchers=_fetchers(happened.object("fetchers")),
            ),
            target=Target(
                final_url=target.text("final_url"), http_status=target.integer("http_status"),
                peer_ip=target.optional_text("peer_ip"),
                tls_certificate_sha256=target.optional_text("tls_certificate_sha256"),
                redirects=tuple(_redirect(item) for item in target.objects("redirects")),
                content_type=target.optional_text("content_type"),
            ),
            artifacts=_artifacts(root.objects("artifacts")),
            signer=Signer(algorithm=signer.text("algorithm"),
                          key_id=signer.hex_digest("key_id", 64)),
        )
        for fields in (requested, happened, target, signer, root):
            fields.done()
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The document as plain JSON values (dicts, lists, str, int, None)."""
        return {
            "type": MANIFEST_TYPE,
            "capture_id": self.capture_id,
            "requested": self.requested.to_json(),
            "happened": self.happened.to_json(),
            "target": self.target.to_json(),
            "artifacts": [a.to_json() for a in self.artifacts],
            "signer": self.signer.to_json(),
        }

    def canonical(self) -> bytes:
        """The RFC 8785 bytes: what is signed, stored and shipped as ``manifest.json``."""
        return canonical_json(self.to_json())

    def artifact(self, name: str) -> ManifestArtifact | None:
        """The artifact called ``name``, or ``None`` when the manifest lists none (a file
        that is not in the signed manifest is the caller's finding to report, not an
        error here)."""
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        return None


# -- reading a document -------------------------------------------------------------------


def _load(canonical: bytes) -> dict[str, Any]:
    """The JSON object of a manifest's bytes, checked for type and canonical form."""
    try:
        document = json.loads(canonical, object_pairs_hook=_unique_keys,
                              parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerificationError(f"manifest is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise VerificationError("manifest is not a JSON object")
    if document.get("type") != MANIFEST_TYPE:
        raise VerificationError(f"manifest type is not {MANIFEST_TYPE}")
    try:
        canonical_form = canonical_json(document)
    except rfc8785.CanonicalizationError as exc:
        raise VerificationError(f"manifest holds a value RFC 8785 cannot represent: "
                                f"{exc}") from exc
    if canonical_form != canonical:
        raise VerificationError("manifest bytes are not in RFC 8785 canonical form")
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two members of one name: JSON parsers disagree on which wins, so a verifier and a
    # person reading the file could see different values. Refused outright.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the member {key!r} appears twice in one object")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


class _Fields:
    """The members of one JSON object of the document, read by name; each must be read,
    and :meth:`done` refuses any member left over (a field the model does not know)."""

    def __init__(self, value: object, path: str) -> None:
        if not isinstance(value, Mapping):
            if not path:
                raise VerificationError("manifest is not a JSON object")
            raise VerificationError(f"manifest field {path!r} must be an object, "
                                    f"not {_kind(value)}")
        self._members: Mapping[str, Any] = value
        self._path = path
        self._read: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _get(self, key: str) -> Any:
        if key not in self._members:
            raise VerificationError(f"manifest lacks the field {self._name(key)!r}")
        self._read.add(key)
        return self._members[key]

    def _wrong(self, key: str, wanted: str, value: object) -> VerificationError:
        return VerificationError(f"manifest field {self._name(key)!r} must be {wanted}, "
                                 f"not {_kind(value)}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._get(key)
        if value is not None and not isinstance(value, str):
            raise self._wrong(key, "a string or null", value)
        return value

    def integer(self, key: str) -> int:
        value = self._get(key)
        # bool is an int in Python, not in JSON: true is not a status code.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer", value)
        return value

    def count(self, key: str) -> int:
        value = self.integer(key)
        if value < 0:
            raise VerificationError(f"manifest field {self._name(key)!r} must not be negative")
        return value

    def hex_digest(self, key: str, digits: int) -> str:
        value = self.text(key)
        if len(value) != digits or not _LOWER_HEX.fullmatch(value):
            raise VerificationError(f"manifest field {self._name(key)!r} must be "
                                    f"{digits} lower-case hex digits")
        return value

    def object(self, key: str) -> _Fields:
        return _Fields(self._get(key), self._name(key))

    def objects(self, key: str) -> list[_Fields]:
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        return [_Fields(item, f"{self._name(key)}[{number}]")
                for number, item in enumerate(value)]

    def names(self) -> list[str]:
        """Every member, for objects whose members are not fixed (marked read)."""
        self._read.update(self._members)
        return list(self._members)

    def free_form(self) -> Mapping[str, Any]:
        """Every member as a read-only JSON value (marked read)."""
        self._read.update(self._members)
        frozen: Mapping[str, Any] = _freeze(self._members)
        return frozen

    def done(self) -> None:
        extra = sorted(set(self._members) - self._read)
        if extra:
            raise VerificationError(f"manifest has an unexpected field {self._name(extra[0])!r}")


def _software(fields: _Fields) -> Mapping[str, str]:
    return MappingProxyType({name: fields.text(name) for name in fields.names()})


def _fetchers(fields: _Fields) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({name: fields.object(name).free_form() for name in fields.names()})


def _redirect(fields: _Fields) -> Redirect:
    redirect = Redirect(url=fields.text("url"), status=fields.integer("status"))
    fields.done()
    return redirect


def _artifacts(items: Iterable[_Fields]) -> tuple[ManifestArtifact, ...]:
    artifacts: list[ManifestArtifact] = []
    names: set[str] = set()
    for fields in items:
        artifact = ManifestArtifact(
            name=fields.text("name"), role=fields.text("role"),
            media_type=fields.text("media_type"), size=fields.count("size"),
            sha256=fields.hex_digest("sha256", 64),
            sha512=fields.hex_digest("sha512", 128),
        )
        fields.done()
        if artifact.name in names:
            raise VerificationError(f"manifest lists the artifact {artifact.name!r} twice")
        names.add(artifact.name)
        if artifact.role not in ROLES:
            raise VerificationError(f"manifest artifact {artifact.name!r} has an unknown "
                                    f"role {artifact.role!r}")
        artifacts.append(artifact)
    return tuple(artifacts)


def _freeze(value: Any) -> Any:
    """A read-only copy of a JSON value: objects as mapping views, arrays as tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """The plain JSON value of a :func:`_freeze` copy."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


# -- making, signing and verifying --------------------------------------------------------


def build_manifest(
    *,
    capture_id: str,
    requested: Mapping[str, Any],
    happened: Mapping[str, Any],
    target: Mapping[str, Any],
    artifacts: Sequence[Artifact],
    key_id: str,
    algorithm: str = ALGORITHM,
) -> Manifest:
    """Assemble the manifest of a capture.

    Raises ``ValueError`` on an unknown role, a duplicate artifact name, or a mapping of
    the wrong shape (a field missing, unexpected or of another type): programming errors,
    not user input.
    """
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate artifact names in {names}")
    for artifact in artifacts:
        if artifact.role not in ROLES:
            raise ValueError(f"unknown artifact role {artifact.role!r}")
    document = {
        "type": MANIFEST_TYPE,
        "capture_id": capture_id,
        "requested": dict(requested),
        "happened": dict(happened),
        "target": dict(target),
        "artifacts": [a.as_manifest_entry() for a in artifacts],
        "signer": {"algorithm": algorithm, "key_id": key_id},
    }
    try:
        return Manifest.from_json(document)
    except VerificationError as exc:
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class SignedManifest:
    """A manifest, its canonical bytes, and the detached Ed25519 signature over exactly
    those bytes (``canonical == manifest.canonical()``)."""

    manifest: Manifest
    canonical: bytes
    signature: bytes

    @property
    def key_id(self) -> str:
        return self.manifest.signer.key_id

    @property
    def algorithm(self) -> str:
        return self.manifest.signer.algorithm

    @property
    def digest(self) -> Digest:
        return digest_bytes(self.canonical)


def sign_manifest(manifest: Manifest | Mapping[str, Any], key: SigningKey) -> SignedManifest:
    """Canonicalise and sign.

    A plain mapping (a parsed document someone edited) is first read with
    :meth:`Manifest.from_json`, which raises :class:`VerificationError` if its shape is
    wrong. Raises ``ValueError`` if the manifest names another key than ``key``.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_json(manifest)
    if manifest.signer != Signer(key.algorithm, key.key_id):
        raise ValueError("manifest 'signer' does not name the signing key")
    canonical = manifest.canonical()
    return SignedManifest(manifest, canonical, key.sign(canonical))


def verify_manifest(
    canonical: bytes, signature: bytes, keys: Mapping[str, PublicKey]
) -> Manifest:
    """Check a manifest and its signature; return the manifest.

    ``keys`` maps key id to public key (the archive's key history). Raises
    :class:`VerificationError` naming the problem: not JSON, not canonical, wrong type,
    unknown signer, bad signature, and then (for a manifest that is validly signed)
    any problem :meth:`Manifest.parse` names.
    """
    document = _load(canonical)
    # The signature is checked before the document is read any further: a tampered
    # manifest is reported as tampered, not as oddly shaped.
    signer = document.get("signer")
    if not isinstance(signer, dict) or signer.get("algorithm") != ALGORITHM:
        raise VerificationError("manifest names no ed25519 signer")
    key_id = signer.get("key_id")
    public = keys.get(key_id) if isinstance(key_id, str) else None
    if public is None:
        raise VerificationError(f"manifest signed by unknown key {key_id}")
    try:
        public.verify(signature, canonical)
    except VerificationError as exc:
        raise VerificationError(f"manifest signature is not valid: {exc}") from exc
    return Manifest.from_json(document)


__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_TYPE",
    "ROLES",
    "SIGNATURE_FILE",
    "Artifact",
    "Happened",
    "Manifest",
    "ManifestArtifact",
    "Redirect",
    "Requested",
    "SignedManifest",
    "Signer",
    "build_manifest",
    "canonical_json",
    "sign_manifest",
    "verify_manifest",
]
