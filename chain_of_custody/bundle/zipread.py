"""Reading a bag inside a ZIP in place, safely: nothing is extracted.

Threat model notes:

* The ZIP is read in place, never extracted. Names are checked first: one top folder, no
  absolute paths, ``..``, backslashes, symbolic links, or two members of one name (a ZIP
  with duplicates could show one tool one file and us another). What is refused is kept
  in :attr:`BagReader.problems`, for the verifier to report.
* Every file is hashed as it streams; JSON, notes and keys are read whole only below
  :data:`MAX_SMALL_FILE` bytes. A member whose CRC does not match raises
  :class:`VerificationError` naming it, which the verifier reports as a failed check.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path
from typing import IO

from chain_of_custody.digest import CHUNK_SIZE, Digest, Hasher
from chain_of_custody.errors import BundleError, VerificationError

MAX_SMALL_FILE = 64 * 1024 * 1024


class BagReader:
    """The bag inside a ZIP: members by their path relative to the bag's folder."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` and index its members. Raises :class:`BundleError` if it is
        missing, a directory, unreadable or not a ZIP at all."""
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError as exc:
            raise BundleError(f"{path}: no such file") from exc
        except IsADirectoryError as exc:
            raise BundleError(f"{path} is a directory, not a bundle (.zip)") from exc
        except zipfile.BadZipFile as exc:
            raise BundleError(f"{path} is not a ZIP file, so not an evidence bundle") from exc
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.root = ""
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.problems: list[str] = []
        self._index()

    def close(self) -> None:
        self.zip.close()

    def _index(self) -> None:
        infos = self.zip.infolist()
        tops = {info.filename.split("/", 1)[0] for info in infos}
        if len(tops) != 1 or not infos:
            self.problems.append(
                f"the ZIP must hold exactly one folder (the bag), it holds {len(tops)} "
                "top-level entries"
            )
            return
        self.root = tops.pop()
        seen: set[str] = set()
        for info in infos:
            name = info.filename
            if name in seen:
                self.problems.append(f"the ZIP holds two members named {name!r}")
                continue
            seen.add(name)
            parts = name.split("/")
            if (name.startswith("/") or "\\" in name or "\x00" in name
                    or any(p in ("", ".", "..") for p in parts[:-1])
                    or parts[-1] in (".", "..")):
                self.problems.append(f"unsafe member name {name!r}")
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                self.problems.append(f"member {name!r} is a symbolic link")
                continue
            if info.is_dir():
                continue
            if len(parts) < 2:
                self.problems.append(f"member {name!r} is outside the bag's folder")
                continue
            self.members[name[len(self.root) + 1:]] = info

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        """A member's bytes as a stream (``KeyError`` if there is no such member)."""
        return self.zip.open(self.members[name])

    def read_small(self, name: str) -> bytes:
        """A whole (small) file. Raises VerificationError if absent, too big or damaged."""
        info = self.members.get(name)
        if info is None:
            raise VerificationError(f"{name} is missing from the bundle")
        if info.file_size > MAX_SMALL_FILE:
            raise VerificationError(f"{name} is {info.file_size} bytes, too large to be one")
        try:
            with self.zip.open(info) as stream:
                return stream.read(MAX_SMALL_FILE + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise VerificationError(f"{name} is damaged in the ZIP: {exc}") from exc

    def digest(self, name: str) -> Digest:
        """Both digests of a member, streamed. Raises VerificationError when damaged."""
        hasher = Hasher()
        try:
            with self.zip.open(self.members[name]) as stream:
                while chunk := stream.read(CHUNK_SIZE):
                    hasher.update(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise VerificationError(f"{name} is damaged in the ZIP: {exc}") from exc
        return hasher.digest()


__all__ = ["MAX_SMALL_FILE", "BagReader"]
