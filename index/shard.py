"""``IndexShard``: the Ray actor holding one shard of every gallery.

On start (and on every restart Ray makes after a crash) a shard rebuilds itself from the face store,
reading only its own ``(gallery, shard)`` partitions, so rebuild time follows the shard's size, not the
cluster's. The class is plain Python; ``shard_actor`` wraps it as a restartable actor.
"""

from __future__ import annotations

import logging
import os
import time

import faiss
import numpy as np
import threadpoolctl

from store.base import FaceStore
from store.errors import ShardUnavailable

from . import huge_pages
from .config import IndexConfig
from .filters import FaceFilter
from .gallery_index import GalleryIndex
from .metrics import record_gallery_faces

REBUILD_PAGE = 5000

logger = logging.getLogger(__name__)


class IndexShard:
    def __init__(self, shard_id: int, store: FaceStore, config: IndexConfig):
        self.shard_id, self.store, self.config = shard_id, store, config
        self.threads = config.threads_per_shard or threads_for_this_node(config)
        # FAISS's OpenMP and both BLAS libraries (numpy's and FAISS's own) use the same share of the node.
        faiss.omp_set_num_threads(self.threads)
        threadpoolctl.threadpool_limits(self.threads)
        faiss.cvar.distance_compute_blas_threshold = config.blas_threshold
        self.galleries: dict[str, GalleryIndex] = {}
        self.rebuild_seconds = self.rebuild()

    def rebuild(self) -> float:
        """Load this shard's partition of every gallery from the store; returns the seconds it took."""
        started = time.perf_counter()
        self.galleries = {}
        for gallery in self.store.list_galleries():
            after = None
            while True:
                page = self.store.scan_partition(gallery.name, self.shard_id, after_id=after, limit=REBUILD_PAGE)
                if not page:
                    break
                self.add(gallery.name, [f.face_id for f in page], np.stack([f.facen for f in page]),
                         [f.meta for f in page])
                after = page[-1].face_id
        return time.perf_counter() - started

    def ready(self) -> dict:
        import ray

        return {"shard": self.shard_id, "galleries": len(self.galleries),
                "faces": sum(g.count for g in self.galleries.values()),
                "index_bytes": sum(g.memory_bytes() for g in self.galleries.values()),
                "rebuild_s": self.rebuild_seconds, "threads": self.threads,
                "node": ray.get_runtime_context().get_node_id(), "huge_page_bytes": huge_pages.huge_page_bytes()}

    def add(self, gallery: str, face_ids: list[int], vectors: np.ndarray, metas: list[dict]) -> int:
        vectors = np.asarray(vectors, np.float32)
        index = self.galleries.get(gallery)
        if index is None:
            index = self.galleries[gallery] = GalleryIndex(vectors.shape[1], self.config)
        fresh = [i for i, face_id in enumerate(face_ids) if face_id not in index.slot_of]
        if len(fresh) < len(face_ids):
            # A retried add (replica catching up, repair from the store) must not duplicate a face.
            face_ids = [face_ids[i] for i in fresh]
            vectors, metas = vectors[fresh], [metas[i] for i in fresh]
        if face_ids:
            index.add(face_ids, vectors, metas)
        record_gallery_faces(gallery, self.shard_id, index.count)
        return index.count

    def remove(self, gallery: str, face_id: int) -> bool:
        index = self.galleries.get(gallery)
        removed = index is not None and index.remove(face_id)
        if removed:
            record_gallery_faces(gallery, self.shard_id, index.count)
        return removed

    def update_meta(self, gallery: str, face_id: int, meta: dict) -> bool:
        index = self.galleries.get(gallery)
        return index is not None and index.update_meta(face_id, meta)

    def drop_gallery(self, gallery: str) -> None:
        if self.galleries.pop(gallery, None) is not None:
            record_gallery_faces(gallery, self.shard_id, 0)

    def count(self, gallery: str) -> int:
        index = self.galleries.get(gallery)
        return 0 if index is None else index.count

    def counts(self) -> dict[str, int]:
        return {name: index.count for name, index in self.galleries.items()}

    def search_many(self, requests: list[tuple[str, np.ndarray, int, FaceFilter | None]]) -> list:
        """Answer many (gallery, query, top_k, filter) requests at once: unfiltered queries to the same
        gallery are searched as one batch, filtered ones one by one (each has its own selector). Returns
        one (scores, ids) pair of 1-d arrays per request, or the ShardUnavailable that request met: one
        query's failure is its own answer, not its batch's."""
        results: list = [None] * len(requests)
        batches: dict[str, list[int]] = {}
        for position, (gallery, query, top_k, face_filter) in enumerate(requests):
            index = self.galleries.get(gallery)
            if index is None or index.count == 0:
                results[position] = (np.zeros(0, np.float32), np.zeros(0, np.uint64))
            elif face_filter is None or face_filter.is_empty:
                batches.setdefault(gallery, []).append(position)
            else:
                results[position] = self._search_alone(index, requests[position])
        for gallery, positions in batches.items():
            index = self.galleries[gallery]
            try:
                queries = np.stack([np.asarray(requests[p][1], np.float32).reshape(-1) for p in positions])
                scores, ids = index.search(queries, max(requests[p][2] for p in positions))
            except Exception:  # noqa: BLE001 - find the query that failed; the others still get answers
                for position in positions:
                    results[position] = self._search_alone(index, requests[position])
                continue
            for row, position in enumerate(positions):
                wanted = requests[position][2]
                results[position] = (scores[row, :wanted], ids[row, :wanted])
        return results

    def _search_alone(self, index: GalleryIndex, request: tuple):
        _, query, top_k, face_filter = request
        try:
            scores, ids = index.search(query, top_k, face_filter)
        except Exception as error:  # noqa: BLE001 - answered to that request alone, as STORAGE_ERROR
            logger.exception("shard %d failed a search", self.shard_id)
            return ShardUnavailable(f"shard {self.shard_id} could not answer this search "
                                    f"({type(error).__name__})")
        return scores[0], ids[0]

    def list_ids(self, gallery: str, face_filter: FaceFilter | None, after_id: int | None, limit: int,
                 descending: bool = False) -> np.ndarray:
        index = self.galleries.get(gallery)
        return np.zeros(0, np.uint64) if index is None else index.list_ids(face_filter, after_id, limit, descending)

    def configure(self, tuning: dict) -> None:
        """Apply index tuning (``IndexConfig.TUNABLE`` fields, already checked) to every gallery of the shard."""
        self.config = self.config.model_copy(update=tuning)
        faiss.cvar.distance_compute_blas_threshold = self.config.blas_threshold
        for index in self.galleries.values():
            index.config = self.config


