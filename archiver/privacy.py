"""The archive is private on disk: its files readable by the archive's user only.

Threat model: the archive holds case names, notes (an informant's name), captured pages
and videos, and the encrypted signing key. Any other account on the machine must not
read them, and a home that already existed (a directory made 0755 by hand or by a
tool) must not quietly leave them open. So:

* every ``archiver`` process runs under umask 077 (:func:`private_umask`, entered by
  :func:`archiver.cli.main.main`, the one entry of the CLI, the daemon and its workers,
  which start as ``python -m archiver.cli worker``): what it and its children (Chromium,
  ffmpeg, yt-dlp) create is 0600, and directories 0700;
* the files that matter most are also created with their mode, whatever the umask of
  whoever calls the library: the SQLite database (created 0600 before SQLite opens it,
  whose journal files take its mode), the key (0600, in ``keys/`` 0700), stored blobs
  (0400) and the store's directories (0700), exported bundles (0600);
* ``archiver init`` refuses a home owned by another user and tightens an existing one
  (:func:`prepare_home`, :func:`tighten`), refusing when a mode cannot be changed;
* ``archiver status`` reports what is still open to others (:func:`scan`).

What :func:`scan` looks at, in bounded time: the home; every entry in it and in each of
its directories (one level down: the database files, ``keys/``, ``work/``, exports kept
there); the key file and its directory wherever configured; a SQLite database kept
elsewhere; and every local store's directories (``sha256/ab/cd``: at most 65,794 per
store) and temporary files. Stored blobs are not examined one by one (an archive may hold
millions): the directories above them are, and they are 0700. The scan stops after
``limit`` entries and says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from archiver.settings import Settings

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
OTHERS = 0o077  # any permission for the group or for other users
SCAN_LIMIT = 200_000
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@contextmanager
def private_umask() -> Iterator[None]:
    """Run the block under umask 077 (and give the caller's umask back after it)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (a SQLite database about to be
    made: SQLite gives its journal files the database's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise ArchiverError(f"cannot create {path}: {exc.strerror or exc}") from exc
    os.close(fd)


def prepare_home(home: Path) -> None:
    """Create the archive's home 0700, or check that an existing one belongs to this
    user and make it 0700.

    Raises :class:`ArchiverError` naming the path when the home belongs to another user,
    is not a directory, or its mode cannot be changed.
    """
    try:
        home.mkdir(parents=True, mode=DIR_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ArchiverError(f"cannot create the archive's home {home}: "
                            f"{exc.strerror or exc}") from exc
    info = home.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ArchiverError(f"the archive's home {home} is not a directory")
    if info.st_uid != os.geteuid():
        raise ArchiverError(
            f"the archive's home {home} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}): run archiver as its owner, or choose another home")
    _make_private(home, info.st_mode)


@dataclass(frozen=True, slots=True)
class Exposed:
    """A path that the group or other users may read, write or enter."""

    path: Path
    mode: int
    is_dir: bool

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "mode": f"{self.mode:04o}",
                "kind": "directory" if self.is_dir else "file"}


@dataclass(frozen=True, slots=True)
class Scan:
    checked: int
    exposed: tuple[Exposed, ...] = field(default_factory=tuple)
    complete: bool = True

    def as_json(self, *, shown: int = 20) -> dict[str, Any]:
        return {"checked": self.checked, "complete": self.complete,
                "exposed_count": len(self.exposed),
                "exposed": [e.as_json() for e in self.exposed[:shown]]}


def scan(settings: Settings, *, limit: int = SCAN_LIMIT) -> Scan:
    """What under the archive is open to the group or to other users (see the module
    docstring for where it looks). Never raises for a path that cannot be read: a path
    that vanished is skipped, one that cannot be listed is reported through its mode."""
    seen: set[Path] = set()
    exposed: list[Exposed] = []
    for path in _candidates(settings):
        if path in seen:
            continue
        if len(seen) >= limit:
            return Scan(len(seen), tuple(exposed), complete=False)
        seen.add(path)
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & OTHERS:
            exposed.append(Exposed(path, stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode)))
    return Scan(len(seen), tuple(exposed))


