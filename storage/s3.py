"""A blob store in an S3 bucket (or an S3-compatible server), through boto3.

Key layout: ``<prefix>sha256/<64 hex>``.

Writes and their defences:

* Blobs up to ``multipart_threshold`` go up in one ``PutObject``; larger ones as a
  streaming multipart upload, one part in memory at a time. Every request carries the
  SHA-256 of its body (``ChecksumSHA256``), so S3 refuses a body damaged in transit and
  keeps the checksum with the object.
* The source is hashed as it is read; if it does not match the promised sha256 and size
  (and sha512, when the caller gives it), nothing is completed: a single ``PutObject``
  is never sent, a multipart upload is aborted (no object, no billable orphan parts).
  Any other failure aborts it too.
* Verify after write: the object is read back (``GetObject``) and re-hashed. For a 2 GiB
  video that doubles the traffic; that is the price of verifying twice, and the only way
  to catch a server (or S3-compatible store) that keeps something other than what it
  acknowledged. S3 has no rename, so the object is visible from the moment S3 accepts it;
  the checksum on the request is what keeps unverified bytes from being accepted.
* With ``object_lock_days``, every object is written under Object Lock in COMPLIANCE
  mode until ``clock() + object_lock_days``: nobody, not even the root account, can
  delete or overwrite that version before then. The bucket must have Object Lock on;
  this is checked once per store, before the first write.

Errors from botocore are translated to the :mod:`storage.errors` family in one place,
:meth:`S3BlobStore._translate`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
)

from storage._streams import (
    CHUNK_SIZE,
    Expected,
    copy_checked,
    hash_stream,
    open_source,
    refuse_held,
)
from storage.base import check_sha256
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError, StoreUnavailable

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from botocore.response import StreamingBody
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef, GetObjectOutputTypeDef

__all__ = ["S3BlobStore", "now_utc"]

_log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB
"""S3's smallest allowed part (every part but the last)."""
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * GiB

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_DENIED_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


