"""Content-addressed blob stores: local directory, S3, in-memory, and replication.

This package is a library. It never imports ``archiver`` or ``chain_of_custody``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.base import BlobStore, check_sha256
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError, StoreUnavailable
from storage.files import fsync_dir, publish
from storage.local import LocalBlobStore
from storage.memory import MemoryBlobStore
from storage.replicated import ReplicatedBlobStore

if TYPE_CHECKING:
    from storage.s3 import S3BlobStore


def __getattr__(name: str) -> Any:
    # boto3 takes longer to import than a reading command may run: the S3 store loads
    # when it is first asked for.
    if name == "S3BlobStore":
        from storage.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BlobIntegrityError",
    "BlobNotFound",
    "BlobStore",
    "LocalBlobStore",
    "MemoryBlobStore",
    "ReplicatedBlobStore",
    "S3BlobStore",
    "StorageError",
    "StoreUnavailable",
    "check_sha256",
    "fsync_dir",
    "publish",
]
