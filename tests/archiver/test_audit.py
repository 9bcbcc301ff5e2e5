"""``archiver audit``: stored copies re-hashed against the signed manifests in every store
(a local store and an Object Lock bucket on moto), damaged copies repaired from healthy
ones, every audit and repair on the ledger; sampling, the schedule's coverage and
``archiver status``.

The damage cases (a byte flipped, a copy truncated or deleted, in either store) are in
``tests/hostile/test_fixity.py``; the fixtures both use in ``tests/fixtures/fixity.py``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixity_fixtures import Archived, archived, artifact, fixity_entries, one_capture
from fixture_site import FixtureSite
from pseudo_terminal import pseudo_terminal

from archiver.archive import Archive
from archiver.audit import Auditor, audit_status, run_scheduled
from archiver.cli.progress import TerminalProgress
from archiver.settings import load_settings

__all__ = ["archived", "one_capture"]  # fixtures, used by name

# -- an intact archive ---------------------------------------------------------------------


def test_an_intact_archive_is_audited_in_every_store_and_recorded(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """Every blob of the capture (manifest, signature and every artifact the signed
    manifest lists) is read from both stores; exit 0, and fixity.checked holds the
    counts."""
    cli = archived.cli
    report = cli.json("audit")
    blobs = len(one_capture["artifacts"])
    assert report["ok"] is True
    assert (report["captures"], report["blobs"], report["copies"]) == (1, blobs, 2 * blobs)
    assert report["stores"] == 2
    assert report["store_names"] == [archived.local_name, archived.s3_name]
    assert report["bytes"] == 2 * sum(a["size"] for a in one_capture["artifacts"])
    assert (report["damaged"], report["repaired"], report["findings"]) == (0, 0, [])
    (checked,) = fixity_entries(cli, "fixity.checked")
    assert checked.seq == report["ledger_seq"]
    assert checked.subject == f"audit:{report['audit']}"
    assert checked.payload["copies"] == 2 * blobs
    assert checked.payload["ok"] is True
    assert isinstance(checked.payload["duration_seconds"], float | int)
    assert fixity_entries(cli, "fixity.failed") == []
    text = cli.ok("audit")
    assert ": ok; 1 captures" in text
    assert "\r" not in text  # no progress line when not on a terminal
    assert cli("ledger", "verify")[0] == 0


def test_without_a_whole_signature_the_artifacts_are_not_judged(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """The manifest's signature damaged in both stores: the signed manifest cannot be
    established, so the artifacts are not judged by an unsigned list: a 'manifest'
    finding besides the two damaged copies, exit 1, nothing repaired."""
    cli = archived.cli
    signature = artifact(one_capture, "manifest.sig")
    archived.damage("local", "flip", signature["sha256"])
    archived.damage("s3", "flip", signature["sha256"])
    code, out, _ = cli("audit", "--json")
    assert code == 1
    report = json.loads(out)
    problems = sorted((f["artifact"], str(f["store"]), f["problem"])
                      for f in report["findings"])
    assert problems == [
        ("manifest.sig", "None", "manifest"),
        ("manifest.sig", archived.local_name, "altered"),
        ("manifest.sig", archived.s3_name, "altered"),
    ]
    assert report["repaired"] == 0
    assert fixity_entries(cli, "fixity.repaired") == []
    assert report["copies"] == 4  # manifest and signature in two stores; nothing else


def test_both_copies_damaged_is_reported_and_nothing_is_repaired_from_bad_bytes(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """The WARC damaged in both stores: two fixity.failed entries naming capture,
    artifact and store; no fixity.repaired; exit 1; the damaged bytes stay as they are
    (no store took the other's bad copy)."""
    cli = archived.cli
    warc = artifact(one_capture, "capture.warc.gz")
    archived.damage("local", "flip", warc["sha256"])
    archived.damage("s3", "truncate", warc["sha256"])
    local_before = archived.local_path(warc["sha256"]).read_bytes()
    s3_before = archived.s3_bytes(warc["sha256"])
    code, out, _ = cli("audit")
    assert code == 1
    assert "FAILED: 2 problems remain" in out
    failed = fixity_entries(cli, "fixity.failed")
    assert sorted((e.payload["store"], e.payload["problem"]) for e in failed) == [
        (archived.local_name, "altered"), (archived.s3_name, "altered")]
    for entry in failed:
        assert entry.subject == f"capture:{one_capture['id']}"
        assert entry.payload["capture"] == one_capture["id"]
        assert entry.payload["artifact"] == "capture.warc.gz"
        assert entry.payload["sha256"] == warc["sha256"]
        assert entry.payload["repair"] == "not possible: no store holds a whole copy"
    assert fixity_entries(cli, "fixity.repaired") == []
    assert archived.local_path(warc["sha256"]).read_bytes() == local_before
    assert archived.s3_bytes(warc["sha256"]) == s3_before
    (checked,) = fixity_entries(cli, "fixity.checked")
    assert (checked.payload["damaged"], checked.payload["repaired"],
            checked.payload["remaining"], checked.payload["ok"]) == (2, 0, 2, False)


def test_no_repair_reports_without_touching_the_copy(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """--no-repair: the damaged copy is named, left as it is, and the exit code says
    damage remains."""
    cli = archived.cli
    warc = artifact(one_capture, "capture.warc.gz")
    archived.damage("local", "truncate", warc["sha256"])
    before = archived.local_path(warc["sha256"]).read_bytes()
    code, out, _ = cli("audit", "--no-repair", "--json")
    assert code == 1
    (finding,) = json.loads(out)["findings"]
    assert finding["repair"] == "not attempted (repairs are off)"
    assert archived.local_path(warc["sha256"]).read_bytes() == before
    assert fixity_entries(cli, "fixity.repaired") == []


def test_audit_of_named_captures_and_usage_errors(
    archived: Archived, one_capture: dict[str, Any], fixture_site: FixtureSite,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--capture audits only the captures named (unique prefixes allowed); an unknown id
    exits 4, a failed capture and a bad --sample are one-line errors."""
    cli = archived.cli
    cli.capture(fixture_site.url("/gzip.txt"))
    report = cli.json("audit", "--capture", one_capture["id"][:8])
    assert report["captures"] == 1
    code, _, err = cli("audit", "--capture", "no-such-capture")
    assert code == 4
    assert err == "archiver: error: no capture with id 'no-such-capture'\n"
    failed = cli.json_lines("capture", fixture_site.url("/gone-404"))
    if failed[0]["status"] != "completed":
        code, _, err = cli("audit", "--capture", failed[0]["id"])
        assert code == 1
        assert "has no stored artifacts to audit" in err
    for bad in ("0", "1.5", "half"):
        with pytest.raises(SystemExit) as exited:
            cli("audit", "--sample", bad)
        assert exited.value.code == 2
        assert "argument --sample: not a fraction above 0 and at most 1" in \
            capsys.readouterr().err


def test_a_stopped_audit_is_recorded_as_interrupted(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """The daemon's stop event set: the audit ends before the next copy, and what it did
    is still recorded (fixity.checked, interrupted)."""
    import threading

    stop = threading.Event()
    stop.set()
    with archived.cli.archive() as archive:
        report = Auditor(archive, actor="test", stop=stop).run()
    assert (report.interrupted, report.captures, report.copies) == (True, 0, 0)
    (checked,) = fixity_entries(archived.cli, "fixity.checked")
    assert checked.payload["interrupted"] is True


# -- sampling and the schedule ----------------------------------------------------------------


class Clock:
    """A settable clock for the archive (tests move time on by hand)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)  # strictly increasing, like real time
        return self.now


def _audited(archive: Archive) -> dict[str, str]:
    from archiver.audit import fixity_captures

    with archive.engine.connect() as conn:
        return {r.capture_id: r.audited_at for r in conn.execute(fixity_captures.select())}


@pytest.fixture
def four_captures(archived: Archived, fixture_site: FixtureSite) -> list[str]:
    ids = []
    for path in ("/page.html", "/gzip.txt", "/chunked.txt", "/css-page.html"):
        capture = archived.cli.capture(fixture_site.url(path))
        assert capture["status"] == "completed", capture
        ids.append(capture["id"])
    return ids


def test_a_sample_takes_the_captures_audited_longest_ago_first(
    archived: Archived, four_captures: list[str]
) -> None:
    """Four audits of a quarter each cover all four captures, each once, never-audited
    and oldest-audited first; a fifth takes the one audited longest ago again."""
    clock = Clock()
    with Archive.open(load_settings(), clock=clock) as archive:
        order = []
        for _ in range(4):
            clock.now += timedelta(days=1)
            before = _audited(archive)
            report = Auditor(archive, actor="test").run(sample=0.25)
            assert report.captures == 1
            after = _audited(archive)
            (new,) = [c for c in after if after[c] != before.get(c)]
            order.append(new)
        assert sorted(order) == sorted(four_captures)
        assert order == four_captures  # never audited: in the order they were captured
        clock.now += timedelta(days=1)
        Auditor(archive, actor="test").run(sample=0.25)
        assert max(_audited(archive).items(), key=lambda kv: kv[1])[0] == order[0]


def test_the_schedule_covers_every_capture_within_audit_every(
    archived: Archived, four_captures: list[str], monkeypatch: pytest.MonkeyPatch,
    fixture_site: FixtureSite
) -> None:
    """audit.every 4 days, audit.sample 0.25: an audit a day, and no capture (not even
    those captured between audits) ever goes unaudited for longer than 4 days."""
    monkeypatch.setenv("ARCHIVER_AUDIT__EVERY", "4d")
    monkeypatch.setenv("ARCHIVER_AUDIT__SAMPLE", "0.25")
    clock = Clock()
    settings = load_settings()
    with Archive.open(settings, clock=clock) as archive:
        for day in range(12):
            clock.now = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=day)
            if day == 5:  # a capture made mid-period is covered within the period too
                four_captures.append(archive.capture(fixture_site.url("/redirect/301")).id)
            run_scheduled(archive, actor="test")
            audited = _audited(archive)
            now = clock.now
            for capture_id in four_captures:
                if capture_id not in audited:
                    continue
                age = now - datetime.fromisoformat(audited[capture_id])
                assert age <= timedelta(days=4), (day, capture_id, age)
            if day >= 3:
                assert set(four_captures) <= set(audited), day
        status = audit_status(archive.engine, settings.audit, clock.now)
        assert status["overdue"] == 0
        late = audit_status(archive.engine, settings.audit, clock.now + timedelta(days=5))
        assert late["overdue"] == len(four_captures)


def test_status_shows_the_last_audit_and_warns_when_overdue(
    archived: Archived, one_capture: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before any audit: 'never run'; after one: when and the result; with a capture
    older than audit.every and not audited since: a warning naming the setting."""
    cli = archived.cli
    assert "audit:     never run" in cli.ok("status")
    report = cli.json("audit")
    data = cli.json("status")["audit"]
    assert data["last"]["id"] == report["audit"]
    assert data["last"]["ok"] is True
    assert data["last"]["counts"]["captures"] == 1
    text = cli.ok("status")
    assert f"audit:     last {data['last']['finished']} (manual): ok; 1 captures" in text
    assert "overdue" not in text
    monkeypatch.setenv("ARCHIVER_AUDIT__EVERY", "1s")
    with cli.archive() as archive:
        late = audit_status(archive.engine, archive.settings.audit,
                            archive.clock() + timedelta(seconds=5))
    assert late["overdue"] == 1
    from archiver.audit import status_lines

    assert any("WARNING: audit overdue: 1 captures not audited within audit.every (1s)"
               in line for line in status_lines(late))


# -- progress ------------------------------------------------------------------------------


def test_progress_line_says_what_how_far_and_how_long_left() -> None:
    """On a terminal: what, how many captures, how many bytes of the estimate, and the
    time left; redrawn in place, erased at the end."""
    now = [100.0]
    stream = io.StringIO()
    progress = TerminalProgress(stream, "auditing", clock=lambda: now[0], interval=0)
    progress.start(4, 4 * 1024 * 1024)
    now[0] += 10
    progress.advance(1024 * 1024)
    progress.capture_done()
    assert progress.line() == ("auditing: 1/4 captures, 1.0 MiB of 4.0 MiB (25%), "
                               "about 30s left")
    progress.advance(10 * 1024 * 1024)  # past the estimate: capped, never above 100%
    assert "4.0 MiB of 4.0 MiB (100%)" in progress.line()
    progress.close()
    assert stream.getvalue().startswith("\rauditing: 0/4 captures")
    assert stream.getvalue().endswith("\r\x1b[K")


def test_progress_is_shown_only_on_a_terminal_without_json() -> None:
    from archiver.cli.progress import wanted

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wanted(Tty(), json_output=False)
    assert not wanted(Tty(), json_output=True)
    assert not wanted(io.StringIO(), json_output=False)


def test_a_terminal_sees_the_progress_line_a_pipe_and_json_do_not(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """``archiver audit`` with stderr on a pseudo-terminal draws its progress line there
    (carriage return, erase) and erases it; stdout, a pipe, gets only the result; with
    --json the terminal gets nothing."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def run(*argv: str) -> tuple[bytes, bytes]:
        with pseudo_terminal() as (slave, seen):
            done = subprocess.run([sys.executable, "-m", "archiver.cli", "audit", *argv],
                                  stdout=subprocess.PIPE, stderr=slave, cwd=root,
                                  timeout=120, check=False)
        assert done.returncode == 0
        return done.stdout, bytes(seen)

    out, terminal = run()
    assert b"\rauditing: 0/1 captures" in terminal
    assert terminal.endswith(b"\r\x1b[K")
    assert b": ok; 1 captures" in out
    assert b"\r" not in out
    out, terminal = run("--json")
    assert terminal == b""
    assert json.loads(out)["ok"] is True



class _Terminal(io.StringIO):
    """A stderr that is a terminal; ``fails`` (an exception) is what writing to it raises
    (a reader gone: BrokenPipeError; a terminal hung up: EIO)."""

    def __init__(self, fails: OSError | None = None) -> None:
        super().__init__()
        self.fails = fails

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.fails is not None:
            raise self.fails
        return super().write(text)


@pytest.mark.parametrize("fails", [None, BrokenPipeError(32, "Broken pipe"),
                                   OSError(5, "Input/output error")],
                         ids=["open", "closed-pipe", "hung-up"])
def test_audit_progress_goes_through_the_clis_stderr_and_a_closed_one_cannot_stop_it(
    archived: Archived, one_capture: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], fails: OSError | None,
) -> None:
    """The progress line is written to the CLI's stderr (not around it to the process's
    original one), unescaped; when that stderr is gone (closed pipe, terminal hung up)
    the audit still runs to its end, records it and prints its result."""
    from archiver.cli.main import main

    terminal = _Terminal(fails)
    monkeypatch.setattr("sys.stderr", terminal)
    capsys.readouterr()
    assert main(["audit"]) == 0
    assert ": ok; 1 captures" in capsys.readouterr().out
    if fails is None:
        assert "\rauditing: 0/1 captures" in terminal.getvalue()
        assert terminal.getvalue().endswith("\r\x1b[K")
    (checked,) = fixity_entries(archived.cli, "fixity.checked")
    assert checked.payload["ok"] is True


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` bound but never listened on: connections are refused."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_store_that_cannot_be_read_is_reported_not_repaired(
    archived: Archived, one_capture: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
    refusing_endpoint: str,
) -> None:
    """The bucket's endpoint refuses connections: every S3 copy is 'unreadable' (named,
    with the store), nothing is written anywhere, and the exit code says problems
    remain; the local copies are judged whole all the same."""
    stores = [{"kind": "local"},
              {"kind": "s3", "bucket": archived.bucket, "prefix": "archive/",
               "region": "us-east-1", "endpoint_url": refusing_endpoint}]
    monkeypatch.setenv("ARCHIVER_STORAGE__STORES", json.dumps(stores))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, out, _ = archived.cli("audit", "--json")
    assert code == 1
    report = json.loads(out)
    blobs = len(one_capture["artifacts"])
    assert (report["unreadable"], report["damaged"], report["repaired"]) == (blobs, 0, 0)
    assert {f["problem"] for f in report["findings"]} == {"unreadable"}
    assert {f["store"] for f in report["findings"]} == {f"s3://{archived.bucket}/archive/"}
    assert all("cannot reach the S3 endpoint" in f["detail"] for f in report["findings"])
    assert {f["repair"] for f in report["findings"]} == {
        "not attempted: the store could not be read"}
    assert fixity_entries(archived.cli, "fixity.repaired") == []


def test_a_store_that_refuses_the_repair_is_named_with_object_lock_in_mind(
    archived: Archived, one_capture: dict[str, Any]
) -> None:
    """A store under Object Lock that refuses to take the good bytes (as a bucket whose
    policy forbids overwriting would): the damaged copy stays, the finding says the store
    refused and why that may be, and the audit fails."""
    from archiver.db import make_engine
    from storage import LocalBlobStore, MemoryBlobStore, ReplicatedBlobStore
    from storage.errors import StoreUnavailable

    class LockedStore(MemoryBlobStore):
        object_lock_days = 3650

        def put_stream(self, stream: Any, *, sha256: str, size: int,
                       sha512: str | None = None) -> None:
            raise StoreUnavailable(f"{self.name}: access denied while uploading blob "
                                   f"{sha256} (AccessDenied)")

    settings = archived.cli.settings()
    local = LocalBlobStore(archived.cli.home / "blobs")
    locked = LockedStore("s3://locked/")
    for item in one_capture["artifacts"]:
        with local.open(item["sha256"]) as stream:
            locked.blobs[item["sha256"]] = stream.read()
    warc = artifact(one_capture, "capture.warc.gz")
    locked.blobs[warc["sha256"]] = b"not the evidence"
    archive = Archive(settings, engine=make_engine(settings.database_url),
                      store=ReplicatedBlobStore([local, locked]))
    with archive:
        report = Auditor(archive, actor="test").run()
    assert not report.ok
    (finding,) = report.findings
    assert (finding.store, finding.problem, finding.repaired) == ("s3://locked/", "altered",
                                                                  False)
    assert finding.repair.startswith(
        "failed: s3://locked/ refused the repaired copy (Object Lock retention or the bucket "
        "policy may forbid writing it): from local:")
    assert "AccessDenied" in finding.repair
    assert locked.blobs[warc["sha256"]] == b"not the evidence"
    (failed,) = fixity_entries(archived.cli, "fixity.failed")
    assert failed.payload["repair"] == finding.repair


def test_a_blob_shared_by_two_captures_is_read_once_and_counts_against_both(
    archived: Archived, fixture_site: FixtureSite
) -> None:
    """The same video captured twice is one blob: an audit reads it once per store,
    records its damage once, and marks both captures as not whole (status counts 2)."""
    cli = archived.cli
    first = cli.capture(fixture_site.url("/clip.mp4"))
    second = cli.capture(fixture_site.url("/clip.mp4"))
    shared = {a["sha256"] for a in first["artifacts"]} & {
        a["sha256"] for a in second["artifacts"]}
    (video,) = [a for a in first["artifacts"] if a["sha256"] in shared
                and a["role"] == "media"]
    archived.damage("local", "flip", video["sha256"])
    archived.damage("s3", "delete", video["sha256"])
    code, out, _ = cli("audit", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["captures"] == 2
    assert report["blobs"] == len({a["sha256"] for a in first["artifacts"]}
                                  | {a["sha256"] for a in second["artifacts"]})
    assert sorted(f["problem"] for f in report["findings"]) == ["altered", "missing"]
    assert cli.json("status")["audit"]["damaged_captures"] == 2
    assert "WARNING: 2 captures were not whole at their last audit" in cli.ok("status")
