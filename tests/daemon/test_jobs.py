"""The job queue on SQLite and PostgreSQL: order, de-duplication, per-host limits,
retries with backoff, recovery of interrupted attempts, and claims from many workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver import models, schema
from archiver.db import make_engine
from archiver.watch.jobs import (
    DONE,
    FAILED,
    PRIORITY_INVESTIGATOR,
    PRIORITY_REVISIT,
    PRIORITY_WATCH,
    QUEUED,
    RUNNING,
    JobLimits,
    JobQueue,
    JobRequest,
    Verdict,
    backoff_delay,
    judge_capture,
)
from chain_of_custody.keys import SigningKey
from chain_of_custody.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    made = make_engine(database_url)
    schema.upgrade(made)
    yield made
    made.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


SIGNER = SigningKey.generate()


def _ledger(engine: sa.Engine, clock: FakeClock) -> Ledger:
    """The ledger the queue records on, signing as an archive's key would."""
    return Ledger(engine, clock=clock, origin="jobs.test", signer=SIGNER)


def make_queue(engine: sa.Engine, clock: FakeClock, **limits: float) -> JobQueue:
    settings = {"per_host_rate": 0.0, "per_host_concurrency": 10, "retry_base_seconds": 30.0,
                "retry_max_seconds": 3600.0, "max_attempts": 3, "lease_seconds": 60.0}
    settings.update(limits)
    return JobQueue(engine, ledger=_ledger(engine, clock), clock=clock,
                    limits=JobLimits(**settings))  # type: ignore[arg-type]


