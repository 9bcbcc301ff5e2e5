"""Benchmark: the HTTP API over 100,000 captures, against the same work done directly.

    .venv/bin/python bench/api.py            # 100,000 captures, a 1 GiB artifact, 30 s load
    .venv/bin/python bench/api.py --quick    # 10,000 captures, 64 MiB, 5 s load

The archive (SQLite, the embedded default) gets ``captures`` rows in one case (and a
tenth as many in another case the benchmark's person cannot see), each with one small
artifact; one capture gets a large random artifact, put in the blob store as captures'
files are. ``archiver serve`` then runs as a real subprocess (plain HTTP on loopback), and
a person with an investigator's token on the case calls it over real HTTP (httpx).

Measured, in the same run:

* list, first page:  GET /api/captures?case=…&limit=50, against the same keyset query
                     run directly with SQLAlchemy;
* list, deep page:   the same with a cursor 90 % of the way down the case;
* show:              GET /api/captures/{id} (which also appends the signed
                     ``access.viewed`` entry), against the same selects plus the same
                     ledger append done directly;
* download:          the large artifact streamed over HTTP, against reading the stored
                     file directly (1 MiB reads); the server's peak RSS before and after;
* load:              50 clients listing pages for ``seconds`` at once: requests, errors,
                     p95.

Printed: p50/p95 of each, the ratios against the direct figures, and the targets of
issue 11 (list p95 < 50 ms, show p95 < 30 ms, download >= 0.8x direct, no error under load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import ROOT, free_port, wait_up

MiB = 1024 * 1024
CASE, OTHER = "Bench case", "Other case"
PASSPHRASE = "bench-passphrase"


def _environment(workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARCHIVER_")}
    env.update({"ARCHIVER_HOME": str(Path(workdir) / "archive"),
                "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
                "ARCHIVER_OPERATOR": "os:bench@localhost"})
    return env


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * statistics.median(values), 2),
            "p95_ms": round(1000 * _percentile(values, 0.95), 2)}


def build(workdir: str, captures: int, big_bytes: int) -> dict[str, Any]:
    """The archive: ``captures`` rows in CASE, a tenth in OTHER, one big artifact."""
    os.environ.update(_environment(workdir))
    sys.path.insert(0, str(ROOT))
    import hashlib

    import sqlalchemy as sa

    from archiver import models
    from archiver.archive import Archive, initialise
    from archiver.clock import rfc3339
    from archiver.people.access import CaseRole, Scope
    from archiver.people.accounts import People
    from archiver.settings import load_settings

    settings = load_settings()
    initialise(settings)
    started = time.perf_counter()
    with Archive.open(settings) as archive:
        people = People(archive, actor="os:bench@localhost")
        people.add_user("bench", password="a long bench passphrase 1")
        people.add_case(CASE)
        people.add_case(OTHER)
        people.grant(CASE, "bench", CaseRole.INVESTIGATOR)
        _view, token = people.create_token("bench", scope=Scope.READ, cases=None,
                                           expires_in=None, label="bench")
        with archive.engine.begin() as conn:
            case_ids = dict(conn.execute(sa.select(models.cases.c.name, models.cases.c.id)).all())
        base = time.time() - captures * 60
        rows, artifact_rows, ids = [], [], []
        total = captures + captures // 10
        for number in range(total):
            capture_id = str(uuid.UUID(int=number + 1))
            case = case_ids[CASE] if number < captures else case_ids[OTHER]
            when = rfc3339(_utc(base + number * 50))
            rows.append({
                "id": capture_id, "url": f"https://example.org/post/{number}", "case_id": case,
                "note": None, "requested_by": "user:bench", "requested_via": "api",
                "requested_at": when, "status": "completed", "reason": None, "message": None,
                "started": when, "ended": when, "final_url": None, "http_status": 200,
                "manifest_sha256": hashlib.sha256(capture_id.encode()).hexdigest(),
                "key_id": None, "ledger_seq": None, "outcomes": None,
            })
            artifact_rows.append({
                "capture_id": capture_id, "name": "page.warc.gz", "role": "warc",
                "media_type": "application/warc", "size": 1000,
                "sha256": hashlib.sha256(b"w" + capture_id.encode()).hexdigest(),
                "sha512": hashlib.sha512(b"w" + capture_id.encode()).hexdigest(),
            })
            if number < captures:
                ids.append(capture_id)
            if len(rows) >= 5000:
                _insert(archive.engine, rows, artifact_rows)
        _insert(archive.engine, rows, artifact_rows)
        big_path = Path(workdir) / "big.bin"
        with big_path.open("wb") as handle:
            left = big_bytes
            while left:
                chunk = os.urandom(min(4 * MiB, left))
                handle.write(chunk)
                left -= len(chunk)
        from chain_of_custody.digest import digest_stream

        with big_path.open("rb") as handle:
            digest = digest_stream(handle)
        archive.store.put_file(big_path, sha256=digest.sha256, size=digest.size,
                               sha512=digest.sha512)
        stored = archive.store.stores[0].path_for(digest.sha256)  # the local store
        with archive.engine.begin() as conn:
            conn.execute(sa.insert(models.artifacts).values(
                capture_id=ids[-1], name="video.mp4", role="media", media_type="video/mp4",
                size=digest.size, sha256=digest.sha256, sha512=digest.sha512))
    (Path(workdir) / "ids.json").write_text(json.dumps(ids))
    return {"token": token, "big_capture": ids[-1], "big_sha256": digest.sha256,
            "big_path": str(stored),
            "build_seconds": round(time.perf_counter() - started, 1)}


def _utc(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


def _insert(engine: Any, rows: list[dict[str, Any]], artifact_rows: list[dict[str, Any]]) -> None:
    import sqlalchemy as sa

    from archiver import models

    if not rows:
        return
    with engine.begin() as conn:
        conn.execute(sa.insert(models.captures), rows)
        conn.execute(sa.insert(models.artifacts), artifact_rows)
    rows.clear()
    artifact_rows.clear()


def direct_figures(workdir: str, trials: int) -> dict[str, Any]:
    """The same queries run directly with SQLAlchemy (and the same ledger append)."""
    ids = json.loads((Path(workdir) / "ids.json").read_text())
    os.environ.update(_environment(workdir))
    sys.path.insert(0, str(ROOT))
    import sqlalchemy as sa

    from archiver import models
    from archiver.archive import Archive
    from archiver.settings import load_settings

    c, a = models.captures, models.artifacts
    with Archive.open(load_settings()) as archive:
        archive.signing_key  # noqa: B018 - decrypting the key once is not a query's cost
        with archive.engine.connect() as conn:
            case_id = conn.execute(sa.select(models.cases.c.id)
                                   .where(models.cases.c.name == CASE)).scalar_one()
        deep = ids[len(ids) // 10]  # newest first: 90 % of the way down
        with archive.engine.connect() as conn:
            deep_key = conn.execute(sa.select(c.c.requested_at, c.c.id)
                                    .where(c.c.id == deep)).one()

        def page(after: Any) -> list[Any]:
            query = (sa.select(c).where(c.c.case_id == case_id)
                     .order_by(c.c.requested_at.desc(), c.c.id.desc()).limit(51))
            if after is not None:
                query = query.where(sa.tuple_(c.c.requested_at, c.c.id) < tuple(after))
            with archive.engine.connect() as conn:
                return list(conn.execute(query).all())

        first, deep_times, show = [], [], []
        for number in range(trials):
            t0 = time.perf_counter()
            page(None)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            page(deep_key)
            deep_times.append(time.perf_counter() - t0)
            capture_id = ids[(number * 7919) % len(ids)]
            t0 = time.perf_counter()
            with archive.engine.connect() as conn:
                conn.execute(sa.select(c).where(c.c.id == capture_id)).one()
                conn.execute(sa.select(a).where(a.c.capture_id == capture_id)).all()
            archive.ledger.append(actor="user:bench", action="access.viewed",
                                  subject=f"capture:{capture_id}", payload={"bench": True})
            show.append(time.perf_counter() - t0)
    return {"first": _ms(first), "deep": _ms(deep_times), "show": _ms(show)}


def read_direct(path: str, *, hashed: bool) -> float:
    """Seconds to read the stored file (1 MiB reads), and with ``hashed`` to compute
    its SHA-256 too: what a download that re-checks the evidence (as the API's does)
    must do besides sending."""
    import hashlib

    start = time.perf_counter()
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MiB):
            if hashed:
                sha256.update(chunk)
    return time.perf_counter() - start


def _rss_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith(field))
    return kib / 1024


def run(quick: bool) -> None:
    import httpx

    captures = 10_000 if quick else 100_000
    big = 64 * MiB if quick else 1024 * MiB
    seconds = 5 if quick else 30
    trials = 60 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench-api-") as workdir:
        print(f"building an archive of {captures:,} captures (+{captures // 10:,} in another "
              f"case) and a {big // MiB} MiB artifact …", flush=True)
        built = _in_child("build", workdir=workdir, captures=captures, big_bytes=big)
        print(f"  built in {built['build_seconds']} s", flush=True)
        direct = _in_child("direct", workdir=workdir, trials=trials)
        ids = json.loads((Path(workdir) / "ids.json").read_text())
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "archiver.cli", "serve", "--port", str(port), "--insecure-http"],
            env=_environment(workdir), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base, server)
            headers = {"Authorization": f"Bearer {built['token']}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                api = _api_figures(client, ids, trials)
                rss_before = _rss_mib(server.pid, "VmRSS:")
                hwm_before = _rss_mib(server.pid, "VmHWM:")
                direct_s = read_direct(built["big_path"], hashed=False)
                hashed_s = read_direct(built["big_path"], hashed=True)
                # curl as the client (a Python client would be the bottleneck)
                url = f"{base}/api/captures/{built['big_capture']}/artifacts/video.mp4"
                t0 = time.perf_counter()
                done = subprocess.run(
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                     "-H", f"Authorization: Bearer {built['token']}", url],
                    capture_output=True, text=True, check=True)
                http_s = time.perf_counter() - t0
                got = int(done.stdout)
                hwm_after = _rss_mib(server.pid, "VmHWM:")
                assert got == big, (got, big)
            load = _load(base, headers, seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    rate_direct, rate_http = big / MiB / direct_s, big / MiB / http_s
    rate_hashed = big / MiB / hashed_s
    print(json.dumps({"direct": direct, "api": api}, indent=1))
    print(f"list first page: API p95 {api['first']['p95_ms']} ms (target < 50), direct "
          f"SQLAlchemy p95 {direct['first']['p95_ms']} ms")
    print(f"list deep page:  API p95 {api['deep']['p95_ms']} ms (target < 50), direct "
          f"SQLAlchemy p95 {direct['deep']['p95_ms']} ms")
    print(f"show capture:    API p95 {api['show']['p95_ms']} ms (target < 30), direct "
          f"(selects + signed ledger append) p95 {direct['show']['p95_ms']} ms")
    print(f"download {big // MiB} MiB (re-hashed as it streams): {rate_http:.0f} MiB/s over "
          f"HTTP; reading the file: {rate_direct:.0f} MiB/s ({rate_http / rate_direct:.2f}x, "
          f"target >= 0.8x), reading and hashing it (SHA-256): {rate_hashed:.0f} MiB/s "
          f"({rate_http / rate_hashed:.2f}x); server RSS {rss_before:.0f} MiB before, "
          f"peak {hwm_before:.0f} -> {hwm_after:.0f} MiB")
    print(f"load: 50 clients for {seconds} s: {load['requests']} requests, "
          f"{load['errors']} errors, p95 {load['p95_ms']} ms")


def _api_figures(client: Any, ids: list[str], trials: int) -> dict[str, Any]:
    first_page = client.get("/api/captures", params={"case": CASE, "limit": 50})
    first_page.raise_for_status()
    # walk to a page about 90 % of the way down by a cursor the API gave
    deep_cursor = _cursor_near(client, len(ids))
    first, deep, show = [], [], []
    for number in range(trials):
        t0 = time.perf_counter()
        client.get("/api/captures", params={"case": CASE, "limit": 50}).raise_for_status()
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.get("/api/captures", params={"case": CASE, "limit": 50,
                                            "cursor": deep_cursor}).raise_for_status()
        deep.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.get(f"/api/captures/{ids[(number * 7919) % len(ids)]}").raise_for_status()
        show.append(time.perf_counter() - t0)
    return {"first": _ms(first), "deep": _ms(deep), "show": _ms(show)}


def _cursor_near(client: Any, total: int) -> str:
    """A cursor about 90 % down the list, reached by following ``next`` with 100-row
    pages (the API gives no other way to a deep page, rightly)."""
    cursor = None
    for _ in range(int(total * 0.9) // 100):
        params: dict[str, Any] = {"case": CASE, "limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        answer = client.get("/api/captures", params=params)
        answer.raise_for_status()
        cursor = answer.json()["next"]
    assert cursor is not None
    return str(cursor)


def _load(base: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    import httpx

    stop = time.monotonic() + seconds
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            cursor = None
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    answer = client.get("/api/captures", params={
                        "case": CASE, "limit": 50, **({"cursor": cursor} if cursor else {})})
                    ok = answer.status_code == 200
                    cursor = answer.json().get("next") if ok else None
                except httpx.HTTPError as exc:
                    ok = False
                    answer = exc  # type: ignore[assignment]
                with lock:
                    times.append(time.perf_counter() - t0)
                    if not ok:
                        errors.append(str(answer)[:200])

    threads = [threading.Thread(target=client_loop) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"load errors (first 3): {errors[:3]}")
    return {"requests": len(times), "errors": len(errors), **_ms(times)}


def _in_child(phase: str, **params: Any) -> Any:
    done = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--params", json.dumps(params)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase", choices=["build", "direct"])
    parser.add_argument("--params")
    args = parser.parse_args()
    if args.phase:
        params = json.loads(args.params)
        result = build(**params) if args.phase == "build" else direct_figures(**params)
        print(json.dumps(result))
        return
    run(args.quick)


if __name__ == "__main__":
    main()
