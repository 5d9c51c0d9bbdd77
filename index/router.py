"""``ShardRouter``: places faces on shards, fans searches out to every shard, merges the top-k.

Placement is ``shard_of(gallery, id, S)`` (the store uses the same function, so a shard's partition in
the store is exactly its faces). A search goes to every shard at once; each returns its own top-k
sorted by score, and a heap merge keeps the best k overall, then the score floor applies.

Single queries arriving concurrently are batched: a query waits up to ``batch_wait_ms`` for others
(at most ``max_batch``), then the batch goes to each shard in one call, where unfiltered queries to a
gallery become one BLAS-backed FAISS search. With R replicas per shard, reads go round-robin to the
replicas and fail over to the next when one is down; writes go to every replica.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from store.base import FaceRecord, FaceStore, shard_of
from store.errors import ShardUnavailable

from .config import IndexConfig
from .filters import FaceFilter
from .metrics import record_pending, record_search_latency


def _actor_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as errors

    return tuple(getattr(errors, name) for name in ("RayActorError", "ActorUnavailableError", "ActorDiedError")
                 if hasattr(errors, name))


@dataclass
class _Pending:
    gallery: str
    query: np.ndarray
    top_k: int
    face_filter: FaceFilter | None
    min_score: float
    future: asyncio.Future


class ShardRouter:
    def __init__(self, replicas: list[list], config: IndexConfig):
        self.replicas = replicas
        self.config = config
        self.num_shards = len(replicas)
        self._turn = [itertools.count() for _ in replicas]
        self._pending: list[_Pending] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task] = set()
        self._actor_errors = _actor_errors()

    @classmethod
    def start(cls, store: FaceStore, config: IndexConfig, *, name_prefix: str = "facegrid",
              detached: bool = False) -> "ShardRouter":
        from .shard import shard_actor

        replicas = [[shard_actor(shard, replica, store, config, name_prefix=name_prefix, detached=detached)
                     for replica in range(config.replicas_per_shard)] for shard in range(config.num_shards)]
        return cls(replicas, config)

    # ---- calling shards -----------------------------------------------------------------------

    async def _read(self, shard: int, method: str, *args):
        replicas = self.replicas[shard]
        first = next(self._turn[shard])
        last_error: BaseException | None = None
        for attempt in range(len(replicas)):
            actor = replicas[(first + attempt) % len(replicas)]
            try:
                return await getattr(actor, method).remote(*args)
            except self._actor_errors as error:
                last_error = error
        raise ShardUnavailable(f"no replica of shard {shard} answered: {last_error}")

    async def _write(self, shard: int, method: str, *args):
        results = await asyncio.gather(*(getattr(actor, method).remote(*args) for actor in self.replicas[shard]),
                                       return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        if not answered:
            raise ShardUnavailable(f"no replica of shard {shard} took the write: {results[0]}")
        # A replica that missed the write is down; on restart it rebuilds from the store, which has it.
        return answered[0]

    async def ready(self) -> list[dict]:
        return list(await asyncio.gather(*(self._read(s, "ready") for s in range(self.num_shards))))

    # ---- writes -------------------------------------------------------------------------------

    async def add(self, faces: Sequence[FaceRecord]) -> None:
        """Index faces already durable in the store."""
        groups: dict[tuple[str, int], list[FaceRecord]] = {}
        for face in faces:
            groups.setdefault((face.gallery, shard_of(face.gallery, face.face_id, self.num_shards)), []).append(face)
        await asyncio.gather(*(
            self._write(shard, "add", gallery, [f.face_id for f in group], np.stack([f.facen for f in group]),
                        [f.meta for f in group])
            for (gallery, shard), group in groups.items()))

    async def remove(self, gallery: str, face_id: int) -> bool:
        return await self._write(shard_of(gallery, face_id, self.num_shards), "remove", gallery, face_id)

    async def update_meta(self, gallery: str, face_id: int, meta: dict) -> bool:
        return await self._write(shard_of(gallery, face_id, self.num_shards), "update_meta", gallery, face_id, meta)

    async def drop_gallery(self, gallery: str) -> None:
        await asyncio.gather(*(self._write(s, "drop_gallery", gallery) for s in range(self.num_shards)))

    async def configure(self, **tuning) -> None:
        """Broadcast tuning to every replica of every shard."""
        self.config = self.config.model_copy(update=tuning)
        await asyncio.gather(*(self._write(s, "configure", **tuning) for s in range(self.num_shards)))

    # ---- reads --------------------------------------------------------------------------------

    async def count(self, gallery: str) -> int:
        return sum(await asyncio.gather(*(self._read(s, "count", gallery) for s in range(self.num_shards))))

    async def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for shard_counts in await asyncio.gather(*(self._read(s, "counts") for s in range(self.num_shards))):
            for gallery, count in shard_counts.items():
                totals[gallery] = totals.get(gallery, 0) + count
        return totals

    async def list_ids(self, gallery: str, face_filter: FaceFilter | None, after_id: int | None, limit: int,
                       descending: bool = False) -> list[int]:
        """Ids passing the filter in id order after ``after_id``: each shard's first ``limit``, merged."""
        parts = await asyncio.gather(*(self._read(s, "list_ids", gallery, face_filter, after_id, limit, descending)
                                       for s in range(self.num_shards)))
        merged = heapq.merge(*(part.tolist() for part in parts), reverse=descending)
        return list(itertools.islice(merged, limit))

    async def search(self, gallery: str, query: np.ndarray, top_k: int, face_filter: FaceFilter | None = None,
                     min_score: float = -np.inf) -> list[tuple[int, float]]:
        """The exact top-k (face id, cosine) in the gallery, best first, with cosine >= ``min_score``."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        pending = _Pending(gallery, np.asarray(query, np.float32).reshape(-1), top_k, face_filter, min_score,
                           loop.create_future())
        self._pending.append(pending)
        record_pending(len(self._pending))
        if len(self._pending) >= self.config.max_batch:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(self.config.batch_wait_ms / 1000, self._flush)
        hits = await pending.future
        record_search_latency(gallery, time.perf_counter() - started)
        return hits

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._pending = self._pending, []
        record_pending(0)
        if batch:
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        requests = [(p.gallery, p.query, p.top_k, p.face_filter) for p in batch]
        try:
            per_shard = await asyncio.gather(*(self._read(s, "search_many", requests)
                                               for s in range(self.num_shards)))
        except BaseException as error:  # noqa: BLE001 - every waiting caller must hear of the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for position, pending in enumerate(batch):
            ranked = heapq.merge(*(zip(shard[position][0].tolist(), shard[position][1].tolist())
                                   for shard in per_shard), key=lambda hit: hit[0], reverse=True)
            hits = [(int(face_id), float(score)) for score, face_id in itertools.islice(ranked, pending.top_k)
                    if score >= pending.min_score and score > -np.inf]
            if not pending.future.done():
                pending.future.set_result(hits)
