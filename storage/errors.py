"""The storage exception family. Every failure of a store is one of these:

::

    StorageError                 base: anything a store could not do
    ├── BlobNotFound             the store does not hold a blob with that sha256
    ├── BlobIntegrityError       bytes do not match the expected sha256/size: the source
    │                            handed to ``put_*``, or what the store holds or re-read
    └── StoreUnavailable         the backend cannot be reached or refused the request
                                 (network, credentials, permissions, full disk, missing
                                 bucket, bucket without Object Lock, ...)

Third-party exceptions (``OSError``, ``botocore``) are translated into these where they
enter, in the store that called the backend, with ``raise ... from exc`` so the cause
stays attached. Each message is one line that names the store and the blob's sha256.

Programming errors (a malformed sha256, a negative size, a non-seekable stream given to
a replicated store) raise :class:`ValueError` instead: they are bugs, not storage faults.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class: a store could not do what was asked."""


class BlobNotFound(StorageError):
    """The store holds no blob with the requested sha256."""


class BlobIntegrityError(StorageError):
    """Bytes do not match the sha256 and size they were expected to have.

    Raised when the source given to a put does not hash to the promised digest or has the
    wrong length (nothing is stored then), and when verify-after-write finds that what the
    store holds differs from what was sent.
    """


class StoreUnavailable(StorageError):
    """The backend cannot be reached, or refused the operation."""
