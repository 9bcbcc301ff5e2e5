"""ffmpeg and ffprobe, ours and yt-dlp's, run under the tool limits (media.tool_memory_mib,
media.tool_timeout_seconds): checked on real children, in /proc and by letting one pass
its limit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from yt_dlp import YoutubeDL
from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor, FFmpegPostProcessorError
from yt_dlp.utils import Popen

from archiver.capture import tools
from archiver.capture.media import MediaOptions
from archiver.capture.media import fetcher as media_fetcher
from archiver.capture.media.outcomes import classify
from archiver.capture.page import capture_page
from archiver.recorder import RecorderOptions, open_session

MiB = 1024 * 1024
FFMPEG = os.path.realpath("/usr/bin/ffmpeg")


def _ytdlp_params(site: Any, tmp_path: Path, options: MediaOptions) -> dict[str, Any]:
    """The parameters the media fetcher gives yt-dlp, for a real session and page."""
    with open_session(tmp_path / "c.warc.gz", options=RecorderOptions(
            allow_private_networks=True), warcinfo={"software": "test"}) as session:
        page = capture_page(session, site.url("/text.html"))
        run = media_fetcher._Run(options, session, page, tmp_path)
        params: dict[str, Any] = run._params(tmp_path / "yt", media_fetcher._Log())
    return params


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            continue
        found += children
        stack += children
    return found


def _limits_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/limits") as handle:
        lines = handle.read().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def test_yt_dlps_ffmpeg_is_a_wrapper_and_its_real_child_carries_the_limits(
        site: Any, tmp_path: Path) -> None:
    """yt-dlp resolves ffmpeg and ffprobe to the wrappers, and the ffmpeg process they
    start has RLIMIT_AS and RLIMIT_CPU set as configured."""
    options = MediaOptions(tool_memory_mib=700, tool_timeout_seconds=30)
    params = _ytdlp_params(site, tmp_path, options)
    with YoutubeDL(params) as ydl:
        processor = FFmpegPostProcessor(ydl)
        wrappers = tools.program_directory(options.tool_limits)
        assert wrappers is not None
        assert Path(processor.executable) == wrappers / "ffmpeg"
        assert Path(processor.probe_executable) == wrappers / "ffprobe"
        assert processor.available  # yt-dlp reads the version through the wrapper
        child = Popen([processor.executable, "-nostdin", "-v", "error", "-re", "-f", "lavfi",
                       "-i", "testsrc", "-f", "null", "-"])
    try:
        deadline = time.monotonic() + 30
        real: list[int] = []
        while not real and time.monotonic() < deadline:  # poll until ffmpeg has started
            real = [p for p in _descendants(child.pid)
                    if os.path.realpath(f"/proc/{p}/exe") == FFMPEG]
            time.sleep(0.05)
        assert real, "the wrapper never started ffmpeg"
        limits = _limits_of(real[0])
        assert limits["Max address space"] == str(700 * MiB)
        assert limits["Max cpu time"] == "30"
    finally:
        for pid in [*_descendants(child.pid), child.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait(timeout=30)


def test_yt_dlps_ffmpeg_past_its_time_limit_is_stopped_and_says_which_limit(
        site: Any, tmp_path: Path) -> None:
    """An ffmpeg that would run for ever (reading /dev/zero as video) is stopped; yt-dlp's
    error names media.tool_timeout_seconds, which the media outcome reads as timeout."""
    params = _ytdlp_params(site, tmp_path, MediaOptions(tool_timeout_seconds=1))
    with YoutubeDL(params) as ydl:
        processor = FFmpegPostProcessor(ydl)
        with pytest.raises(FFmpegPostProcessorError) as stopped:
            processor.real_run_ffmpeg(
                [("/dev/zero", ["-f", "rawvideo", "-s", "640x480", "-pix_fmt", "rgb24"])],
                [(str(tmp_path / "out.mkv"), ["-c:v", "ffv1"])])
    message = str(stopped.value)
    assert "media.tool_timeout_seconds" in message
    assert classify(f"Postprocessing: {message}") == "timeout"


def test_our_own_ffmpeg_past_its_time_limit_is_named(tmp_path: Path) -> None:
    """tools.run: the exit status and ``explain`` say which limit stopped the child."""
    limits = tools.ToolLimits(seconds=1)
    ffmpeg = tools.program("ffmpeg")
    assert ffmpeg is not None
    done = tools.run([ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc",
                      "-f", "null", "-"], limits)
    assert done.returncode in tools.TIMED_OUT | tools.CPU_EXCEEDED
    assert "media.tool_timeout_seconds" in (limits.explain(done.returncode) or "")


def test_without_setpriv_no_tool_runs_and_the_result_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine without setpriv (util-linux): no tool is started (it could outlive a
    killed archiver); tools.run and yt-dlp's wrappers answer exit 127 with one line
    naming setpriv, never a traceback."""
    ffmpeg = tools.program("ffmpeg")
    assert ffmpeg is not None
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "ffmpeg").symlink_to(ffmpeg)
    monkeypatch.setenv("PATH", str(bare))
    tools._setpriv.cache_clear()
    try:
        limits = tools.ToolLimits(seconds=7)
        done = tools.run([ffmpeg, "-version"], limits, text=True)
        assert done.returncode == tools.NOT_RUN
        assert done.stderr == f"ffmpeg {tools.NO_SETPRIV}"
        assert limits.explain(done.returncode, done.stderr) == tools.NO_SETPRIV
        wrappers = tools.program_directory(limits)
        assert wrappers is not None
        wrapped = subprocess.run([wrappers / "ffmpeg", "-version"], capture_output=True,
                                 text=True, check=False, env={"PATH": "/bin:/usr/bin"})
        assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (
            tools.NOT_RUN, "", f"ffmpeg {tools.NO_SETPRIV}\n")
    finally:
        monkeypatch.undo()
        tools._setpriv.cache_clear()
        tools.program_directory.cache_clear()
