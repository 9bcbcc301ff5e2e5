"""S3BlobStore against a real moto S3 server on 127.0.0.1: single and multipart uploads,
checksums, Object Lock, refusals that leave nothing behind, and unreachable backends."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from storage import BlobIntegrityError, BlobNotFound, S3BlobStore, StoreUnavailable

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

MiB = 1024 * 1024

MakeStore = Callable[..., S3BlobStore]


def _blob(data: bytes) -> tuple[bytes, str, int]:
    return data, hashlib.sha256(data).hexdigest(), len(data)


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _read(store: S3BlobStore, sha256: str) -> bytes:
    with store.open(sha256) as stream:
        return stream.read()


def _multipart(store: MakeStore, **kwargs: Any) -> S3BlobStore:
    """A store whose multipart threshold and part size are S3's minimum, 5 MiB."""
    return store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, **kwargs)


def _no_uploads_in_progress(client: S3Client, bucket: str) -> bool:
    return not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


def _corrupt_bodies_of(client: S3Client, operation: str) -> None:
    """Flip one bit of every request body of ``operation`` after botocore has computed
    its checksum header: damage in transit, or a server that keeps the wrong bytes."""

    def corrupt(params: dict[str, Any], **_: Any) -> None:
        body = params["body"]
        data = body.read() if hasattr(body, "read") else bytes(body)
        params["body"] = io.BytesIO(bytes([data[0] ^ 0x01]) + data[1:])

    client.meta.events.register(f"before-call.s3.{operation}", corrupt)


def _lock_bucket(client: S3Client) -> str:
    name = f"locked-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def test_small_blob_is_one_put_with_its_sha256_checksum_stored(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str
) -> None:
    """A blob under the threshold is one PutObject whose SHA-256 checksum S3 keeps."""
    data, sha, size = _blob(b"a post that was taken down an hour later\n" * 20)
    store = make_s3_store(prefix="evidence")
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    key = f"evidence/sha256/{sha}"
    assert store.key_for(sha) == key
    assert store.name == f"s3://{bucket}/evidence/"
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == size
    assert "-" not in head["ETag"]
    assert head["ChecksumSHA256"] == _b64sha(data)
    assert _read(store, sha) == data


def test_large_blob_goes_up_as_a_multipart_upload_with_part_checksums(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str, tmp_path: Path
) -> None:
    """A 12 MiB blob with 5 MiB parts is a 3-part upload, each part with its SHA-256, and
    reads back intact; no upload is left in progress."""
    data, sha, size = _blob(os.urandom(12 * MiB + 17))
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    store = _multipart(make_s3_store)
    store.put_file(source, sha256=sha, size=size)
    key = store.key_for(sha)
    head = s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-3")
    assert s3_client.head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"] == 3
    # S3's composite checksum is the SHA-256 of the parts' SHA-256 digests: recomputing it
    # from our own 5 MiB slices proves every part was sent with its checksum.
    parts = [data[i : i + 5 * MiB] for i in range(0, size, 5 * MiB)]
    composite = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    got = s3_client.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    got["Body"].close()
    assert got["ChecksumSHA256"].split("-")[0] == base64.b64encode(composite).decode()
    assert hashlib.sha256(_read(store, sha)).hexdigest() == sha
    assert _no_uploads_in_progress(s3_client, bucket)


@pytest.mark.parametrize(
    ("claimed_size", "message"),
    [(None, "hashes to sha256"), (12 * MiB, "longer than the expected"), (13 * MiB, "expected")],
    ids=["wrong-sha256", "source-too-long", "source-too-short"],
)
def test_refused_multipart_upload_leaves_no_object_and_no_upload(
    make_s3_store: MakeStore,
    s3_client: S3Client,
    bucket: str,
    claimed_size: int | None,
    message: str,
) -> None:
    """A large source that does not match its sha256/size is refused after its parts went
    up: the upload is aborted, so there is no object and no upload in progress."""
    data = os.urandom(12 * MiB + 5)
    sha = hashlib.sha256(b"what the pipeline thought it wrote").hexdigest()
    size = len(data)
    if claimed_size is not None:
        sha, size = hashlib.sha256(data).hexdigest(), claimed_size
    store = _multipart(make_s3_store)
    with pytest.raises(
        BlobIntegrityError, match=rf"s3://{bucket}/: refused blob {sha}: .*{message}"
    ):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert not store.exists(sha)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert _no_uploads_in_progress(s3_client, bucket)