def now_utc() -> datetime:
    """The current time, timezone-aware UTC (the default clock)."""
    return datetime.now(UTC)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3BlobStore:
    """Content-addressed blobs in ``s3://bucket/prefix`` (see the module docstring).

    ``client`` is a boto3 S3 client; :meth:`from_settings` builds one. Memory use is
    bounded by ``multipart_threshold`` (a single put is hashed before it is sent, so its
    body is held) or by one part of ``multipart_chunksize`` bytes.

    Raises :class:`ValueError` for settings S3 cannot honour (parts under 5 MiB, a single
    put over 5 GiB, a non-positive ``object_lock_days``).
    """

    def __init__(
        self,
        client: S3Client,
        *,
        bucket: str,
        prefix: str = "",
        object_lock_days: int | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 store needs a bucket name")
        if object_lock_days is not None and object_lock_days < 1:
            raise ValueError(f"object_lock_days must be at least 1, not {object_lock_days}")
        if not MIN_PART_SIZE <= multipart_chunksize <= MAX_PART_SIZE:
            raise ValueError(
                f"multipart_chunksize must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} "
                f"bytes (S3's part limits), not {multipart_chunksize}"
            )
        if not 0 <= multipart_threshold <= MAX_SINGLE_PUT:
            raise ValueError(
                f"multipart_threshold must be between 0 and {MAX_SINGLE_PUT} bytes "
                f"(S3's single-put limit), not {multipart_threshold}"
            )
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.object_lock_days = object_lock_days
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self._clock = clock
        self._object_lock_checked = False

    @classmethod
    def from_settings(
        cls,
        *,
        endpoint_url: str | None,
        region: str | None,
        bucket: str,
        prefix: str,
        object_lock_days: int | None,
        multipart_threshold: int,
        multipart_chunksize: int,
    ) -> S3BlobStore:
        """A store with a fresh boto3 client; credentials come from the usual AWS chain
        (environment, shared files, instance or container role), read on first use.

        Raises ValueError as the constructor. Creating the client contacts nobody.
        """
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=120,
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        return cls(
            client,
            bucket=bucket,
            prefix=prefix,
            object_lock_days=object_lock_days,
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
        )

    @property
    def name(self) -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"S3BlobStore({self.name!r})"

    def key_for(self, sha256: str) -> str:
        """The object key of blob ``sha256``. Raises ValueError."""
        return f"{self.prefix}sha256/{check_sha256(sha256)}"

    # -- writing ------------------------------------------------------------------------

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Upload the file at ``path`` as blob ``sha256``, then read it back and verify.

        With ``object_lock_days``, a blob already held has its retention extended to
        ``clock() + object_lock_days`` if it would end sooner: each put of a piece of
        evidence keeps it locked at least that long from now.

        Raises ValueError (malformed sha256, size or sha512), BlobIntegrityError (the file
        does not match sha256, size or the given sha512: nothing is stored; or the stored
        copy failed verification), StoreUnavailable (S3 unreachable or refusing, missing
        bucket, bucket without Object Lock when ``object_lock_days`` is set),
        StorageError (``path`` cannot be read).
        """
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        self._check_object_lock()
        retain_until = self._retain_until()
        if self._holds_intact(expected, retain_until):
            return
        with open_source(path, expected=expected, store=self.name) as source:
            self._upload(source, expected, retain_until)

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Upload what ``stream`` yields to its end as blob ``sha256``, then verify it.

        Raises as :meth:`put_file` (StorageError when the stream cannot be read).
        """
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        self._check_object_lock()
        retain_until = self._retain_until()
        if self._holds_intact(expected, retain_until):
            return
        self._upload(stream, expected, retain_until)

    def _retain_until(self) -> datetime | None:
        if self.object_lock_days is None:
            return None
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock of an S3 store must return timezone-aware times")
        return now + timedelta(days=self.object_lock_days)

    @staticmethod
    def _lock_arguments(retain_until: datetime | None) -> dict[str, Any]:
        if retain_until is None:
            return {}
        return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until}

    def _upload(
        self, source: BinaryIO, expected: Expected, retain_until: datetime | None
    ) -> None:
        if expected.size <= self.multipart_threshold:
            version_id = self._put_single(source, expected, retain_until)
        else:
            version_id = self._put_multipart(source, expected, retain_until)
        self._verify(expected.sha256, expected.size, version_id, retain_until)

    def _put_single(
        self, source: BinaryIO, expected: Expected, retain_until: datetime | None
    ) -> str | None:
        # The checksum header goes before the body, so the whole (small) body is read and
        # checked first; a source that does not match never reaches S3.
        sha256 = expected.sha256
        body = bytearray()
        copy_checked(source, body.extend, expected=expected, store=self.name)
        with self._s3_errors("uploading", sha256):
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key_for(sha256),
                Body=bytes(body),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(bytes.fromhex(sha256)),
                **self._lock_arguments(retain_until),
            )
        return response.get("VersionId")

    def _put_multipart(
        self, source: BinaryIO, expected: Expected, retain_until: datetime | None
    ) -> str | None:
        sha256 = expected.sha256
        key = self.key_for(sha256)
        # S3 allows at most 10,000 parts: grow the part for very large blobs.
        part_size = max(self.multipart_chunksize, math.ceil(expected.size / MAX_PARTS))
        with self._s3_errors("starting the multipart upload of", sha256):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                **self._lock_arguments(retain_until),
            )["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        pending = bytearray()

        def send(part: bytes) -> None:
            number = len(parts) + 1
            checksum = _b64(hashlib.sha256(part).digest())
            with self._s3_errors(f"uploading part {number} of", sha256):
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
            parts.append(
                {"ETag": response["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}
            )

        def sink(chunk: bytes) -> None:
            pending.extend(chunk)
            while len(pending) >= part_size:
                send(bytes(pending[:part_size]))
                del pending[:part_size]

        try:
            # Parts go up while the source is hashed; only once the whole source has
            # matched sha256, size (and sha512) is the last part sent and the upload
            # completed.
            copy_checked(source, sink, expected=expected, store=self.name)
            if pending:
                send(bytes(pending))
            with self._s3_errors("completing the multipart upload of", sha256):
                response = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            # Whatever went wrong (a refused source, S3, Ctrl-C), leave no upload behind:
            # an incomplete upload is invisible but keeps its parts, and their cost, forever.
            self._abort(key, upload_id, sha256, exc)
            raise
        return response.get("VersionId")

    def _abort(self, key: str, upload_id: str, sha256: str, cause: BaseException) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # The original failure is what the caller must see; say what is left over.
            cause.add_note(
                f"{self.name}: could not abort multipart upload {upload_id} of blob "
                f"{sha256} ({exc}); a lifecycle rule AbortIncompleteMultipartUpload "
                "removes such leftovers"
            )

    def _get(
        self, sha256: str, action: str, version_id: str | None = None
    ) -> GetObjectOutputTypeDef:
        """GetObject for blob ``sha256`` (that version if given), asking for its checksum.
        Raises BlobNotFound, StoreUnavailable."""
        arguments: dict[str, Any] = {}
        if version_id and version_id != "null":
            arguments["VersionId"] = version_id
        with self._s3_errors(action, sha256):
            return self.client.get_object(
                Bucket=self.bucket, Key=self.key_for(sha256), ChecksumMode="ENABLED", **arguments
            )

    def _holds_intact(self, expected: Expected, retain_until: datetime | None) -> bool:
        """Whether an intact copy is already held: it is read back and re-hashed, because
        an S3-compatible server may keep checksums it never checked (moto does). A damaged
        copy counts as not held, so the put uploads the good bytes again (a repair).

        Raises BlobIntegrityError when an intact copy is held but does not hash to the
        expected sha512 (the caller's digests disagree), BlobNotFound, StoreUnavailable.
        """
        sha256, size = expected.sha256, expected.size
        try:
            response = self._get(sha256, "re-reading the held copy of")
        except BlobNotFound:
            return False
        held_sha512 = None
        try:
            with self._reader(response["Body"], sha256) as stream:
                held = hash_stream(stream, sha512=expected.sha512 is not None)
            got_sha256, got_size, held_sha512 = held.sha256, held.size, held.sha512
        except BlobIntegrityError:
            # The bytes disagree with the checksum S3 holds for them.
            got_sha256, got_size = "(S3's checksum disagrees)", -1
        if got_sha256 != sha256:
            _log.warning(
                "%s: held copy of blob %s is damaged (%d bytes hashing to %s); "
                "replacing it with the bytes being put",
                self.name,
                sha256,
                got_size,
                got_sha256,
            )
            return False
        if got_size != size:
            return False  # the caller's size is wrong; the upload path will refuse it
        if held_sha512 is not None:
            refuse_held(expected, held_sha512, store=self.name)
        self._ensure_retention(sha256, response, retain_until)
        return True

    def _verify(
        self, sha256: str, size: int, version_id: str | None, retain_until: datetime | None
    ) -> None:
        """Read back what was just written (that exact version when the bucket keeps
        versions), re-hash it, and check its retention."""
        response = self._get(sha256, "re-reading", version_id)
        problem = None
        try:
            with self._reader(response["Body"], sha256) as stream:
                got = hash_stream(stream)
            if (got.sha256, got.size) != (sha256, size):
                problem = f"the stored copy has {got.size} bytes hashing to {got.sha256}"
        except BlobIntegrityError:
            problem = "the bytes read back do not match the checksum S3 stored"
        if problem is not None:
            raise BlobIntegrityError(
                f"{self.name}: verify after write failed for blob {sha256}: {problem}; "
                + self._remove_bad_copy(sha256, version_id)
            )
        self._ensure_retention(sha256, response, retain_until)

    def _ensure_retention(
        self, sha256: str, response: GetObjectOutputTypeDef, retain_until: datetime | None
    ) -> None:
        """Make sure the version just read is locked in COMPLIANCE mode at least until
        ``retain_until``. Some S3-compatible servers (moto among them) ignore the Object
        Lock headers of CreateMultipartUpload; a blob that merely looks protected is worse
        than one known to be unprotected, so retention is then set on the version."""
        if retain_until is None:
            return
        held_until = response.get("ObjectLockRetainUntilDate")
        if (
            response.get("ObjectLockMode") == "COMPLIANCE"
            and held_until is not None
            # S3 may round the date it keeps; a second either way is the same retention.
            and held_until >= retain_until - timedelta(seconds=1)
        ):
            return
        arguments: dict[str, Any] = {}
        version_id = response.get("VersionId")
        if version_id and version_id != "null":
            arguments["VersionId"] = version_id
        with self._s3_errors("placing under Object Lock", sha256):
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self.key_for(sha256),
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until},
                **arguments,
            )

    def _remove_bad_copy(self, sha256: str, version_id: str | None) -> str:
        if not version_id or version_id == "null":
            # Deleting by key could remove a good copy that a concurrent writer has just
            # put under the same key; a later put re-hashes and replaces a damaged copy.
            return "the bucket keeps no versions, so it was left in place: put the blob again"
        try:
            self.client.delete_object(
                Bucket=self.bucket, Key=self.key_for(sha256), VersionId=version_id
            )
        except (ClientError, BotoCoreError) as exc:
            return (
                f"version {version_id} could not be deleted ({self._error_code(exc)}, Object "
                "Lock?): put the blob again so a good version supersedes it"
            )
        return f"version {version_id} was deleted: put the blob again"

    def _check_object_lock(self) -> None:
        """Refuse to write without Object Lock when it is configured: a blob silently
        written without retention would look protected and not be."""
        if self.object_lock_days is None or self._object_lock_checked:
            return
        try:
            response = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if self._error_code(exc) == "ObjectLockConfigurationNotFoundError":
                raise StoreUnavailable(self._no_object_lock_message()) from exc
            raise self._translate(exc, "checking the Object Lock configuration", None) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "checking the Object Lock configuration", None) from exc
        enabled = response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise StoreUnavailable(self._no_object_lock_message())
        self._object_lock_checked = True

    def _no_object_lock_message(self) -> str:
        return (
            f"{self.name}: object_lock_days={self.object_lock_days} is configured but bucket "
            f"{self.bucket} has no Object Lock; use a bucket created with Object Lock "
            "enabled, or unset object_lock_days"
        )

    # -- reading ------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        """Stream blob ``sha256`` from S3; close the returned stream (or use ``with``).

        When S3 holds a full-object checksum, botocore checks it as the stream ends and a
        mismatch raises BlobIntegrityError from ``read``. Raises ValueError, BlobNotFound,
        StoreUnavailable (also from ``read``, if the connection fails midway).
        """
        response = self._get(sha256, "opening")
        return self._reader(response["Body"], sha256)

    def _reader(self, body: StreamingBody, sha256: str) -> BinaryIO:
        return io.BufferedReader(_BodyReader(self, body, sha256), buffer_size=CHUNK_SIZE)

    def exists(self, sha256: str) -> bool:
        """Whether blob ``sha256`` is held (not re-hashed).

        Raises ValueError, StoreUnavailable (also when the bucket itself is missing: S3
        answers a bare 404 for both, so a miss is followed by a check of the bucket).
        """
        key = self.key_for(sha256)
        with self._s3_errors("checking", sha256):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if self._error_code(exc) not in _NOT_FOUND_CODES:
                    raise
            else:
                return True
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if self._error_code(exc) in _NOT_FOUND_CODES:
                    raise StoreUnavailable(self._no_bucket_message()) from exc
                raise
        return False

    def iter_blobs(self) -> Iterator[str]:
        """Yield the sha256 of every blob under the prefix, in ascending order (S3 lists
        keys in byte order). Keys that are not ``sha256/<64 hex>`` are skipped.

        Raises StoreUnavailable.
        """
        base = f"{self.prefix}sha256/"
        paginator = self.client.get_paginator("list_objects_v2")
        with self._s3_errors("listing blobs", None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    name = item.get("Key", "")[len(base) :]
                    try:
                        sha256 = check_sha256(name)
                    except ValueError:
                        continue  # not a blob key (a stray object under the prefix)
                    yield sha256

    # -- errors -------------------------------------------------------------------------

    @contextmanager
    def _s3_errors(self, action: str, sha256: str | None) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, action, sha256) from exc

    @staticmethod
    def _error_code(exc: ClientError | BotoCoreError) -> str:
        if isinstance(exc, ClientError):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return type(exc).__name__

    def _no_bucket_message(self) -> str:
        return (
            f"{self.name}: bucket {self.bucket} does not exist; create it or fix the "
            "configured bucket name"
        )

    def _translate(
        self, exc: ClientError | BotoCoreError, action: str, sha256: str | None
    ) -> StorageError:
        """The one place botocore's exceptions become ours."""
        blob = f" blob {sha256}" if sha256 else ""
        if isinstance(exc, ClientError):
            code = self._error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StoreUnavailable(self._no_bucket_message())
            if code in _NOT_FOUND_CODES and sha256:
                return BlobNotFound(f"{self.name}: blob {sha256} is missing")
            if code in _DIGEST_CODES:
                return BlobIntegrityError(
                    f"{self.name}: S3 refused{blob}: the bytes it received do not match "
                    f"their checksum ({code}); retry, and check the network if it recurs"
                )
            if code == "InvalidRequest" and "objectlock" in message.replace(" ", "").lower():
                return StoreUnavailable(self._no_object_lock_message())
            if code in _DENIED_CODES or status == 403:
                return StoreUnavailable(
                    f"{self.name}: access denied while {action}{blob} ({code}); check the "
                    "credentials and the bucket policy"
                )
            return StoreUnavailable(
                f"{self.name}: S3 refused {action}{blob}: {code} {message}".rstrip()
            )
        if isinstance(exc, NoCredentialsError):
            return StoreUnavailable(
                f"{self.name}: no AWS credentials found while {action}{blob}; set them in "
                "the environment, the shared credentials file or an instance role"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return StoreUnavailable(
                f"{self.name}: cannot reach the S3 endpoint while {action}{blob}: {exc}"
            )
        return StoreUnavailable(f"{self.name}: {action}{blob} failed: {exc}")


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore ``StreamingBody`` that speaks our exceptions."""

    def __init__(self, store: S3BlobStore, body: StreamingBody, sha256: str) -> None:
        super().__init__()
        self._store = store
        self._body = body
        self._sha256 = sha256

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except FlexibleChecksumError as exc:
            raise BlobIntegrityError(
                f"{self._store.name}: blob {self._sha256} read back does not match the "
                "checksum S3 stored for it"
            ) from exc
        except (BotoCoreError, OSError) as exc:
            raise StoreUnavailable(
                f"{self._store.name}: reading blob {self._sha256} failed midway: {exc}"
            ) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