def threads_for_this_node(config: IndexConfig) -> int:
    """This node's cores divided among the shard replicas spread over the nodes that can hold them."""
    import ray

    replicas = config.num_shards * config.replicas_per_shard
    if not ray.is_initialized():        # a shard used in-process (tests, benchmarks)
        return max(1, (os.cpu_count() or 1) // replicas)
    node_id = ray.get_runtime_context().get_node_id()
    wanted = set(config.shard_bundle())
    nodes = [node for node in ray.nodes()
             if node["Alive"] and wanted <= {name for name, amount in node["Resources"].items() if amount > 0}]
    cores = next((node["Resources"].get("CPU", 1) for node in nodes if node["NodeID"] == node_id), os.cpu_count())
    replicas_here = -(-replicas // max(len(nodes), 1))
    return max(1, int(cores // replicas_here))


def shard_name(name_prefix: str, shard_id: int) -> str:
    """The name of a shard's placement group, and the stem of its replicas' actor names."""
    return f"{name_prefix}-shard-{shard_id}"


def replica_name(name_prefix: str, shard_id: int, replica: int) -> str:
    return f"{shard_name(name_prefix, shard_id)}-{replica}"


def shard_actor(shard_id: int, replica: int, store: FaceStore, config: IndexConfig, *, name_prefix: str = "facegrid",
                detached: bool = False):
    """Start (or find) the named, restartable actor for one replica of one shard.

    Ray restarts a crashed shard without limit and retries calls made to it meanwhile; the restart runs
    ``__init__`` again, which rebuilds the shard from the store. ``detached`` keeps shards alive beyond
    the process that created them (the service); tests leave them tied to the driver. Lone replicas are
    spread over the nodes; the replicas of one shard share a placement group that spreads them over
    distinct nodes, so that losing a node leaves every shard a live replica whenever the cluster has
    enough nodes (a soft spread: on fewer nodes they still start).
    """
    import ray

    if config.replicas_per_shard > 1:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = shard_placement_group(shard_name(name_prefix, shard_id), config, detached)
        placement = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=replica)
    else:
        placement = "SPREAD"
    return ray.remote(IndexShard).options(
        name=replica_name(name_prefix, shard_id, replica), get_if_exists=True,
        lifetime="detached" if detached else None, max_restarts=-1, max_task_retries=-1,
        num_cpus=config.cpus_per_shard, resources=config.shard_resources, scheduling_strategy=placement,
        # env_vars merge with the job's runtime environment rather than replace it.
        runtime_env={"env_vars": huge_pages.environment()} if config.huge_pages else None,
    ).remote(shard_id, store, config)


def shard_placement_group(name: str, config: IndexConfig, detached: bool):
    """The named placement group of one shard's replicas: found if it exists (another ingress replica,
    or an earlier start, made it), else created."""
    import ray
    from ray.util import get_placement_group
    from ray.util.placement_group import placement_group

    try:
        return get_placement_group(name)
    except ValueError:
        pass
    try:
        return placement_group([config.shard_bundle()] * config.replicas_per_shard, strategy="SPREAD", name=name,
                               lifetime="detached" if detached else None)
    except ray.exceptions.RaySystemError:
        return get_placement_group(name)     # made by a concurrent caller between the lookup and here
