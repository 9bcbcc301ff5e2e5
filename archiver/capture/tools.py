"""External programs (ffmpeg, ffprobe) run under memory and time limits.

Threat model: these programs parse files a hostile server chose (a video that declares
a huge frame, a container that makes the demuxer allocate without end, a file that
takes forever to decode). Each one therefore runs with a ceiling on its address space
(``RLIMIT_AS``), on its CPU time (``RLIMIT_CPU``) and on its wall time, so the worst it
can do is fail, and the capture says why.

How: the limits are set by the child on itself, before it starts the program: a
``/bin/sh`` runs ``ulimit -v`` and ``ulimit -t``, then ``timeout … PROGRAM``, and when
the time ran out says so on stderr (the last line, which is what yt-dlp reports of a
failed ffmpeg). Not ``preexec_fn``, which is unsafe in a process whose other threads
run captures, and not ``resource.prlimit`` on a started child, which leaves it a moment
without limits. The limits are inherited by anything the program starts.

yt-dlp starts ffmpeg itself (merging formats, fixing up containers): its
``ffmpeg_location`` is pointed at :func:`program_directory`, a private directory of small
scripts named ``ffmpeg`` and ``ffprobe`` that do the same before running the real ones.

A child dies with the process that started it: a SIGKILLed ``archiver capture`` or
daemon worker must not leave an ffmpeg decoding a hostile file until its own limit.
Every link of the chain (the shell, ``timeout``, the program) is started by
``setpriv --pdeathsig KILL`` (util-linux), so when its parent dies the kernel kills it,
and its own children in turn. The death signal follows the parent *thread*: each tool
is started by the thread that waits for it (``subprocess.run`` here, yt-dlp's ``Popen``
in the capture thread), so no capture thread ends while its tool runs. Without
``setpriv`` no tool runs: the result says so in one line (exit 127).
"""

from __future__ import annotations

import atexit
import functools
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
PROGRAMS = ("ffmpeg", "ffprobe")
KILL_AFTER_SECONDS = 5
"""After the wall-time limit, SIGTERM; this much later, SIGKILL."""
TIMED_OUT = frozenset({124, 137})
"""Exit codes of ``timeout``: the limit passed (124), or the program had to be killed."""
CPU_EXCEEDED = frozenset({128 + 24, -24})
"""SIGXCPU: the CPU-time limit passed."""
NOT_RUN = 127
"""Exit code of a tool that was not started (``setpriv`` missing)."""
NO_SETPRIV = ("not run: setpriv (util-linux) is missing, and without it a tool could "
              "outlive a killed archiver; install util-linux")


def _orphan_guard() -> list[str] | None:
    """The command prefix that has the kernel SIGKILL the child when its parent dies;
    None when ``setpriv`` is not installed."""
    found = _setpriv()
    return None if found is None else [found, "--pdeathsig", "KILL"]


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolLimits:
    """Limits of one external program (``media.tool_memory_mib``,
    ``media.tool_timeout_seconds``): address space, and wall time (CPU time too)."""

    memory_mib: int = 2048
    seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.memory_mib < 16 or not self.seconds > 0:
            raise ValueError("tool limits: memory_mib >= 16 and seconds > 0")

    @property
    def _cpu_seconds(self) -> int:
        return max(1, int(self.seconds + 0.999))

    def script(self, program: str) -> str:
        """A shell script running ``program`` with the script's arguments under these
        limits; it exits with the program's status. ``timeout`` and the program die with
        their parent (``setpriv --pdeathsig``); the shell itself must be started so too
        (:func:`limited`)."""
        name = Path(program).name
        timed_out = self.explain(124) or ""
        cpu = self.explain(128 + 24) or ""
        guard = shlex.join(_orphan_guard() or [])
        return "\n".join((
            f"ulimit -v {self.memory_mib * 1024} && ulimit -t {self._cpu_seconds} || exit 125",
            f"{guard} timeout --foreground -k {KILL_AFTER_SECONDS} {self.seconds:g} "
            f"{guard} {shlex.quote(program)} \"$@\"",
            "status=$?",
            "case $status in",
            f"  124|137) echo {shlex.quote(f'{name} {timed_out}')} >&2 ;;",
            f"  152) echo {shlex.quote(f'{name} {cpu}')} >&2 ;;",
            "esac",
            "exit $status",
        ))

    def explain(self, returncode: int, stderr: bytes | str = b"") -> str | None:
        """Which limit stopped a program that exited with ``returncode``, or None."""
        if returncode in TIMED_OUT:
            return (f"stopped at its time limit of {self.seconds:g} s "
                    "(media.tool_timeout_seconds)")
        if returncode in CPU_EXCEEDED:
            return (f"stopped at its CPU time limit of {self._cpu_seconds} s "
                    "(media.tool_timeout_seconds)")
        text = stderr if isinstance(stderr, str) else stderr.decode("utf-8", "replace")
        if returncode == NOT_RUN and NO_SETPRIV in text:
            return NO_SETPRIV
        if returncode != 0 and ("Cannot allocate memory" in text or "MemoryError" in text):
            return f"ran out of its {self.memory_mib} MiB (media.tool_memory_mib)"
        return None


