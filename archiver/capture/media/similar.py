"""Finding captures whose media look alike: the PDQ hash index and its search.

The index (tables ``media_hashes`` and ``media_hash_index``, migration 0004) is built
from the signed manifests, never from anything unsealed: :func:`index_pending` reads the
manifest of every completed capture not indexed yet (its digest checked against the
database row by the caller's reader) and stores the hashes of its media items. It can
be dropped and rebuilt at any time.

Search is a scan: the query's hashes against every stored hash, 256-bit Hamming
distance computed with numpy in batches, memory bounded by the batch. A capture matches
when any of its hashes (an image, any sampled frame) is within ``max_distance`` of any
query hash; it is reported with its best pair. Fine for hundreds of thousands of
hashes; beyond that an index for Hamming space (multi-index hashing) would be needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from archiver.capture.media.phash import MIN_QUALITY, distances

metadata = sa.MetaData()

media_hashes = sa.Table(
    "media_hashes",
    metadata,
    sa.Column("capture_id", sa.String(36), primary_key=True),
    sa.Column("artifact", sa.String(200), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("pdq", sa.String(64), nullable=False),
    sa.Column("quality", sa.Integer, nullable=False),
)

media_hash_index = sa.Table(
    "media_hash_index",
    metadata,
    sa.Column("capture_id", sa.String(36), primary_key=True),
    sa.Column("indexed", sa.Text, nullable=False),
    sa.Column("hashes", sa.Integer, nullable=False),
)

_captures = sa.table("captures", sa.column("id"), sa.column("url"), sa.column("status"),
                     sa.column("manifest_sha256"), sa.column("requested_at"))
BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Similar:
    """A capture with media like the query's: its best pair of hashes."""

    capture_id: str
    url: str
    requested_at: str
    distance: int
    artifact: str
    query_position: int
    position: int
    matching_hashes: int

    def as_json(self) -> dict[str, Any]:
        return {
            "capture_id": self.capture_id, "url": self.url,
            "requested_at": self.requested_at, "distance": self.distance,
            "artifact": self.artifact, "query_position": self.query_position,
            "position": self.position, "matching_hashes": self.matching_hashes,
        }


def manifest_hashes(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for ``media_hashes`` from a capture manifest's media items."""
    media = (manifest.get("happened", {}).get("fetchers", {}) or {}).get("media") or {}
    rows = []
    for item in media.get("items") or []:
        for frame in item.get("pdq") or []:
            rows.append({
                "artifact": str(item["artifact"]),
                "position": int(frame["position"]),
                "kind": "image" if item.get("kind") == "image" else "frame",
                "seconds": frame.get("seconds"),
                "pdq": str(frame["pdq"]),
                "quality": int(frame["quality"]),
            })
    return rows


def index_pending(engine: sa.Engine, read_manifest: Callable[[str], dict[str, Any]],
                  *, now: str) -> int:
    """Index every completed capture not indexed yet; returns how many were indexed.
    ``read_manifest(sha256)`` returns the verified manifest of that digest."""
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(_captures.c.id, _captures.c.manifest_sha256)
            .where(_captures.c.status == "completed")
            .where(_captures.c.id.not_in(sa.select(media_hash_index.c.capture_id)))
        ).all()
    for capture_id, manifest_sha256 in pending:
        rows = [{"capture_id": capture_id, **row}
                for row in manifest_hashes(read_manifest(manifest_sha256))]
        with engine.begin() as conn:
            if rows:
                conn.execute(sa.insert(media_hashes), rows)
            conn.execute(sa.insert(media_hash_index).values(
                capture_id=capture_id, indexed=now, hashes=len(rows)))
    return len(pending)


def capture_hashes(engine: sa.Engine, capture_id: str) -> list[str]:
    with engine.connect() as conn:
        return [str(h) for h in conn.execute(
            sa.select(media_hashes.c.pdq).where(media_hashes.c.capture_id == capture_id)
            .where(media_hashes.c.quality >= MIN_QUALITY)
            .order_by(media_hashes.c.artifact, media_hashes.c.position)
        ).scalars()]


def search(engine: sa.Engine, query: list[str], *, max_distance: int,
           exclude: str | None = None) -> list[Similar]:
    """Captures with a hash within ``max_distance`` of a query hash, closest first."""
    if not query:
        return []
    best: dict[str, tuple[int, str, int, int]] = {}
    counts: dict[str, int] = {}
    for batch in _batches(engine, exclude):
        found = distances(query, [row.pdq for row in batch])
        for column, row in enumerate(batch):
            column_distances = found[:, column]
            nearest = int(column_distances.min())
            if nearest > max_distance:
                continue
            counts[row.capture_id] = counts.get(row.capture_id, 0) + 1
            current = best.get(row.capture_id)
            if current is None or nearest < current[0]:
                best[row.capture_id] = (nearest, row.artifact,
                                        int(column_distances.argmin()), int(row.position))
    if not best:
        return []
    with engine.connect() as conn:
        info = {r.id: (r.url, r.requested_at) for r in conn.execute(
            sa.select(_captures.c.id, _captures.c.url, _captures.c.requested_at)
            .where(_captures.c.id.in_(list(best))))}
    results = [
        Similar(capture_id, info[capture_id][0], info[capture_id][1], distance, artifact,
                query_position, position, counts[capture_id])
        for capture_id, (distance, artifact, query_position, position) in best.items()
    ]
    return sorted(results, key=lambda s: (s.distance, s.requested_at, s.capture_id))


def _batches(engine: sa.Engine, exclude: str | None) -> Iterator[list[Any]]:
    query = (sa.select(media_hashes.c.capture_id, media_hashes.c.artifact,
                       media_hashes.c.position, media_hashes.c.pdq)
             .where(media_hashes.c.quality >= MIN_QUALITY))
    if exclude is not None:
        query = query.where(media_hashes.c.capture_id != exclude)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH).execute(query)
        for partition in result.partitions(BATCH):
            yield list(partition)
