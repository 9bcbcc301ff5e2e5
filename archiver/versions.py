"""Versions of the software that touches evidence, for warcinfo, provenance and manifests."""

from __future__ import annotations

import platform
from functools import cache
from importlib import metadata

from archiver import __version__

_DISTRIBUTIONS = ("httpx", "httpcore", "warcio", "cryptography", "sqlalchemy", "rfc8785")


@cache
def software_versions() -> dict[str, str]:
    versions = {"evidence-archiver": __version__, "python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
