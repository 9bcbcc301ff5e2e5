"""The archive is private on disk: files 0600 (blobs 0400), directories 0700, an existing
open home tightened by ``init``, and ``status`` naming whatever is still open to others.

Real files and real modes on SQLite (the database file is what is at stake); a real
``archiver`` process for the umask, the in-process CLI for the rest.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An uninitialised SQLite archive in ``tmp_path/archive`` (browser view off)."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, "sqlite", {"ARCHIVER_BROWSER__ENABLED": "false"})
    return Cli(home, capsys)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _open_to_others(home: Path) -> list[str]:
    """Every path under ``home`` (itself included) with any group or other permission."""
    found = [home] if _mode(home) & 0o077 else []
    for directory, dirs, files in os.walk(home):
        for name in dirs + files:
            path = Path(directory) / name
            if not path.is_symlink() and _mode(path) & 0o077:
                found.append(path)
    return [f"{_mode(p):04o} {p.relative_to(home.parent)}" for p in found]


def _archiver(*argv: str) -> subprocess.CompletedProcess[str]:
    """A real ``archiver`` process started under the permissive umask 022."""
    return subprocess.run([sys.executable, "-m", "archiver.cli", *argv], capture_output=True,
                          text=True, timeout=300, check=False, umask=0o022)


def test_a_real_archiver_process_writes_only_private_files(
        cli: Cli, fixture_site: FixtureSite, tmp_path: Path) -> None:
    """Started under umask 022, ``init``, ``capture`` and ``export`` leave nothing under
    the home that the group or others may read or enter (the database, keys/, the blob
    tree, the work directory), blobs are 0400 and the exported bundle is 0600."""
    for argv in (("init",),
                 ("capture", fixture_site.url("/page.html"), "--case", "Case 11",
                  "--note", "informant: R.")):
        done = _archiver(*argv)
        assert done.returncode == 0, done.stderr
    bundle = tmp_path / "case.zip"
    done = _archiver("export", "--case", "Case 11", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    assert _open_to_others(cli.home) == []
    assert _mode(cli.home) == 0o700
    blobs = [p for p in (cli.home / "blobs" / "sha256").rglob("*") if p.is_file()]
    assert blobs
    assert {_mode(p) for p in blobs} == {0o400}
    assert _mode(cli.home / "archive.db") == 0o600
    assert _mode(cli.home / "keys") == 0o700
    assert _mode(bundle) == 0o600


def test_init_tightens_an_existing_open_home_and_status_names_what_is_open(
        cli: Cli, fixture_site: FixtureSite) -> None:
    """A home that already existed as 0755 is made 0700 by ``init``; when files are
    opened up afterwards (a 0644 database, 0755 keys/ and blob directories, a 0644
    bundle kept in the home), ``status`` warns naming each, and ``init`` closes them."""
    umask = os.umask(0o022)
    os.umask(umask)
    cli.home.mkdir(mode=0o755)
    cli.home.chmod(0o755)
    cli.ok("init")
    assert _mode(cli.home) == 0o700
    assert cli.json_lines("capture", fixture_site.url("/page.html"),
                          "--case", "C")[0]["status"] == "completed"
    cli.ok("export", "--case", "C", "--out", str(cli.home / "c.zip"))
    assert _open_to_others(cli.home) == []
    assert os.umask(umask) == umask  # the CLI gives an in-process caller its umask back

    opened = {cli.home: 0o755, cli.home / "archive.db": 0o644, cli.home / "keys": 0o755,
              cli.home / "keys" / "signing-key.pem": 0o640, cli.home / "c.zip": 0o644,
              cli.home / "blobs": 0o755, cli.home / "blobs" / "sha256": 0o755}
    blob_dirs = sorted(p for p in (cli.home / "blobs" / "sha256").glob("*/*") if p.is_dir())
    opened.update({p: 0o711 for p in blob_dirs})
    a_blob = next(p for p in blob_dirs[0].iterdir())
    a_blob.chmod(0o444)  # an old blob: not examined one by one, its directory is
    for path, mode in opened.items():
        path.chmod(mode)

    report = cli.json_lines("status")[0]["privacy"]
    assert report["complete"] is True
    found = {(e["path"], e["mode"]) for e in report["exposed"]}
    expected = {(str(p), f"{m:04o}") for p, m in opened.items()}
    # SQLite gives the journal files it makes while status runs the database's mode.
    journals = {(str(cli.home / f"archive.db{s}"), "0644") for s in ("-wal", "-shm")}
    assert expected <= found
    assert found - expected <= journals
    assert report["exposed_count"] == len(found)
    text = cli.ok("status")
    assert "path(s) of the archive are open to other users" in text
    assert f"0644  file       {cli.home / 'archive.db'}" in text

    cli.ok("init")
    assert [p for p in opened if _mode(p) & 0o077] == []
    assert _mode(cli.home / "archive.db") == 0o600
    assert _mode(cli.home / "keys") == 0o700
    assert _mode(a_blob) == 0o444
    assert cli.json_lines("status")[0]["privacy"]["exposed_count"] == 0
    assert "files:     private (" in cli.ok("status")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_init_refuses_a_home_owned_by_another_user(cli: Cli) -> None:
    """``init`` on a home that belongs to someone else exits 1 with one line naming the
    owner, and creates nothing in it."""
    cli.home.mkdir(mode=0o755)
    os.chown(cli.home, 54321, 54321)
    code, _out, err = cli("init")
    assert code == 1
    assert err.count("\n") == 1
    assert f"the archive's home {cli.home} belongs to uid 54321, not to this user" in err
    assert list(cli.home.iterdir()) == []
    assert _mode(cli.home) == 0o755


def test_init_refuses_a_home_whose_mode_cannot_be_changed(cli: Cli) -> None:
    """An open home on a read-only mount (a mount namespace of its own, ``unshare -rm``)
    cannot be tightened: ``init`` exits 1 with one line naming the path, its mode and
    why, and writes nothing."""
    cli.home.mkdir(mode=0o755)
    cli.home.chmod(0o755)
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare -rm is not permitted here: {probe.stderr.strip()}")
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
              'exec "$2" -m archiver.cli init')
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(cli.home),
                           sys.executable], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 1, done
    assert done.stderr == (
        f"archiver: error: {cli.home} is readable by other users (mode 0755) and cannot be "
        f"made private: Read-only file system; run 'chmod go-rwx {cli.home}' as its owner\n")
    assert list(cli.home.iterdir()) == []
