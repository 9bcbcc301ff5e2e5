"""Trusted timestamps (RFC 3161) of ledger checkpoints, and the table that keeps them.

A checkpoint's signed note (the exact UTF-8 bytes) is hashed with SHA-256 and sent to a
Time-Stamping Authority; the TSA answers with a ``TimeStampResp`` signed by its
certificate, asserting that those bytes existed at ``genTime``. The reply is kept
verbatim, so ``openssl ts -verify -data checkpoint.note -in token.tsr -CAfile ca.pem``
checks it with no code of ours, next to the TSA's CA certificates as they were when the
token was obtained.

Threat model notes:

* A token anchors the checkpoint (and, through the Merkle tree, every entry before it)
  in time *independently of the archive's clock*: an archive that back-dates an entry
  cannot also back-date the TSA's signature.
* A reply is accepted only when it is granted, carries the nonce we sent, the imprint of
  our bytes, and verifies against the configured CA: a TSA (or a network) that answers
  with something else leaves no token behind, and the checkpoint is stamped later.
* Verification takes its trust roots from the caller. Certificates are checked as of the
  token's own ``genTime``, not now: TSA certificates expire, their tokens do not.
* Tokens are insert-only (database triggers, like the ledger's tables): a token that was
  obtained can be added to, never replaced.

Nothing here talks to the network: the caller injects ``post(url, body) -> body``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import rfc3161_client
import sqlalchemy as sa
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from chain_of_custody.errors import LedgerError, VerificationError
from chain_of_custody.ledger import Checkpoint, checkpoints_table, metadata
from chain_of_custody.times import rfc3339

TOKENS_TABLE = "timestamp_tokens"
MAX_RESPONSE_BYTES = 1024 * 1024  # a TimeStampResp is a few KiB; refuse anything huge

Post = Callable[[str, bytes], bytes]
"""``post(url, request_der) -> response_der``; raises :class:`TimestampError` on failure."""

tokens_table = sa.Table(
    TOKENS_TABLE,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # the id of a ledger_checkpoints row (no foreign key: see migration 0003)
    sa.Column("checkpoint_id", sa.Integer, nullable=False, index=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("tsa_url", sa.Text, nullable=False),
    sa.Column("data_sha256", sa.String(64), nullable=False),
    sa.Column("gen_time", sa.Text, nullable=False),
    sa.Column("serial", sa.Text, nullable=False),
    sa.Column("response", sa.LargeBinary, nullable=False),
    sa.Column("ca_pem", sa.Text, nullable=False),
    sa.Column("created", sa.Text, nullable=False),
)


class TimestampError(VerificationError):
    """A TSA could not be reached, refused, or answered with a token that does not
    verify. The message names the TSA and the reason."""


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A ``TimeStampReq`` ready to send, and what the reply must match."""

    der: bytes
    nonce: int | None
    data_sha256: str


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a verified token asserts, and who asserted it."""

    gen_time: datetime
    serial_number: int
    policy: str
    hash_algorithm: str
    imprint: bytes
    tsa_subject: str
    tsa_certificate_sha256: str
    root_subject: str
    root_sha256: str


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token as the database keeps it."""

    id: int
    checkpoint_id: int
    tree_size: int
    tsa_url: str
    data_sha256: str
    gen_time: str
    serial: str
    response: bytes
    ca_pem: str
    created: str


# -- certificates -----------------------------------------------------------------------------


def load_certificates(pem: bytes, what: str = "CA file") -> list[x509.Certificate]:
    """Every certificate in a PEM blob. Raises :class:`VerificationError` if there is none
    or the PEM is malformed."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise VerificationError(f"{what} holds no readable PEM certificate") from exc
    return certificates


def _self_signed(certificate: x509.Certificate) -> bool:
    if certificate.subject != certificate.issuer:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def split_chain(
    certificates: Sequence[x509.Certificate],
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(roots, intermediates): roots are the self-signed certificates."""
    roots = [c for c in certificates if _self_signed(c)]
    intermediates = [c for c in certificates if not _self_signed(c)]
    return roots, intermediates


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


# -- requests and replies ---------------------------------------------------------------------


