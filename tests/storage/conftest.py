"""Storage test fixtures: S3 clients for the moto server (``moto_endpoint`` and
``aws_env`` are in ``tests/conftest.py``), a fresh bucket per test, and an endpoint that
refuses connections."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from storage.s3 import S3BlobStore

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client


@pytest.fixture
def make_s3_client(aws_env: None, moto_endpoint: str) -> Callable[..., S3Client]:
    """Build a boto3 S3 client (default: for the moto server) that does not retry, so
    failures show at once."""

    def make(endpoint: str = moto_endpoint) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5),
        )

    return make


@pytest.fixture
def s3_client(make_s3_client: Callable[..., S3Client]) -> S3Client:
    """A boto3 S3 client talking to the moto server."""
    return make_s3_client()


@pytest.fixture
def bucket(s3_client: S3Client) -> str:
    """A fresh, empty bucket (no versioning, no Object Lock)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_s3_store(s3_client: S3Client, bucket: str) -> Callable[..., S3BlobStore]:
    """Build an S3BlobStore on the moto server; ``bucket`` defaults to the fresh one."""

    def make(**kwargs: Any) -> S3BlobStore:
        kwargs.setdefault("bucket", bucket)
        return S3BlobStore(s3_client, **kwargs)

    return make


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where nothing listens: the port is bound (so no other
    process can take it) but never listened on, so every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
