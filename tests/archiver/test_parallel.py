"""Several captures at once: ``archiver capture URL…`` runs them in parallel within the
per-host limits, prints them in the order given, and each is recorded on its own."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite

from archiver.capture.parallel import HostLimiter, auto_concurrency, run_in_order


def _intervals(limiter: HostLimiter, urls: list[str], hold: float) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def work(url: str) -> None:
        with limiter.slot(url):
            began = time.monotonic()
            time.sleep(hold)
            with lock:
                spans.append((began, time.monotonic()))

    threads = [threading.Thread(target=work, args=(u,)) for u in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(spans)


def test_host_limiter_lets_one_capture_per_host_at_a_time_and_others_through() -> None:
    """per_host = 1: captures of one host never overlap; another host's run alongside."""
    limiter = HostLimiter(per_host=1, rate=0)
    same = _intervals(limiter, ["http://a.example/1", "http://A.example/2"], 0.2)
    assert same[1][0] >= same[0][1]
    both = _intervals(limiter, ["http://a.example/1", "http://b.example/1"], 0.3)
    assert both[1][0] < both[0][1]


def test_host_limiter_spaces_the_starts_on_one_host() -> None:
    """rate = 4 per second: three starts on one host are at least 0.25 s apart."""
    limiter = HostLimiter(per_host=3, rate=4)
    spans = _intervals(limiter, ["http://a.example/x"] * 3, 0.01)
    starts = [began for began, _ in spans]
    assert starts[1] - starts[0] >= 0.24
    assert starts[2] - starts[1] >= 0.24


def test_results_come_in_the_order_given_whatever_order_they_finish_in() -> None:
    limiter = HostLimiter(per_host=8, rate=0)
    delays = {"http://h/1": 0.3, "http://h/2": 0.0, "http://h/3": 0.1}

    def work(url: str) -> str:
        time.sleep(delays[url])
        return url

    assert list(run_in_order(list(delays), work, concurrency=3, limiter=limiter)) == list(delays)


def test_auto_concurrency_follows_cores_and_memory() -> None:
    assert auto_concurrency(cpus=2, available=24 * 1024**3) == 4
    assert auto_concurrency(cpus=64, available=64 * 1024**3) == 8
    assert auto_concurrency(cpus=8, available=1024**3) == 2
    assert auto_concurrency(cpus=1, available=100 * 1024**2) == 1


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    archive_environment(monkeypatch, tmp_path / "archive", database_url, {
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_MEDIA__ENABLED": "false",
        "ARCHIVER_DAEMON__PER_HOST_CONCURRENCY": "4",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
    })
    runner = Cli(tmp_path / "archive", capsys)
    runner.ok("init")
    return runner


def _time(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def test_capture_of_several_urls_runs_them_at_once_and_prints_them_in_order(
    cli: Cli, fixture_site: FixtureSite
) -> None:
    """Three pages that each take a second: with --concurrency 3 they are all in flight
    together (each started before any ended); the JSON lines follow the order given;
    each is its own completed, verified capture on the ledger."""
    urls = [fixture_site.url(f"/delayed/{n}") for n in (3, 1, 2)]
    lines = cli.json_lines("capture", *urls, "--concurrency", "3")
    assert [line["url"] for line in lines] == urls
    assert [line["status"] for line in lines] == ["completed"] * 3
    assert len({line["id"] for line in lines}) == 3
    assert max(_time(line["started"]) for line in lines) < min(
        _time(line["ended"]) for line in lines)
    for line in lines:
        assert "verified" in cli.ok("verify", str(line["id"]))
    assert "ledger verified" in cli.ok("ledger", "verify")


def test_per_host_concurrency_holds_for_the_cli_too(
    cli: Cli, fixture_site: FixtureSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """daemon.per_host_concurrency = 1: the same three pages, one host, run one after
    the other however many captures may run at once."""
    monkeypatch.setenv("ARCHIVER_DAEMON__PER_HOST_CONCURRENCY", "1")
    urls = [fixture_site.url(f"/delayed/{n}") for n in (1, 2, 3)]
    lines = cli.json_lines("capture", *urls, "--concurrency", "3")
    spans = sorted((_time(line["started"]), _time(line["ended"])) for line in lines)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_bad_concurrency_is_a_usage_error(
    cli: Cli, fixture_site: FixtureSite, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli("capture", fixture_site.url("/page.html"), "--concurrency", "0")
    assert stopped.value.code == 2
    assert "not a number of captures at once: '0'" in capsys.readouterr().err