def limited(argv: Sequence[str], limits: ToolLimits) -> list[str] | None:
    """``argv`` as a command that runs under ``limits`` and dies with its parent; None
    when it cannot (``setpriv`` missing)."""
    guard = _orphan_guard()
    if guard is None:
        return None
    return [*guard, "/bin/sh", "-c", limits.script(argv[0]), "sh", *argv[1:]]


def run(argv: Sequence[str], limits: ToolLimits, *, text: bool = False,
        ) -> subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]:
    """Run ``argv`` under ``limits``, output captured; never raises for the program's
    failure (its exit status says it: see :meth:`ToolLimits.explain`)."""
    command = limited(argv, limits)
    if command is None:
        message = f"{Path(argv[0]).name} {NO_SETPRIV}"
        if text:
            return subprocess.CompletedProcess(list(argv), NOT_RUN, "", message)
        return subprocess.CompletedProcess(list(argv), NOT_RUN, b"", message.encode())
    try:
        return subprocess.run(
            command, capture_output=True, text=text, check=False,
            timeout=limits.seconds + 2 * KILL_AFTER_SECONDS, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        # Our own backstop, should ``timeout`` itself hang: the shell is killed by
        # subprocess.run, and the result reads as a time limit reached.
        if text:
            return subprocess.CompletedProcess(command, 124, "", "")
        return subprocess.CompletedProcess(command, 124, b"", b"")


def program(name: str) -> str | None:
    """The installed ``name`` (ffmpeg, ffprobe), to :func:`run`; None when absent."""
    return _installed().get(name)


@functools.cache
def _installed() -> dict[str, str]:
    return {name: found for name in PROGRAMS if (found := shutil.which(name)) is not None}


@functools.lru_cache(maxsize=16)
def program_directory(limits: ToolLimits) -> Path | None:
    """A private directory (0700, removed at exit) of ``ffmpeg`` and ``ffprobe`` scripts
    that run the installed programs under ``limits``; None when ffmpeg is not installed
    (yt-dlp then merges nothing, and no video is hashed)."""
    installed = _installed()
    if "ffmpeg" not in installed:
        return None
    directory = Path(tempfile.mkdtemp(prefix="archiver-tools-"))
    atexit.register(shutil.rmtree, directory, True)
    for name, real in installed.items():
        script = directory / name
        # yt-dlp's Popen starts this script: it puts itself under the death signal first
        # (exec keeps its pid, so its parent is still the archiver's capture thread).
        command = limited([real], limits)
        body = (f"echo {shlex.quote(f'{name} {NO_SETPRIV}')} >&2\nexit {NOT_RUN}"
                if command is None else f'exec {shlex.join(command)} "$@"')
        script.write_text(
            "#!/bin/sh\n"
            f"# {name} under the archive's limits, dying with the archiver "
            f"(archiver.capture.tools)\n{body}\n"
        )
        script.chmod(0o700)
    return directory
