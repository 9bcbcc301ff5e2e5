"""Content-addressed blob stores: local directory, S3, in-memory, and replication.

This package is a library. It never imports ``archiver`` or ``chain_of_custody``.
"""

from storage.base import BlobStore, check_sha256
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError, StoreUnavailable
from storage.files import fsync_dir, publish
from storage.local import LocalBlobStore
from storage.memory import MemoryBlobStore
from storage.replicated import ReplicatedBlobStore
from storage.s3 import S3BlobStore

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
