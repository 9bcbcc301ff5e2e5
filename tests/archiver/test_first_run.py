"""A newcomer's first steps: ``scripts/run`` on a fresh account, and building the package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _fresh_account(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who never ran the archiver: an empty HOME, no
    ``ARCHIVER_*`` or ``XDG_CONFIG_HOME`` settings, the archive in a temporary directory."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("ARCHIVER_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path / "home")
    env["ARCHIVER_HOME"] = str(tmp_path / "archive")
    (tmp_path / "home").mkdir()
    return env


def test_the_first_run_ends_with_the_framed_passphrase_notice(tmp_path: Path) -> None:
    """The first ``scripts/run`` creates the passphrase file (0600) and its set-up output
    ends with a framed notice naming that file; a second run says nothing about it."""
    env = _fresh_account(tmp_path)
    secret = tmp_path / "home" / ".config" / "evidence-archiver" / "passphrase"
    first = subprocess.run([str(ROOT / "scripts" / "run"), "--version"], env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("archiver ")
    assert secret.stat().st_mode & 0o777 == 0o600
    lines = first.stderr.rstrip("\n").splitlines()
    frame = [i for i, line in enumerate(lines) if set(line) == {"="}]
    assert len(frame) == 2, first.stderr
    assert frame[1] == len(lines) - 1  # nothing after the notice
    notice = "\n".join(lines[frame[0]:])
    assert str(secret) in notice
    assert "Back it up" in notice

    again = subprocess.run([str(ROOT / "scripts" / "run"), "--version"], env=env,
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert str(secret) not in again.stderr
    assert "====" not in again.stderr


@pytest.mark.slow
def test_the_package_builds_without_a_license_deprecation_warning(tmp_path: Path) -> None:
    """``project.license`` is an SPDX expression: setuptools builds the wheel without a
    deprecation warning and writes ``License-Expression`` into its metadata."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("archiver", "storage", "chain_of_custody"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    output = built.stdout + built.stderr
    assert "Deprecat" not in output, output
    (wheel,) = (tmp_path / "dist").glob("evidence_archiver-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    assert "License-Expression: AGPL-3.0-or-later" in text


def _docker_runs(text: str) -> list[str]:
    """Every ``docker run`` command in ``text`` (README or Dockerfile), one string each:
    shell and comment continuations joined, Markdown code spans and line breaks ignored."""
    flat = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    flat = re.sub(r"`?\s*\n\s*`?", " ", flat.replace("`", "\n"))
    return re.findall(r"docker run .*?evidence-archiver \w+", flat)


@pytest.mark.parametrize("document", ["README.md", "Dockerfile"])
def test_docker_examples_mount_the_passphrase_file_they_name(document: str) -> None:
    """A ``docker run`` example that points ARCHIVER_SIGNING__PASSPHRASE_FILE at a path
    also mounts a file at that path (otherwise ``init`` fails in the container)."""
    runs = _docker_runs((ROOT / document).read_text())
    named = [(run, m.group(1)) for run in runs
             for m in re.finditer(r"ARCHIVER_SIGNING__PASSPHRASE_FILE=(\S+)", run)]
    assert named, f"{document} shows no docker run with a passphrase file"
    for run, path in named:
        assert re.search(rf"-v \S+:{re.escape(path)}(:ro)?(\s|$)", run), run
