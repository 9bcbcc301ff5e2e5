"""Chain of custody: digests, canonical manifests, signatures, the Merkle ledger.

This package is a library. It never imports ``archiver`` or ``storage``; ``archiver``
wires it together with the stores.
"""
