"""Durable publication of files: the one copy of these helpers in the project.

Writing a file safely takes three steps that are easy to get subtly wrong: fsync the
file's data, rename it into place (atomic on POSIX within one filesystem), and fsync the
directory that now holds the new name; without the last step a crash can forget the
rename even though the data is on disk. :func:`publish` does all three; :func:`fsync_dir`
is the last step alone (also needed after creating or removing a directory entry).

These are thin wrappers over system calls and raise :class:`OSError` as those do: the
caller translates it into its own exception family where the failure means something
(a store into :class:`~storage.errors.StoreUnavailable`, for example).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "publish"]


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` so that entries just created, renamed or removed in it
    survive a crash or power cut.

    Raises OSError (``directory`` cannot be opened, or the fsync failed).
    """
    # O_DIRECTORY makes opening something that is not a directory fail instead of
    # silently syncing a file; it is absent on a few platforms.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, final: Path, *, replace: bool = True) -> None:
    """Make the complete file ``temp`` visible as ``final``, atomically and durably.

    ``temp`` must be on the same filesystem as ``final``. Its data (and metadata such as
    a mode just set) is fsynced first, then it is renamed onto ``final`` and the
    directory of ``final`` is fsynced. Readers of ``final`` see either what was there
    before or all of ``temp``, never a part.

    With ``replace=True`` an existing ``final`` is replaced. With ``replace=False`` an
    existing ``final`` is never touched: ``temp`` is hard-linked to ``final`` (which
    fails if the name exists) and then unlinked.

    Raises OSError; FileExistsError when ``replace=False`` and ``final`` exists. If it
    raises before the rename or link, ``temp`` is left where it was, for the caller to
    remove.
    """
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(temp, final)
    else:
        os.link(temp, final)
        os.unlink(temp)
    fsync_dir(final.parent)
