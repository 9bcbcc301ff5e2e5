"""The one exception family of ``chain_of_custody``.

::

    CustodyError                    anything this package refuses to do
    ├── SigningKeyError             a key cannot be created, loaded or decrypted
    ├── LedgerError                 the ledger cannot be written or read
    └── VerificationError           something does not verify: a digest, a signature,
        ├── ProofError              an inclusion or consistency proof,
        ├── LedgerIntegrityError    or the ledger itself (names the first bad entry);
        └── BundleError             a file given as an evidence bundle is not one at all

Third-party exceptions (cryptography, SQLAlchemy) are translated where they enter,
with a message a person can act on, and chained with ``from``.
"""

from __future__ import annotations


class CustodyError(Exception):
    """Base class for every error raised by ``chain_of_custody``."""


class SigningKeyError(CustodyError):
    """A signing key cannot be created, loaded or decrypted (wrong passphrase, bad file)."""


class LedgerError(CustodyError):
    """The ledger cannot be appended to or read."""


class VerificationError(CustodyError):
    """A digest, signature, proof or record does not verify."""


class ProofError(VerificationError):
    """An inclusion or consistency proof is malformed or does not match the root."""


class LedgerIntegrityError(VerificationError):
    """The stored ledger does not match its hashes or its signed checkpoints.

    ``seq`` names the first bad entry when one can be named (``None`` when the fault is
    in a checkpoint or the tree as a whole).
    """

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class BundleError(VerificationError):
    """The file is not a bundle at all (missing, unreadable, not a ZIP).

    Everything wrong *inside* a bundle is a failed check of the verification report
    instead, so that every problem is reported, not just the first.
    """
