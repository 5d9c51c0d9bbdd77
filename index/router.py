"""``ShardRouter``: places faces on shards, fans searches out to every shard, merges the top-k.

Placement is ``shard_of(gallery, id, S)`` (the store uses the same function, so a shard's partition in
the store is exactly its faces). A search goes to every shard at once; each returns its own top-k
sorted by score, and a heap merge keeps the best k overall, then the score floor applies.

Queries arriving concurrently are batched without waiting on a clock: a query is sent at once while
fewer than ``batches_in_flight`` batches per shard replica are running; queries arriving meanwhile queue
and leave together (at most ``max_batch``) as soon as a running batch has answered. A lone query so
never waits, and under load the batches grow to what arrives during one shard pass. Each shard answers
every query of a batch on its own (gallery, filter, top-k), and a query that fails there fails alone.
With R replicas per shard, reads go round-robin to the replicas and fail over to the next when one is
down; writes go to every replica, each after that replica's unanswered writes to the same faces
(index/write_order.py).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Coroutine, Sequence

import numpy as np

from facegrid.errors import FacegridError, actor_lost_errors
from store.base import FaceRecord, FaceStore, shard_of

from .config import IndexConfig
from .errors import ShardUnavailable
from .filters import FaceFilter
from .metrics import record_batch_size, record_pending, record_search_latency
from .write_order import WriteOrder

logger = logging.getLogger(__name__)
# Faces whose write the store could not confirm are re-read this often, this many times (about 5 minutes:
# past a node's restart, or an operator's repair of the store).
REFRESH_EVERY_S, REFRESH_ATTEMPTS = 2.0, 150


@dataclass
class _Pending:
    gallery: str
    query: np.ndarray
    top_k: int
    face_filter: FaceFilter | None
    min_cosine: float
    future: asyncio.Future[Any]


class ShardRouter:
    def __init__(self, replicas: list[list[Any]], config: IndexConfig, name_prefix: str = "facegrid"):
        self.replicas = replicas
        self.name_prefix = name_prefix
        self.config = config
        self.num_shards = len(replicas)
        self._turn = [itertools.count() for _ in replicas]
        self._pending: list[_Pending] = []
        self._batches: set[asyncio.Task[Any]] = set()
        self._actor_errors: tuple[type[BaseException], ...] = actor_lost_errors()
        self._unanswered: tuple[type[BaseException], ...] = (asyncio.TimeoutError, *self._actor_errors)
        self._lagging: list[set[int]] = [set() for _ in replicas]
        self._write_order = [[WriteOrder() for _ in shard] for shard in replicas]
        self._background: set[asyncio.Future[Any]] = set()
        self.batches_by_size: Counter[int] = Counter()  # the histogram's raw counts, for benchmarks

    @classmethod
    def start(
        cls, store: FaceStore, config: IndexConfig, *, name_prefix: str = "facegrid", detached: bool = False
    ) -> "ShardRouter":
        from .shard import retire_shards, shard_actor, shard_fingerprint

        retire_shards(name_prefix, keep_fingerprint=shard_fingerprint(store.store_id, config))
        replicas = [
            [
                shard_actor(shard, replica, store, config, name_prefix=name_prefix, detached=detached)
                for replica in range(config.replicas_per_shard)
            ]
            for shard in range(config.num_shards)
        ]
        # Replicas found running keep the tuning they were given, which may not be these settings' (tuning
        # leaves the fingerprint alone). Not awaited, so that a replica still rebuilding does not hold this
        # start up; a read that reaches a found replica before it searches with the tuning it had.
        tuning = config.current_tuning()
        for replica in itertools.chain(*replicas):
            replica.configure.remote(tuning, time.time_ns())
        return cls(replicas, config, name_prefix)

    def stop(self) -> None:
        """Kill every shard replica and free their placement groups (tests, benchmarks)."""
        from .shard import retire_shards

        retire_shards(self.name_prefix)

    # ---- calling shards -----------------------------------------------------------------------

    async def _read(self, shard: int, method: str, *args: Any) -> Any:
        """Ask one replica; if it has not answered within ``hedge_after_s`` (its node may be gone, Ray
        holds calls to a restarting actor until it is back), ask the next one too and take the first
        answer. A replica that made a caller wait is passed over by later reads until it answers again."""
        count, lagging = len(self.replicas[shard]), self._lagging[shard]
        turn = next(self._turn[shard])
        order = sorted(range(count), key=lambda r: (r in lagging, (r - turn) % count))
        deadline = time.monotonic() + self.config.shard_timeout_s
        running: dict[asyncio.Future[Any], int] = {}
        errors: list[BaseException] = []
        while order or running:
            if order:
                replica = order.pop(0)
                running[self._send(shard, replica, method, *args)] = replica
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            if order:
                wait = min(wait, self.config.hedge_after_s)
            finished, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                lagging.update(running.values())
                if time.monotonic() >= deadline:
                    break
            for call in finished:
                running.pop(call)
                error = call.exception()
                if error is None or not isinstance(error, self._actor_errors):
                    return call.result()
                errors.append(error)
        reason = errors[-1] if errors else f"none answered within {self.config.shard_timeout_s:g} s"
        raise ShardUnavailable(f"no replica of shard {shard} answered: {reason}")

    def _send(
        self, shard: int, replica: int, method: str, *args: Any, after: set[asyncio.Future[Any]] | None = None
    ) -> asyncio.Future[Any]:
        """Call one replica, once the calls ``after`` names have finished; its answer (not an actor
        failure) takes it off the shard's lagging list."""
        remote = getattr(self.replicas[shard][replica], method).remote
        call: asyncio.Future[Any] = asyncio.ensure_future(_after(after, remote, args) if after else remote(*args))
        call.add_done_callback(lambda done: self._answered(shard, replica, done))
        return call

    def _answered(self, shard: int, replica: int, call: asyncio.Future[Any]) -> None:
        if not call.cancelled() and not isinstance(call.exception(), self._actor_errors):
            self._lagging[shard].discard(replica)

    def _write(
        self, shard: int, method: str, *args: Any, touches: tuple[str, Sequence[int] | None] | None = None
    ) -> Coroutine[Any, Any, Any]:
        """Send the write to every replica now, in the order of these calls (``touches``, the gallery and
        face ids it changes, None for all of the gallery's: each replica gets it after its unanswered
        writes to them). Awaiting the result waits until all have acknowledged it, or until one has and
        the others are still silent ``hedge_after_s`` later. The faces are already durable in the store:
        a replica that is down gets the call when Ray has restarted it (after its rebuild; writes are
        idempotent), and until it acknowledges, reads from this router pass it over."""
        calls = {}
        for replica in range(len(self.replicas[shard])):
            order = self._write_order[shard][replica]
            after = order.before(*touches) if touches is not None else None
            call = self._send(shard, replica, method, *args, after=after)
            if touches is not None:
                order.track(*touches, call)
            call.add_done_callback(self._background_done)
            self._background.add(call)
            calls[call] = replica
        return self._acknowledged(shard, method, calls)

    async def _acknowledged(self, shard: int, method: str, calls: dict[asyncio.Future[Any], int]) -> Any:
        pending, errors, acknowledged = set(calls), [], None
        deadline = time.monotonic() + self.config.shard_timeout_s
        while pending:
            wait = deadline - time.monotonic()
            if acknowledged is not None:
                wait = min(wait, acknowledged[1] + self.config.hedge_after_s - time.monotonic())
            finished, pending = await asyncio.wait(pending, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                break
            for call in finished:
                if call.exception() is not None:
                    errors.append(call.exception())
                elif acknowledged is None:
                    acknowledged = (call.result(), time.monotonic())
        self._lagging[shard].update(calls[call] for call in pending)
        if acknowledged is not None:
            return acknowledged[0]
        if pending:
            # No replica is up: the write is in the store, and the restarted shard applies it.
            logger.warning(
                "shard %d: no replica acknowledged %s within %g s; it is applied on restart",
                shard,
                method,
                self.config.shard_timeout_s,
            )
            return None
        raise ShardUnavailable(f"no replica of shard {shard} took the write: {errors[0]}")

    def _background_done(self, call: asyncio.Future[Any]) -> None:
        self._background.discard(call)
        if not call.cancelled() and call.exception() is not None:
            logger.warning("a shard replica failed a write: %s", call.exception())

    async def ready(self) -> list[dict[str, Any]]:
        """Every replica's state, shard by shard, waiting for those still rebuilding (benchmarks, tests)."""
        return list(await asyncio.gather(*(actor.ready.remote() for actor in itertools.chain(*self.replicas))))

    async def health(self, timeout_s: float) -> list[list[dict[str, Any]]]:
        """Each replica's state as /readyz shows it: ready (with its faces and node) or unavailable, for
        instance still rebuilding after a restart."""

        async def probe(actor: Any) -> dict[str, Any]:
            try:
                return {"state": "ready", **await asyncio.wait_for(actor.ready.remote(), timeout_s)}
            except self._unanswered as error:
                return {"state": "unavailable", "why": type(error).__name__}

        states = iter(await asyncio.gather(*(probe(actor) for actor in itertools.chain(*self.replicas))))
        return [[next(states) for _ in replicas] for replicas in self.replicas]

    # ---- writes -------------------------------------------------------------------------------

    async def add(self, faces: Sequence[FaceRecord]) -> None:
        """Index faces already durable in the store."""
        groups: dict[tuple[str, int], list[FaceRecord]] = {}
        for face in faces:
            groups.setdefault((face.gallery, shard_of(face.gallery, face.face_id, self.num_shards)), []).append(face)
        writes = []
        for (gallery, shard), group in groups.items():
            face_ids = [f.face_id for f in group]
            vectors, metas = np.stack([f.facen for f in group]), [f.meta for f in group]
            writes.append(self._write(shard, "add", gallery, face_ids, vectors, metas, touches=(gallery, face_ids)))
        await asyncio.gather(*writes)

    async def remove(self, gallery: str, face_id: int) -> bool:
        shard = shard_of(gallery, face_id, self.num_shards)
        return bool(await self._write(shard, "remove", gallery, face_id, touches=(gallery, [face_id])))

    async def update_meta(self, gallery: str, face_id: int, meta: dict[str, Any]) -> bool:
        shard = shard_of(gallery, face_id, self.num_shards)
        return bool(await self._write(shard, "update_meta", gallery, face_id, meta, touches=(gallery, [face_id])))

    async def refresh(self, gallery: str, face_ids: Sequence[int]) -> None:
        """Make every replica hold these faces as the store holds them now (IndexShard.refresh)."""
        groups: dict[int, list[int]] = {}
        for face_id in face_ids:
            groups.setdefault(shard_of(gallery, face_id, self.num_shards), []).append(face_id)
        await asyncio.gather(
            *(self._write(shard, "refresh", gallery, ids, touches=(gallery, ids)) for shard, ids in groups.items())
        )

    def refresh_later(self, gallery: str, face_ids: Sequence[int]) -> None:
        """After a store write that failed without saying whether it landed (Cassandra's timeouts): refresh
        these faces from the store in the background, retrying while the store is still unavailable."""
        task = asyncio.get_running_loop().create_task(self._refresh_until_done(gallery, list(face_ids)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_until_done(self, gallery: str, face_ids: list[int]) -> None:
        for _ in range(REFRESH_ATTEMPTS):
            await asyncio.sleep(REFRESH_EVERY_S)
            try:
                await self.refresh(gallery, face_ids)
                return
            except FacegridError as error:  # the store or a shard still down: try again
                logger.info("could not yet refresh %d faces of %r from the store: %s", len(face_ids), gallery, error)
        logger.warning(
            "gave up refreshing %d faces of %r from the store; their shards load them on their next start",
            len(face_ids),
            gallery,
        )

    async def drop_gallery(self, gallery: str) -> None:
        await asyncio.gather(
            *(self._write(s, "drop_gallery", gallery, touches=(gallery, None)) for s in range(self.num_shards))
        )

    async def configure(self, tuning: dict[str, Any]) -> None:
        """Apply index tuning (``IndexConfig.TUNABLE`` fields) here and on every replica of every shard.
        Only values that differ from this router's are sent: ``start`` gave the replicas the settings' own
        values, and waiting here on shards still rebuilding would hold the Ingress's start up."""
        changed = {
            name: value for name, value in IndexConfig.tuning(tuning).items() if getattr(self.config, name) != value
        }
        if not changed:
            return
        self.config = self.config.model_copy(update=changed)
        sent_at_ns = time.time_ns()
        await asyncio.gather(*(self._write(s, "configure", changed, sent_at_ns) for s in range(self.num_shards)))
        self._dispatch()

    # ---- reads --------------------------------------------------------------------------------

    async def count(self, gallery: str) -> int:
        return sum(await asyncio.gather(*(self._read(s, "count", gallery) for s in range(self.num_shards))))

    async def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for shard_counts in await asyncio.gather(*(self._read(s, "counts") for s in range(self.num_shards))):
            for gallery, count in shard_counts.items():
                totals[gallery] = totals.get(gallery, 0) + count
        return totals

    async def list_ids(
        self, gallery: str, face_filter: FaceFilter | None, after_id: int | None, limit: int, descending: bool = False
    ) -> list[int]:
        """Ids passing the filter in id order after ``after_id``: each shard's first ``limit``, merged."""
        parts = await asyncio.gather(
            *(
                self._read(s, "list_ids", gallery, face_filter, after_id, limit, descending)
                for s in range(self.num_shards)
            )
        )
        merged = heapq.merge(*(part.tolist() for part in parts), reverse=descending)
        return list(itertools.islice(merged, limit))

    async def search(
        self,
        gallery: str,
        query: np.ndarray,
        top_k: int,
        face_filter: FaceFilter | None = None,
        min_cosine: float = -np.inf,
    ) -> list[tuple[int, float]]:
        """The exact top-k (face id, cosine) in the gallery, best first, with cosine >= ``min_cosine``."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        pending = _Pending(
            gallery, np.asarray(query, np.float32).reshape(-1), top_k, face_filter, min_cosine, loop.create_future()
        )
        self._pending.append(pending)
        self._dispatch()
        hits: list[tuple[int, float]] = await pending.future
        record_search_latency(gallery, time.perf_counter() - started)
        return hits

    def _dispatch(self) -> None:
        """Send what is queued while the shards have room for another batch."""
        room = self.config.batches_in_flight * self.config.replicas_per_shard
        while self._pending and len(self._batches) < room:
            batch, self._pending = self._pending[: self.config.max_batch], self._pending[self.config.max_batch :]
            self.batches_by_size[len(batch)] += 1
            record_batch_size(len(batch))
            task = asyncio.get_running_loop().create_task(self._run_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)
        record_pending(len(self._pending))

    def _batch_done(self, task: asyncio.Task[Any]) -> None:
        self._batches.discard(task)
        self._dispatch()

    async def _run_batch(self, batch: list[_Pending]) -> None:
        requests = [(p.gallery, p.query, p.top_k, p.face_filter) for p in batch]
        try:
            per_shard = await asyncio.gather(*(self._read(s, "search_many", requests) for s in range(self.num_shards)))
        except BaseException as error:  # noqa: BLE001 - every waiting caller must hear of the failure
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for position, pending in enumerate(batch):
            failure = next((shard[position] for shard in per_shard if isinstance(shard[position], Exception)), None)
            if failure is not None:
                if not pending.future.done():
                    pending.future.set_exception(failure)
                continue
            ranked = heapq.merge(
                *(zip(shard[position][0].tolist(), shard[position][1].tolist()) for shard in per_shard),
                key=lambda hit: hit[0],
                reverse=True,
            )
            hits = [
                (int(face_id), float(score))
                for score, face_id in itertools.islice(ranked, pending.top_k)
                if score >= pending.min_cosine and score > -np.inf
            ]
            if not pending.future.done():
                pending.future.set_result(hits)


async def _after(earlier: set[asyncio.Future[Any]], remote: Any, args: tuple[Any, ...]) -> Any:
    await asyncio.wait(earlier)
    return await remote(*args)
