"""Several stores behind one: a blob counts as stored only when every store holds it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

from storage.base import BlobStore, check_sha256, check_sha512, check_size
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError, StoreUnavailable

__all__ = ["ReplicatedBlobStore"]


class ReplicatedBlobStore:
    """Writes go to every store in :attr:`stores`, in order; reads come from the first
    store that can serve the blob.

    A put succeeds only when every store holds a verified copy. When one store fails the
    put stops there and raises; copies already made on earlier stores stay (they are
    content-addressed and verified, so harmless, and a retry finds them intact).

    Raises ValueError when given no store.
    """

    def __init__(self, stores: Sequence[BlobStore]) -> None:
        if not stores:
            raise ValueError("a replicated store needs at least one store")
        self.stores: tuple[BlobStore, ...] = tuple(stores)

    @property
    def name(self) -> str:
        """``replicated(<name>, <name>, ...)``."""
        return f"replicated({', '.join(store.name for store in self.stores)})"

    def __repr__(self) -> str:
        return f"ReplicatedBlobStore({list(self.stores)!r})"

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store the file at ``path`` on every store (each reads it anew, and each checks
        ``sha512`` when it is given).

        Raises ValueError (malformed sha256, size or sha512), and on the first store that
        fails, an error of the same kind (BlobIntegrityError, StoreUnavailable, else
        StorageError) naming that store.
        """
        check_sha256(sha256)
        check_size(size)
        check_sha512(sha512)
        for store in self.stores:
            try:
                store.put_file(path, sha256=sha256, size=size, sha512=sha512)
            except StorageError as exc:
                raise self._failed(store, sha256, exc) from exc

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store what ``stream`` yields on every store.

        A stream can be read once, so with more than one store it must be seekable: it is
        rewound to the position it had on entry before each store reads it. Raises
        ValueError (malformed sha256, size or sha512, or a non-seekable stream and
        several stores), and errors as :meth:`put_file`.
        """
        check_sha256(sha256)
        check_size(size)
        check_sha512(sha512)
        if len(self.stores) > 1 and not stream.seekable():
            raise ValueError(
                f"{self.name}: put_stream on several stores needs a seekable stream; "
                "use put_file or spool the stream to a file first"
            )
        start = stream.tell() if len(self.stores) > 1 else 0
        for index, store in enumerate(self.stores):
            if index:
                stream.seek(start)
            try:
                store.put_stream(stream, sha256=sha256, size=size, sha512=sha512)
            except StorageError as exc:
                raise self._failed(store, sha256, exc) from exc

    def _failed(self, store: BlobStore, sha256: str, exc: StorageError) -> StorageError:
        # Keep the kind of failure (a bad source vs an unreachable store call for
        # different actions) and name the store even if its own message does not.
        kind: type[StorageError] = StorageError
        if isinstance(exc, BlobIntegrityError):
            kind = BlobIntegrityError
        elif isinstance(exc, StoreUnavailable):
            kind = StoreUnavailable
        return kind(f"{self.name}: blob {sha256} not stored on {store.name}: {exc}")

    def open(self, sha256: str) -> AbstractContextManager[BinaryIO]:
        """Open blob ``sha256`` from the first store that can serve it; a store that
        lacks it or cannot be reached is skipped. Errors surface when the ``with`` block
        is entered.

        Raises ValueError, BlobNotFound (no store holds it, naming them all),
        StoreUnavailable (no store could serve it and at least one was unreachable).
        """
        check_sha256(sha256)
        return self._open(sha256)

    @contextmanager
    def _open(self, sha256: str) -> Iterator[BinaryIO]:
        failures: list[StorageError] = []
        for store in self.stores:
            with ExitStack() as stack:
                try:
                    stream = stack.enter_context(store.open(sha256))
                except (BlobNotFound, StoreUnavailable) as exc:
                    failures.append(exc)
                    continue
                yield stream
                return
        if all(isinstance(failure, BlobNotFound) for failure in failures):
            raise BlobNotFound(f"{self.name}: blob {sha256} is missing from every store")
        raise StoreUnavailable(
            f"{self.name}: no store could serve blob {sha256}: "
            + "; ".join(str(failure) for failure in failures)
        )

    def exists(self, sha256: str) -> bool:
        """Whether every store holds blob ``sha256``. Raises ValueError, StoreUnavailable."""
        check_sha256(sha256)
        return all(store.exists(sha256) for store in self.stores)

    def iter_blobs(self) -> Iterator[str]:
        """Yield, in ascending order and once each, the sha256 of every blob held by at
        least one store (an audit then finds which stores lack it). Raises
        StoreUnavailable."""
        held: set[str] = set()
        for store in self.stores:
            held.update(store.iter_blobs())
        yield from sorted(held)