def tighten(settings: Settings) -> list[Exposed]:
    """Take every group and other permission off what :func:`scan` finds; return what
    was changed. Raises :class:`ArchiverError` naming a path whose mode cannot be
    changed (another owner, a filesystem without modes) or whose scan was cut short."""
    found = scan(settings)
    for item in found.exposed:
        _make_private(item.path, item.mode)
    if not found.complete:
        raise ArchiverError(f"more than {SCAN_LIMIT} entries under {settings.home_dir}; "
                            "only the first were checked and made private")
    return list(found.exposed)


def _make_private(path: Path, mode: int) -> None:
    if not mode & OTHERS:
        return
    wanted = stat.S_IMODE(mode) & ~OTHERS
    try:
        os.chmod(path, wanted, follow_symlinks=False)
        now = stat.S_IMODE(path.lstat().st_mode)
    except OSError as exc:
        raise ArchiverError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}) and cannot "
            f"be made private: {exc.strerror or exc}; run 'chmod go-rwx {path}' as its "
            "owner") from exc
    if now & OTHERS:
        raise ArchiverError(
            f"{path} stays mode {now:04o} after chmod: its filesystem does not keep file "
            "modes; keep the archive on one that does")


def _candidates(settings: Settings) -> Iterator[Path]:
    from archiver.settings import LocalStoreSettings

    home = settings.home_dir
    stores = [settings.local_store_path(s) for s in settings.storage.stores
              if isinstance(s, LocalStoreSettings)]
    yield home
    for entry in _entries(home):
        yield entry
        if entry in stores or entry.is_symlink() or not entry.is_dir():
            continue
        yield from _entries(entry)
    key = settings.key_file
    yield key.parent
    yield key
    if settings.database.url is None:
        base = home / "archive.db"
    elif settings.database.url.startswith("sqlite:///"):
        base = Path(settings.database.url.removeprefix("sqlite:///"))
    else:
        base = None
    if base is not None:
        yield from (base.with_name(base.name + suffix) for suffix in SQLITE_SUFFIXES)
    for root in stores:
        yield from _store_paths(root)


def _store_paths(root: Path) -> Iterator[Path]:
    """A local store's directories (``sha256/ab/cd``) and temporary files."""
    yield root
    tmp = root / "tmp"
    yield tmp
    yield from _entries(tmp)
    blobs = root / "sha256"
    yield blobs
    for first in _dirs(blobs):
        yield first
        yield from _dirs(first)


def _entries(directory: Path, *, dirs_only: bool = False) -> Iterator[Path]:
    """The entries of ``directory`` one by one (none if it cannot be listed), so that
    the scan's limit bounds its time however large a directory is."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if dirs_only and not entry.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                yield Path(entry.path)
    except OSError:
        return


def _dirs(directory: Path) -> Iterator[Path]:
    return _entries(directory, dirs_only=True)


def status_lines(report: dict[str, Any], *, shown: int = 10) -> Iterator[str]:
    """The lines of ``archiver status`` about file modes (``report`` is ``Scan.as_json``)."""
    count = report["exposed_count"]
    scope = "" if report["complete"] else f" (stopped after {report['checked']} entries)"
    if not count:
        yield f"files:     private ({report['checked']} paths checked{scope})"
        return
    yield (f"warning:   {count} path(s) of the archive are open to other users{scope}; "
           "'archiver init' makes them private:")
    for item in report["exposed"][:shown]:
        yield f"  {item['mode']}  {item['kind']:9}  {item['path']}"
    if count > min(shown, len(report["exposed"])):
        yield f"  … and {count - min(shown, len(report['exposed']))} more"
