"""``IndexShard``: the Ray actor holding one shard of every gallery.

On start (and on every restart Ray makes after a crash) a shard rebuilds itself from the face store,
reading only its own ``(gallery, shard)`` partitions, so rebuild time follows the shard's size, not the
cluster's. The class is plain Python; ``shard_actor`` wraps it as a restartable actor.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from store.base import FaceStore

from . import huge_pages
from .config import IndexConfig
from .filters import FaceFilter
from .gallery_index import GalleryIndex
from .metrics import record_gallery_faces

REBUILD_PAGE = 5000


class IndexShard:
    def __init__(self, shard_id: int, store: FaceStore, config: IndexConfig):
        self.shard_id, self.store, self.config = shard_id, store, config
        faiss.omp_set_num_threads(config.threads_per_shard)
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
                "faces": sum(g.count for g in self.galleries.values()), "rebuild_s": self.rebuild_seconds,
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

    def search_many(self, requests: list[tuple[str, np.ndarray, int, FaceFilter | None]]):
        """Answer many (gallery, query, top_k, filter) requests at once: unfiltered queries to the same
        gallery go to FAISS as one batch (BLAS), filtered ones one by one (each has its own selector).
        Returns one (scores, ids) pair of 1-d arrays per request."""
        results: list = [None] * len(requests)
        batches: dict[str, list[int]] = {}
        for position, (gallery, query, top_k, face_filter) in enumerate(requests):
            index = self.galleries.get(gallery)
            if index is None or index.count == 0:
                results[position] = (np.zeros(0, np.float32), np.zeros(0, np.uint64))
            elif face_filter is None or face_filter.is_empty:
                batches.setdefault(gallery, []).append(position)
            else:
                scores, ids = index.search(query, top_k, face_filter)
                results[position] = (scores[0], ids[0])
        for gallery, positions in batches.items():
            top_k = max(requests[p][2] for p in positions)
            queries = np.stack([np.asarray(requests[p][1], np.float32).reshape(-1) for p in positions])
            scores, ids = self.galleries[gallery].search(queries, top_k)
            for row, position in enumerate(positions):
                wanted = requests[position][2]
                results[position] = (scores[row, :wanted], ids[row, :wanted])
        return results

    def list_ids(self, gallery: str, face_filter: FaceFilter | None, after_id: int | None, limit: int,
                 descending: bool = False) -> np.ndarray:
        index = self.galleries.get(gallery)
        return np.zeros(0, np.uint64) if index is None else index.list_ids(face_filter, after_id, limit, descending)

    def configure(self, **tuning) -> None:
        """Broadcast tuning (e.g. ``hnsw_ef_search``, ``ivf_nprobe``) to every gallery of the shard."""
        self.config = self.config.model_copy(update=tuning)
        for index in self.galleries.values():
            index.config = self.config


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
