"""Index metrics through Ray's metrics API (shown in the Ray dashboard and its Prometheus export).

Created lazily and only inside a Ray process, so the index classes stay usable without Ray.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

SEARCH_LATENCY_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
BATCH_SIZE_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]


@lru_cache(maxsize=None)
def _metrics() -> dict[str, Any] | None:
    import ray
    from ray.util import metrics

    if not ray.is_initialized():
        return None
    return {
        "faces": metrics.Gauge(
            "facegrid_gallery_faces", "Faces held per gallery shard.", tag_keys=("gallery", "shard")
        ),
        "search_latency": metrics.Histogram(
            "facegrid_search_latency_s",
            "Sharded search latency, seconds.",
            boundaries=SEARCH_LATENCY_BOUNDARIES_S,
            tag_keys=("gallery",),
        ),
        "pending": metrics.Gauge("facegrid_router_pending_queries", "Searches waiting to join a batch."),
        "batch_size": metrics.Histogram(
            "facegrid_search_batch_size", "Searches the router sent to the shards together.", BATCH_SIZE_BOUNDARIES
        ),
    }


def record_gallery_faces(gallery: str, shard: int, count: int) -> None:
    found = _metrics()
    if found:
        found["faces"].set(count, tags={"gallery": gallery, "shard": str(shard)})


def record_search_latency(gallery: str, seconds: float) -> None:
    found = _metrics()
    if found:
        found["search_latency"].observe(seconds, tags={"gallery": gallery})


def record_pending(count: int) -> None:
    found = _metrics()
    if found:
        found["pending"].set(count)


def record_batch_size(size: int) -> None:
    found = _metrics()
    if found:
        found["batch_size"].observe(size)
