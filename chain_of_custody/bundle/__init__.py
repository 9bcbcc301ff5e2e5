"""Evidence bundles: a signed BagIt 1.0 bag in a ZIP, written and verified side by side.

::

    layout    where every file of a bundle is; manifest lines and tag files
    write     BagWriter: streams a bag into a ZIP, hashing each file, then signs it
    zipread   BagReader: reads a bag in a ZIP in place, refusing unsafe members
    verify    verify_bundle: every check, offline, reported one by one

The names below are the surface other packages use; the bag's paths and formats are in
:mod:`chain_of_custody.bundle.layout`.
"""

from __future__ import annotations

from chain_of_custody.bundle.layout import SIGNED_TAG_MANIFEST, TAG_SIGNATURE_FILE
from chain_of_custody.bundle.verify import (
    BundleReport,
    Check,
    OnProgress,
    WarcCheck,
    WarcChecker,
    iter_lines,
    load_tsa_roots,
    parse_trusted_key,
    verify_bundle,
)
from chain_of_custody.bundle.write import BagWriter
from chain_of_custody.errors import BundleError

__all__ = [
    "SIGNED_TAG_MANIFEST",
    "TAG_SIGNATURE_FILE",
    "BagWriter",
    "BundleError",
    "BundleReport",
    "Check",
    "OnProgress",
    "WarcCheck",
    "WarcChecker",
    "iter_lines",
    "load_tsa_roots",
    "parse_trusted_key",
    "verify_bundle",
]
