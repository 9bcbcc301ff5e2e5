"""Store: every sealed file on every configured store, verified, before anything is
recorded.

Each store re-hashes what it wrote and refuses a copy that differs from the digests seal
stated (the second half of "verify twice"); a store that cannot take a file raises, and
the capture is then recorded as failed (reason ``storage``), never as completed with a
missing copy. Blobs are content-addressed, so what a failed capture already stored is
harmless: unreferenced, never half-written.
"""

from __future__ import annotations

import io

from archiver.capture.values import Sealed, Stored
from storage.replicated import ReplicatedBlobStore


def store(sealed: Sealed, blobs: ReplicatedBlobStore) -> Stored:
    """Put every file of ``sealed`` (artifacts, manifest, signature) into ``blobs``.

    Raises ``storage.errors.StorageError`` naming the store and the blob that failed.
    """
    for staged in sealed.all_files:
        digest = staged.digest
        # The SHA-512 too: each store checks both digests seal stated. On a local store
        # on the scratch directory's filesystem the file is linked in, not copied, and
        # read once to verify it (two reads of the data at most, whatever the store).
        if staged.path is not None:
            blobs.put_file(staged.path, sha256=digest.sha256, size=digest.size,
                           sha512=digest.sha512)
        else:
            assert staged.data is not None
            blobs.put_stream(io.BytesIO(staged.data), sha256=digest.sha256, size=digest.size,
                             sha512=digest.sha512)
    return Stored(sealed, tuple(s.name for s in blobs.stores))