def prepare_request(data: bytes) -> PreparedRequest:
    """A SHA-256 ``TimeStampReq`` for ``data``, with a nonce, asking for the TSA's
    certificate in the reply (so the token carries its signer)."""
    request = (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    return PreparedRequest(request.as_bytes(), request.nonce, hashlib.sha256(data).hexdigest())


def request_token(
    url: str, data: bytes, *, ca_pem: bytes, post: Post
) -> tuple[bytes, TokenInfo]:
    """Ask the TSA at ``url`` to stamp ``data``; return the verified reply and what it says.

    Raises :class:`TimestampError` naming the TSA: unreachable, refused, or a reply that
    does not verify against ``ca_pem`` or does not match the request.
    """
    request = prepare_request(data)
    response = post(url, request.der)
    try:
        info = verify_token(response, data, ca_pem=ca_pem, nonce=request.nonce)
    except VerificationError as exc:
        raise TimestampError(f"TSA {url}: {exc}") from exc
    return response, info


_OPENSSL_REASON = re.compile(r'Verify error: ([^"]+)"|reason: "([^"]+)"')


def _concise(message: str) -> str:
    """rfc3161-client passes OpenSSL's whole error stack; keep the reason a person needs."""
    found = _OPENSSL_REASON.findall(message)
    certificate_problems = [str(a) for a, _ in found if a]
    if certificate_problems:  # "certificate has expired", "unable to get local issuer ..."
        return f"TSA certificate: {certificate_problems[0]}"
    reasons = [str(b) for _, b in found if b]
    return reasons[-1] if reasons else message[:300]


def verify_token(
    response: bytes,
    data: bytes,
    *,
    ca_pem: bytes | None = None,
    roots: Sequence[x509.Certificate] = (),
    intermediates: Sequence[x509.Certificate] = (),
    nonce: int | None = None,
) -> TokenInfo:
    """Check a ``TimeStampResp`` over ``data``, as of its own ``genTime``, against trust
    roots: the self-signed certificates of ``ca_pem`` (its others are intermediates),
    plus ``roots`` and ``intermediates`` given as certificates.

    Raises :class:`VerificationError` naming the problem: not a timestamp reply, not
    granted, another nonce, another imprint, a signature or certificate that does not
    verify (at genTime), a signer without the critical timeStamping extended key usage.
    """
    roots, intermediates = list(roots), list(intermediates)
    if ca_pem is not None:
        from_file, chain = split_chain(load_certificates(ca_pem))
        roots += from_file
        intermediates += chain
    if len(response) > MAX_RESPONSE_BYTES:
        raise VerificationError("timestamp reply is larger than any real token")
    if not response.startswith(b"\x30"):
        raise VerificationError("not an RFC 3161 timestamp reply: it is not DER (a "
                                "TimeStampResp starts with a SEQUENCE)")
    try:
        # the original bytes stay the token; only what the parser sees is canonical
        parsed = rfc3161_client.decode_timestamp_response(canonical_reply(response))
    except ValueError as exc:
        raise VerificationError(
            f"not an RFC 3161 timestamp reply: {_parse_problem(str(exc))}") from exc
    if parsed.status != rfc3161_client.PKIStatus.GRANTED:
        text = "; ".join(parsed.status_string) or "no reason given"
        raise VerificationError(f"the TSA did not grant the timestamp (status "
                                f"{parsed.status}: {text})")
    if not roots:
        raise VerificationError("no self-signed root certificate to check the TSA against")
    builder = rfc3161_client.VerifierBuilder()
    for trusted in roots:
        builder = builder.add_root_certificate(trusted)
    for intermediate in intermediates:
        builder = builder.add_intermediate_certificate(intermediate)
    if nonce is not None:
        builder = builder.nonce(nonce)
    try:
        builder.build().verify_message(parsed, data)
    except rfc3161_client.VerificationError as exc:
        text = str(exc)
        if text == "Mismatch between messages":
            raise VerificationError(
                "the token stamps other bytes than these (message imprint differs)"
            ) from exc
        if text == "Nonce mismatch":
            raise VerificationError("the reply carries another nonce than the request") from exc
        raise VerificationError(f"token does not verify: {_concise(text)}") from exc
    except ValueError as exc:  # malformed structures inside an otherwise parsable reply
        raise VerificationError(f"token does not verify: {_concise(str(exc))}") from exc
    signer = _signer_certificate(parsed)
    info = parsed.tst_info
    root = _issuing_root(signer, roots, intermediates)
    return TokenInfo(
        gen_time=info.gen_time.astimezone(UTC),
        serial_number=info.serial_number,
        policy=str(info.policy.dotted_string),
        hash_algorithm=_hash_name(info.message_imprint.hash_algorithm.dotted_string),
        imprint=info.message_imprint.message,
        tsa_subject=signer.subject.rfc4514_string(),
        tsa_certificate_sha256=fingerprint(signer),
        root_subject=root.subject.rfc4514_string() if root else "",
        root_sha256=fingerprint(root) if root else "",
    )


# -- replies whose certificates are not in DER order -------------------------------------------
#
# RFC 5652 encodes SignedData.certificates as a SET OF, which DER sorts by the members'
# encodings. rfc3161-client (rust-asn1) insists on that order and refuses the reply with
# InvalidSetOrdering; OpenSSL writes the signer's certificate first and its chain after
# (``openssl ts -reply -chain``, ``certs =``), in no sorted order, and ``openssl ts
# -verify`` accepts it. The SET is not covered by the signature (CMS signs the signed
# attributes), so putting its members in DER order changes nothing a verifier checks; the
# reply as the TSA sent it stays the token, because that is what an auditor's OpenSSL
# must be given.
#
# No ASN.1 library is installed (asn1crypto and pyasn1 are absent; cryptography does not
# expose CMS SignedData), and the walk needed is five fixed steps down definite-length
# DER, so it is written here. Every step checks that an element lies inside its parent;
# the walk visits each byte at most once and sorts at most len(reply)/2 members, so a
# crafted reply costs at most linear work plus a sort. Anything unexpected returns the
# reply unchanged, and the parser then names the problem.

_SEQUENCE, _SET, _INTEGER, _OID, _CONTEXT_0 = 0x30, 0x31, 0x02, 0x06, 0xA0


class _NotDer(Exception):
    """The walk met something it does not expect (the parser will say what)."""


def _element(der: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of element) of the DER element at ``offset``, which
    must lie within ``end``. Single-byte tags and definite lengths only."""
    if offset + 2 > end:
        raise _NotDer
    tag, first = der[offset], der[offset + 1]
    if tag & 0x1F == 0x1F:  # high tag numbers appear nowhere on this path
        raise _NotDer
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > end:  # 0: BER's indefinite length
            raise _NotDer
        length = int.from_bytes(der[start:start + count], "big")
        start += count
    if start + length > end:
        raise _NotDer
    return tag, start, start + length


def _expect(der: bytes, offset: int, end: int, tag: int) -> tuple[int, int]:
    found, start, stop = _element(der, offset, end)
    if found != tag:
        raise _NotDer
    return start, stop


def canonical_reply(response: bytes) -> bytes:
    """``response`` with the members of its SignedData ``certificates`` SET in DER order
    (the same bytes when they already are, or when the reply holds no token or is not the
    structure expected). Never raises. Lengths do not change: the SET's members are only
    permuted."""
    try:
        return _canonical_reply(response)
    except _NotDer:
        return response


def _canonical_reply(der: bytes) -> bytes:
    # TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken ContentInfo OPTIONAL }
    start, end = _expect(der, 0, len(der), _SEQUENCE)
    _, after_status = _expect(der, start, end, _SEQUENCE)
    if after_status == end:
        return der  # a refusal carries no token
    # ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT SignedData }
    start, end = _expect(der, after_status, end, _SEQUENCE)
    _, after_oid = _expect(der, start, end, _OID)
    start, end = _expect(der, after_oid, end, _CONTEXT_0)
    # SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo,
    #                           certificates [0] IMPLICIT SET OF OPTIONAL, ... }
    start, end = _expect(der, start, end, _SEQUENCE)
    _, offset = _expect(der, start, end, _INTEGER)
    _, offset = _expect(der, offset, end, _SET)
    _, offset = _expect(der, offset, end, _SEQUENCE)
    tag, start, stop = _element(der, offset, end)
    if tag != _CONTEXT_0:
        return der  # no certificates
    members = []
    offset = start
    while offset < stop:
        _, _, member_end = _element(der, offset, stop)
        members.append(der[offset:member_end])
        offset = member_end
    # DER: by encoding, as octet strings padded with zeros; no whole TLV is a prefix of
    # another (its length would differ), so Python's byte order is DER's
    ordered = sorted(members)
    if ordered == members:
        return der
    return der[:start] + b"".join(ordered) + der[stop:]


_PARSE_ERROR = re.compile(r"kind: (\w+)(?: \{ needed: (\d+) \})?(?:, location: \[([^\]]*)\])?")


def _parse_problem(message: str) -> str:
    """rfc3161-client's parse error, said so a person knows what is wrong with the reply."""
    found = _PARSE_ERROR.search(message)
    if found is None:
        return message[:200]
    kind, needed, location = found.groups()
    where = ""
    if location:
        parts = [part.strip().strip('"') for part in location.split(",")]
        named = [part.rsplit("::", 1)[-1] for part in parts if not part.isdigit()]
        where = f" in {'.'.join(named)}" if named else ""
    if kind == "ShortData":
        return f"it is truncated ({needed or 'more'} bytes missing{where})"
    if kind == "ExtraData":
        return "bytes follow the end of the reply"
    if kind == "InvalidSetOrdering":
        return f"a SET{where} is not in DER order, which only the certificates may be"
    return f"malformed DER ({kind}{where})"


def _signer_certificate(parsed: rfc3161_client.TimeStampResponse) -> x509.Certificate:
    signer_infos = list(parsed.signed_data.signer_infos)
    for der in parsed.signed_data.certificates:
        certificate = x509.load_der_x509_certificate(der)
        for signer_info in signer_infos:
            if (certificate.issuer == signer_info.issuer
                    and certificate.serial_number == signer_info.serial_number):
                return certificate
    # verify_message already refuses a reply without its signer; keep mypy and readers sure
    raise VerificationError("the token does not carry the TSA's certificate")


def _issuing_root(
    signer: x509.Certificate,
    roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
) -> x509.Certificate | None:
    """The root the signer chains to (by issuer names; the signatures were checked)."""
    current = signer
    for _ in range(len(intermediates) + 1):
        for root in roots:
            if current.issuer == root.subject:
                return root
        parent = next((c for c in intermediates if c.subject == current.issuer), None)
        if parent is None:
            return None
        current = parent
    return None


_HASHES = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


def _hash_name(oid: str) -> str:
    return _HASHES.get(oid, oid)


# -- the insert-only table --------------------------------------------------------------------


def _stored(row: sa.Row[tuple[object, ...]]) -> StoredToken:
    m = row._mapping
    return StoredToken(
        id=int(m["id"]), checkpoint_id=int(m["checkpoint_id"]), tree_size=int(m["tree_size"]),
        tsa_url=str(m["tsa_url"]), data_sha256=str(m["data_sha256"]),
        gen_time=str(m["gen_time"]), serial=str(m["serial"]), response=bytes(m["response"]),
        ca_pem=str(m["ca_pem"]), created=str(m["created"]),
    )


class TimestampLog:
    """The timestamp tokens of a ledger's checkpoints, in the database behind ``engine``.

    Raises :class:`LedgerError` when the database refuses a read or a write.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(
        self,
        *,
        checkpoint: Checkpoint,
        tsa_url: str,
        response: bytes,
        info: TokenInfo,
        ca_pem: bytes,
        created: datetime,
    ) -> StoredToken:
        """Keep a verified token of ``checkpoint``."""
        values = {
            "checkpoint_id": checkpoint.id,
            "tree_size": checkpoint.tree_size,
            "tsa_url": tsa_url,
            "data_sha256": hashlib.sha256(checkpoint.note.encode("utf-8")).hexdigest(),
            "gen_time": rfc3339(info.gen_time),
            "serial": str(info.serial_number),
            "response": response,
            "ca_pem": ca_pem.decode("ascii"),
            "created": rfc3339(created),
        }
        try:
            with self.engine.begin() as conn:
                result = conn.execute(sa.insert(tokens_table).values(**values))
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot store a timestamp token: {getattr(exc, 'orig', exc)}") \
                from exc
        primary_key = result.inserted_primary_key
        assert primary_key is not None
        return StoredToken(
            id=int(primary_key[0]), checkpoint_id=checkpoint.id,
            tree_size=checkpoint.tree_size, tsa_url=tsa_url,
            data_sha256=str(values["data_sha256"]), gen_time=str(values["gen_time"]),
            serial=str(values["serial"]), response=response, ca_pem=str(values["ca_pem"]),
            created=str(values["created"]),
        )

    def for_checkpoint(self, checkpoint_id: int) -> list[StoredToken]:
        """The tokens of one checkpoint, oldest first."""
        t = tokens_table.c
        query = sa.select(tokens_table).where(t.checkpoint_id == checkpoint_id).order_by(t.id)
        try:
            with self.engine.connect() as conn:
                return [_stored(row) for row in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read timestamp tokens: {getattr(exc, 'orig', exc)}") \
                from exc

    def earliest_stamped(
        self, min_tree_size: int, tsa_urls: Collection[str]
    ) -> Checkpoint | None:
        """The smallest checkpoint of at least ``min_tree_size`` entries holding a token
        from every TSA in ``tsa_urls`` (from any TSA when ``tsa_urls`` is empty): the
        tightest trusted time bound for entries below ``min_tree_size``."""
        t, c = tokens_table.c, checkpoints_table.c
        query = (
            sa.select(checkpoints_table)
            .join(tokens_table, t.checkpoint_id == c.id)
            .where(c.tree_size >= min_tree_size)
            .group_by(*checkpoints_table.c)
            .order_by(c.tree_size, c.id)
            .limit(1)
        )
        if tsa_urls:
            query = query.where(t.tsa_url.in_(sorted(tsa_urls))).having(
                sa.func.count(sa.distinct(t.tsa_url)) == len(set(tsa_urls))
            )
        try:
            with self.engine.connect() as conn:
                row = conn.execute(query).one_or_none()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read timestamp tokens: {getattr(exc, 'orig', exc)}") \
                from exc
        if row is None:
            return None
        return Checkpoint(row.id, row.tree_size, bytes(row.root_hash), row.origin, row.key_id,
                          row.note, row.created)


__all__ = [
    "PreparedRequest",
    "StoredToken",
    "TimestampError",
    "TimestampLog",
    "TokenInfo",
    "canonical_reply",
    "load_certificates",
    "prepare_request",
    "request_token",
    "split_chain",
    "tokens_table",
    "verify_token",
]