def req(url: str, *, priority: int = PRIORITY_INVESTIGATOR, via: str = "queue",
        again: bool = False, kind: str = "capture") -> JobRequest:
    return JobRequest(url=url, requested_by="analyst", via=via, priority=priority,
                      again=again, kind=kind)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    """Delay after the n-th failure: base x 2^(n-1), never more than the cap."""
    assert [backoff_delay(n, base=30, cap=3600) for n in range(0, 10)] == [
        0, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_delay(10_000, base=1, cap=5) == 5


def test_which_outcomes_are_retried() -> None:
    """Network, timeout and storage failures and 429/5xx answers are retried; a refusal,
    an oversized body, a 404 are final."""
    assert judge_capture("completed", None, 200).retry is False
    assert judge_capture("completed", None, 404).retry is False
    assert judge_capture("completed", None, 503).retry is True
    assert judge_capture("completed", None, 429).retry is True
    assert judge_capture("failed", "network", None).retry is True
    assert judge_capture("failed", "timeout", None).retry is True
    assert judge_capture("failed", "refused", None).retry is False
    assert judge_capture("failed", "too-large", None).retry is False


def test_investigators_first_then_watches_then_revisits(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """Claim order is priority, then submission order, whatever the submission order."""
    queue = make_queue(engine, clock)
    queue.submit(req("https://a.example/revisit", priority=PRIORITY_REVISIT, kind="revisit"))
    queue.submit(req("https://a.example/watch-1", priority=PRIORITY_WATCH, via="watch"))
    queue.submit(req("https://a.example/watch-2", priority=PRIORITY_WATCH, via="watch"))
    clock.advance(1)
    queue.submit(req("https://a.example/asked"))
    claimed = [queue.claim("w") for _ in range(5)]
    assert [j.url.rsplit("/", 1)[1] if j else None for j in claimed] == [
        "asked", "watch-1", "watch-2", "revisit", None]


def test_a_url_captured_or_queued_is_not_queued_again_unless_asked(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """Queued, running or completed: a second submission points at the first job; a
    failed job does not block a new one; again=True always queues. One capture.queued
    entry per new job."""
    queue = make_queue(engine, clock)
    first = queue.submit(req("https://a.example/p")).job
    assert first is not None
    dup = queue.submit(req("https://a.example/p"))
    assert dup.job is None
    assert dup.duplicate_of is not None
    assert dup.duplicate_of.id == first.id
    forced = queue.submit(req("https://a.example/p", again=True)).job
    assert forced is not None
    assert forced.id != first.id
    other = queue.submit(req("https://a.example/q")).job
    assert other is not None
    with engine.begin() as conn:
        conn.execute(sa.update(models.jobs).where(models.jobs.c.id == other.id)
                     .values(state=FAILED, result="failed"))
    assert queue.submit(req("https://a.example/q")).job is not None
    entries = list(queue.ledger.entries(actions=["capture.queued"]))
    assert len(entries) == 4
    assert entries[0].subject == f"capture:{first.capture_id}"
    assert entries[0].payload["job_id"] == first.id


def test_a_submission_is_covered_only_by_a_job_of_the_same_case(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """No leak between cases: bob's submission of a URL carol queued for another case
    gets a job of its own (never carol's); within one case the first job covers it.
    Unfiled jobs of people are covered only by the same person's; the operator's and
    the watches' unfiled jobs (not "user:") cover each other as before."""
    queue = make_queue(engine, clock)
    url = "https://a.example/post"

    def submit(by: str, case: str | None) -> int:
        result = queue.submit(JobRequest(url=url, requested_by=by, via="api", case=case))
        job = result.job or result.duplicate_of
        assert job is not None
        return job.id

    carol = submit("user:carol", "Case 7")
    bob = submit("user:bob", "Case 9")
    assert bob != carol
    assert submit("user:dave", "Case 9") == bob  # the same case: covered
    assert submit("user:carol", "Case 7") == carol
    bob_unfiled = submit("user:bob", None)
    assert bob_unfiled not in (bob, carol)
    carol_unfiled = submit("user:carol", None)
    assert carol_unfiled not in (bob, carol, bob_unfiled)
    assert submit("user:bob", None) == bob_unfiled
    operator = submit("os:root@host", None)
    assert operator not in (bob_unfiled, carol_unfiled)
    assert submit("watch:3", None) == operator
    with engine.connect() as conn:
        rows = conn.execute(sa.select(models.jobs.c.requested_by, models.jobs.c.case_name)
                            .order_by(models.jobs.c.id)).all()
    assert [tuple(r) for r in rows] == [
        ("user:carol", "Case 7"), ("user:bob", "Case 9"), ("user:bob", None),
        ("user:carol", None), ("os:root@host", None)]


def test_per_host_concurrency_limit(engine: sa.Engine, clock: FakeClock) -> None:
    """With 2 allowed per host, a third job of a busy host waits while another host's
    job runs; finishing one frees a slot."""
    queue = make_queue(engine, clock, per_host_concurrency=2)
    for n in range(3):
        queue.submit(req(f"https://busy.example/{n}"))
    queue.submit(req("https://other.example/0"))
    claimed = [queue.claim("w") for _ in range(4)]
    assert [j.host if j else None for j in claimed] == [
        "busy.example", "busy.example", "other.example", None]
    first = claimed[0]
    assert first is not None
    with engine.begin() as conn:
        queue.finish(first, "w", Verdict("completed", False), connection=conn)
    third = queue.claim("w")
    assert third is not None
    assert third.url == "https://busy.example/2"


def test_per_host_rate_limit(engine: sa.Engine, clock: FakeClock) -> None:
    """At 0.5 starts per second, a host's next job starts 2 s after the previous one."""
    queue = make_queue(engine, clock, per_host_rate=0.5)
    queue.submit(req("https://slow.example/1"))
    queue.submit(req("https://slow.example/2"))
    assert queue.claim("w") is not None
    assert queue.claim("w") is None
    clock.advance(1.9)
    assert queue.claim("w") is None
    clock.advance(0.2)
    assert queue.claim("w") is not None


def test_retries_back_off_with_a_new_capture_id_until_attempts_run_out(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """A passing failure queues the job again after the backoff, under a new capture id;
    after max_attempts it fails for good, saying so."""
    queue = make_queue(engine, clock, max_attempts=3, retry_base_seconds=10)
    queue.submit(req("https://flaky.example/p"))
    capture_ids = []
    for delay in (10, 20):
        job = queue.claim("w")
        assert job is not None
        capture_ids.append(job.capture_id)
        with engine.begin() as conn:
            after = queue.finish(job, "w", Verdict("failed", True, "network"), connection=conn)
        assert after is not None
        assert after.state == QUEUED
        assert after.capture_id not in capture_ids
        clock.advance(delay - 0.5)
        assert queue.claim("w") is None
        clock.advance(0.5)
    job = queue.claim("w")
    assert job is not None
    assert job.attempts == 3
    with engine.begin() as conn:
        final = queue.finish(job, "w", Verdict("failed", True, "network"), connection=conn)
    assert final is not None
    assert final.state == FAILED
    assert final.last_error == "network (gave up after 3 attempts)"
    with engine.connect() as conn:
        attempts = conn.execute(sa.select(models.job_attempts.c.outcome)).scalars().all()
    assert attempts == ["failed", "failed", "failed"]


def test_recovery_closes_the_interrupted_attempt_on_the_ledger(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """A job whose worker died mid-capture is queued again under a new capture id, and
    capture.interrupted closes the old one; the dead worker's late finish is refused."""
    queue = make_queue(engine, clock, lease_seconds=30)
    queue.submit(req("https://a.example/p"))
    job = queue.claim("dead-worker")
    assert job is not None
    queue.ledger.append(actor="service:archiver", action="capture.requested",
                        subject=f"capture:{job.capture_id}", payload={"url": job.url})
    assert queue.recover(expired=True, why="lease ran out") == []
    clock.advance(31)
    (recovered,) = queue.recover(expired=True, why="its lease ran out")
    assert recovered.state == QUEUED
    assert recovered.capture_id != job.capture_id
    (closed,) = queue.ledger.entries(actions=["capture.interrupted"])
    assert closed.subject == f"capture:{job.capture_id}"
    assert (closed.payload["reason"], closed.payload["message"]) == (
        "lease-expired", "its lease ran out")
    with engine.begin() as conn:
        assert queue.finish(job, "dead-worker", Verdict("completed", False),
                            connection=conn) is None
    assert queue.attempt_outcome(job) == "interrupted"


def test_recovery_of_a_job_whose_capture_was_recorded_keeps_it(
    engine: sa.Engine, clock: FakeClock
) -> None:
    """If the capture made it into the archive before the worker died, the job is put
    back with the same capture id (its next claim only finishes the bookkeeping) and
    nothing is appended to the ledger."""
    queue = make_queue(engine, clock)
    queue.submit(req("https://a.example/p"))
    job = queue.claim("w1")
    assert job is not None
    with engine.begin() as conn:
        conn.execute(sa.insert(models.captures).values(
            id=job.capture_id, url=job.url, requested_by="a", requested_via="queue",
            requested_at="2026-03-01T12:00:00.000000Z", status="completed"))
    (recovered,) = queue.recover(workers=["w1"], expired=False, why="worker died")
    assert recovered.state == QUEUED
    assert recovered.capture_id == job.capture_id
    assert list(queue.ledger.entries(actions=["capture.interrupted"])) == []


def test_many_threads_never_claim_a_job_twice(engine: sa.Engine, clock: FakeClock,
                                               database_url: str) -> None:
    """Eight workers with their own connections drain 120 jobs: each claimed once."""
    queue = make_queue(engine, clock)
    for n in range(120):
        queue.submit(req(f"https://h{n % 6}.example/{n}"))
    claims: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        own = make_engine(database_url)
        mine = JobQueue(own, ledger=_ledger(own, clock), clock=clock,
                        limits=queue.limits)
        try:
            while (job := mine.claim(name)) is not None:
                with lock:
                    claims.append(job.id)
                with own.begin() as conn:
                    mine.finish(job, name, Verdict("completed", False), connection=conn)
        finally:
            own.dispose()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(claims) == sorted(set(claims))
    assert len(claims) == 120
    assert queue.counts()[DONE] == 120


@pytest.mark.postgres
def test_postgres_host_limits_hold_under_concurrent_claims(postgres_url: str) -> None:
    """Sixteen simultaneous claimers, four hosts, two allowed per host: exactly eight jobs
    run, two per host (the advisory lock makes the per-host check exact)."""
    engine = make_engine(postgres_url)
    schema.upgrade(engine)
    clock = FakeClock()
    queue = make_queue(engine, clock, per_host_concurrency=2)
    for n in range(40):
        queue.submit(req(f"https://h{n % 4}.example/{n}"))
    start = threading.Barrier(16)
    got: list[str] = []
    lock = threading.Lock()

    def claim(name: str) -> None:
        own = make_engine(postgres_url)
        mine = JobQueue(own, ledger=_ledger(own, clock), clock=clock,
                        limits=queue.limits)
        start.wait()
        job = mine.claim(name)
        if job is not None:
            with lock:
                got.append(job.host)
        own.dispose()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert Counter(got) == {f"h{n}.example": 2 for n in range(4)}
        assert queue.counts()[RUNNING] == 8
    finally:
        engine.dispose()


CLAIMER = textwrap.dedent("""
    import sys
    from archiver.db import make_engine
    from archiver.watch.jobs import JobLimits, JobQueue, Verdict
    from chain_of_custody.ledger import Ledger
    engine = make_engine(sys.argv[1])
    from chain_of_custody.keys import SigningKey
    queue = JobQueue(engine, ledger=Ledger(engine, origin="jobs.test",
                                           signer=SigningKey.generate()),
                     limits=JobLimits(per_host_rate=0, per_host_concurrency=100))
    while (job := queue.claim(sys.argv[2])) is not None:
        print(job.id, flush=True)
        with engine.begin() as conn:
            queue.finish(job, sys.argv[2], Verdict("completed", False), connection=conn)
""")


@pytest.mark.postgres
def test_postgres_worker_processes_never_claim_a_job_twice(postgres_url: str) -> None:
    """Four separate processes drain 200 jobs from one PostgreSQL: every job once."""
    engine = make_engine(postgres_url)
    schema.upgrade(engine)
    queue = make_queue(engine, FakeClock())
    queue.clock = lambda: datetime.now(UTC)
    for n in range(200):
        queue.submit(req(f"https://h{n % 10}.example/{n}"))
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, postgres_url, f"p{i}"],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for i in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    try:
        assert all(p.returncode == 0 for p in processes)
        claimed = [int(line) for out in outputs for line in out.split()]
        assert sorted(claimed) == list(range(1, 201))
        assert sum(1 for out in outputs if out.strip()) >= 2  # the work was shared
    finally:
        engine.dispose()