def test_object_lock_writes_every_object_in_compliance_mode_until_clock_plus_days(
    s3_client: S3Client,
) -> None:
    """With object_lock_days=1, single and multipart objects are locked in COMPLIANCE mode
    until the injected clock + 1 day, and deleting the version is refused."""
    locked = _lock_bucket(s3_client)
    # Pinned, but to the real present: moto enforces retention against its own clock, so
    # a pinned date in the past would have expired already and the delete would succeed.
    fixed_now = datetime.now(UTC).replace(microsecond=0)
    store = S3BlobStore(
        s3_client,
        bucket=locked,
        object_lock_days=1,
        multipart_threshold=5 * MiB,
        multipart_chunksize=5 * MiB,
        clock=lambda: fixed_now,
    )
    small, small_sha, small_size = _blob(b"small")
    large, large_sha, large_size = _blob(os.urandom(11 * MiB))
    store.put_stream(io.BytesIO(small), sha256=small_sha, size=small_size)
    store.put_stream(io.BytesIO(large), sha256=large_sha, size=large_size)
    for sha in (small_sha, large_sha):
        head = s3_client.head_object(Bucket=locked, Key=store.key_for(sha))
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert abs(until - (fixed_now + timedelta(days=1))) < timedelta(seconds=1)
        with pytest.raises(ClientError) as refused:
            s3_client.delete_object(
                Bucket=locked, Key=store.key_for(sha), VersionId=head["VersionId"]
            )
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert _read(store, large_sha) == large


def test_putting_a_held_unlocked_blob_places_it_under_object_lock(s3_client: S3Client) -> None:
    """A blob already held without retention (stored before Object Lock was configured)
    is locked by the next put instead of being taken as protected."""
    locked = _lock_bucket(s3_client)
    data, sha, size = _blob(b"stored before retention was configured")
    S3BlobStore(s3_client, bucket=locked).put_stream(io.BytesIO(data), sha256=sha, size=size)
    key = f"sha256/{sha}"
    assert "ObjectLockMode" not in s3_client.head_object(Bucket=locked, Key=key)
    fixed_now = datetime.now(UTC).replace(microsecond=0)
    store = S3BlobStore(s3_client, bucket=locked, object_lock_days=3, clock=lambda: fixed_now)
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    head = s3_client.head_object(Bucket=locked, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert abs(head["ObjectLockRetainUntilDate"] - (fixed_now + timedelta(days=3))) < timedelta(
        seconds=1
    )
    assert len(s3_client.list_object_versions(Bucket=locked)["Versions"]) == 1


def test_object_lock_on_a_bucket_without_it_is_store_unavailable(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str
) -> None:
    """object_lock_days on a bucket without Object Lock is refused before anything is
    written, with a message saying what to change (single and multipart alike)."""
    data, sha, size = _blob(os.urandom(6 * MiB))
    store = _multipart(make_s3_store, object_lock_days=1)
    expected = rf"object_lock_days=1 is configured but bucket {bucket} has no Object Lock"
    with pytest.raises(StoreUnavailable, match=expected):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    with pytest.raises(StoreUnavailable, match=expected):
        store.put_stream(io.BytesIO(b"x"), sha256=hashlib.sha256(b"x").hexdigest(), size=1)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert _no_uploads_in_progress(s3_client, bucket)


def test_verify_after_write_catches_bytes_damaged_in_transit(
    make_s3_client: Callable[..., S3Client], s3_client: S3Client, bucket: str
) -> None:
    """moto keeps a body that does not match its ChecksumSHA256; re-reading the object
    catches it. Without versions the bad object is left in place (deleting by key could
    remove a concurrent writer's good copy) and a later sound put replaces it."""
    data, sha, size = _blob(b"frame " * 1000)
    faulty = make_s3_client()
    _corrupt_bodies_of(faulty, "PutObject")
    with pytest.raises(
        BlobIntegrityError,
        match=rf"s3://{bucket}/: verify after write failed for blob {sha}: .*left in place",
    ):
        S3BlobStore(faulty, bucket=bucket).put_stream(io.BytesIO(data), sha256=sha, size=size)
    store = S3BlobStore(s3_client, bucket=bucket)
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert _read(store, sha) == data


def test_verify_after_write_deletes_the_damaged_version_in_a_versioned_bucket(
    make_s3_client: Callable[..., S3Client], s3_client: S3Client, bucket: str
) -> None:
    """In a versioned bucket the damaged version (and only it) is deleted at once."""
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    data, sha, size = _blob(os.urandom(6 * MiB))
    faulty = make_s3_client()
    _corrupt_bodies_of(faulty, "UploadPart")
    store = S3BlobStore(
        faulty, bucket=bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    with pytest.raises(BlobIntegrityError, match=r"verify after write failed.*was deleted"):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert not store.exists(sha)
    assert s3_client.list_object_versions(Bucket=bucket).get("Versions", []) == []


def test_damaged_object_is_repaired_by_putting_the_good_bytes(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A second put re-reads the held object and replaces a damaged one, logging it."""
    data, sha, size = _blob(b"original footage")
    store = make_s3_store()
    s3_client.put_object(Bucket=bucket, Key=store.key_for(sha), Body=b"altered footage")
    assert store.exists(sha)
    with caplog.at_level("WARNING", logger="storage.s3"):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert _read(store, sha) == data
    assert f"held copy of blob {sha} is damaged" in caplog.text


def test_intact_object_makes_a_put_a_no_op(make_s3_store: MakeStore, s3_client: S3Client) -> None:
    """Putting a blob already held intact sends no upload at all."""
    data, sha, size = _blob(b"already archived")
    store = make_s3_store()
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    uploads: list[str] = []
    s3_client.meta.events.register(
        "before-call.s3.PutObject", lambda **kwargs: uploads.append("put")
    )
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert uploads == []


def test_iter_blobs_lists_only_blob_keys_under_the_prefix(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str
) -> None:
    """Keys outside ``<prefix>sha256/<64 hex>`` are not blobs."""
    data, sha, size = _blob(b"listed")
    store = make_s3_store(prefix="a/b")
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    other = hashlib.sha256(b"elsewhere").hexdigest()
    s3_client.put_object(Bucket=bucket, Key=f"sha256/{other}", Body=b"elsewhere")
    s3_client.put_object(Bucket=bucket, Key="a/b/sha256/notes.txt", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=f"a/b/sha256/{other}/x", Body=b"x")
    assert list(store.iter_blobs()) == [sha]


def test_unreachable_endpoint_is_store_unavailable_naming_the_store(
    make_s3_client: Callable[..., S3Client], refusing_endpoint: str
) -> None:
    """Every operation against a port nobody listens on raises StoreUnavailable naming
    the store and the blob."""
    data, sha, size = _blob(b"unsent")
    store = S3BlobStore(make_s3_client(refusing_endpoint), bucket="evidence", prefix="p")
    expected = rf"s3://evidence/p/: cannot reach the S3 endpoint while [a-z -]+ blob {sha}"
    with pytest.raises(StoreUnavailable, match=expected):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    with pytest.raises(StoreUnavailable, match=expected):
        store.open(sha)
    with pytest.raises(StoreUnavailable, match=expected):
        store.exists(sha)
    with pytest.raises(StoreUnavailable, match="s3://evidence/p/: cannot reach the S3 endpoint"):
        list(store.iter_blobs())


def test_missing_bucket_is_store_unavailable(make_s3_store: MakeStore) -> None:
    """A bucket that does not exist is StoreUnavailable for every operation, not a
    missing blob (S3 answers a bare 404 to HeadObject in both cases)."""
    data, sha, size = _blob(b"nowhere to go")
    store = make_s3_store(bucket="no-such-bucket-here")
    expected = "s3://no-such-bucket-here/: bucket no-such-bucket-here does not exist"
    with pytest.raises(StoreUnavailable, match=expected):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    with pytest.raises(StoreUnavailable, match=expected):
        store.exists(sha)
    with pytest.raises(StoreUnavailable, match=expected):
        store.open(sha)
    with pytest.raises(StoreUnavailable, match=expected):
        list(store.iter_blobs())


def test_missing_blob_in_existing_bucket_is_not_found(make_s3_store: MakeStore) -> None:
    """A missing key in an existing bucket is BlobNotFound / exists() False."""
    sha = hashlib.sha256(b"never stored").hexdigest()
    store = make_s3_store()
    assert not store.exists(sha)
    with pytest.raises(BlobNotFound, match=rf"s3://.*/: blob {sha} is missing"):
        store.open(sha)


def test_from_settings_builds_a_working_store_from_the_environment(
    aws_env: None, moto_endpoint: str, s3_client: S3Client, bucket: str
) -> None:
    """from_settings builds its own client; credentials come from the AWS chain (here
    the environment)."""
    data, sha, size = _blob(b"configured")
    store = S3BlobStore.from_settings(
        endpoint_url=moto_endpoint,
        region="us-east-1",
        bucket=bucket,
        prefix="archive",
        object_lock_days=None,
        multipart_threshold=64 * MiB,
        multipart_chunksize=16 * MiB,
    )
    assert store.name == f"s3://{bucket}/archive/"
    store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    head = s3_client.head_object(Bucket=bucket, Key=f"archive/sha256/{sha}")
    assert head["ContentLength"] == size


def test_missing_credentials_are_store_unavailable(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    """Without any AWS credentials, a put is StoreUnavailable saying so."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    data, sha, size = _blob(b"anonymous")
    store = S3BlobStore.from_settings(
        endpoint_url=moto_endpoint,
        region="us-east-1",
        bucket="evidence",
        prefix="",
        object_lock_days=None,
        multipart_threshold=64 * MiB,
        multipart_chunksize=16 * MiB,
    )
    with pytest.raises(
        StoreUnavailable, match=rf"s3://evidence/: no AWS credentials found .*{sha}"
    ):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket": ""}, "needs a bucket name"),
        ({"multipart_chunksize": 5 * MiB - 1}, "multipart_chunksize must be between"),
        ({"multipart_threshold": 6 * 1024 * MiB}, "multipart_threshold must be between"),
        ({"object_lock_days": 0}, "object_lock_days must be at least 1"),
    ],
)
def test_settings_s3_cannot_honour_are_refused(
    s3_client: S3Client, kwargs: dict[str, Any], message: str
) -> None:
    """Part sizes under 5 MiB, single puts over 5 GiB, zero retention are ValueErrors."""
    kwargs.setdefault("bucket", "evidence")
    with pytest.raises(ValueError, match=message):
        S3BlobStore(s3_client, **kwargs)


def test_multipart_upload_of_a_source_with_the_wrong_sha512_is_aborted(
    make_s3_store: MakeStore, s3_client: S3Client, bucket: str
) -> None:
    """A large source with the right sha256 and size but not the given sha512 is refused
    once read to its end, before the upload completes: no object, no upload left."""
    data, sha, size = _blob(os.urandom(12 * MiB + 5))
    wrong = hashlib.sha512(b"what the seal said").hexdigest()
    store = _multipart(make_s3_store)
    refused = rf"refused blob {sha}: .*not the expected {wrong}"
    with pytest.raises(BlobIntegrityError, match=refused):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size, sha512=wrong)
    assert not store.exists(sha)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert _no_uploads_in_progress(s3_client, bucket)
    store.put_stream(io.BytesIO(data), sha256=sha, size=size,
                     sha512=hashlib.sha512(data).hexdigest())
    assert _read(store, sha) == data
