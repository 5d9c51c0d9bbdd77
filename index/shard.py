"""``IndexShard``: the Ray actor holding one shard of every gallery.

On start (and on every restart Ray makes after a crash) a shard replica loads its latest index snapshot
(index/snapshot.py) and brings it up to date from the store's change log: the faces added, patched or
deleted since the snapshot was taken, less a margin for writes then still on their way, are read back
as the store holds them now. Without a usable snapshot it rebuilds from the face store, reading only its
own ``(gallery, shard)`` partitions, so rebuild time follows the shard's size, not the cluster's. While
it runs it saves a snapshot every ``snapshot_interval_s`` in which it took writes, and soon after a
rebuild. The class is plain Python; ``shard_actor`` wraps it as a restartable actor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import threadpoolctl

from store.base import FaceStore

from . import coarse_scan, huge_pages
from .config import IndexConfig
from .errors import ShardUnavailable
from .filters import FaceFilter
from .gallery_index import GalleryIndex
from .metrics import record_gallery_faces
from .snapshot import Snapshot, SnapshotDirectory
from .torch_search import torch_device

REBUILD_PAGE = 5000

logger = logging.getLogger(__name__)


class IndexShard:
    def __init__(self, shard_id: int, store: FaceStore, config: IndexConfig, snapshot_path: Path | None = None):
        self.shard_id, self.store, self.config = shard_id, store, config
        self.tuning_sent_at_ns = 0
        self.threads = config.threads_per_shard or threads_for_this_node(config)
        # FAISS's OpenMP and both BLAS libraries (numpy's and FAISS's own) use the same share of the node.
        faiss.omp_set_num_threads(self.threads)
        threadpoolctl.threadpool_limits(self.threads)
        coarse_scan.use_threads(self.threads)
        # Small flat batches never reach FAISS's flat index (index/coarse_scan.py, index/matvec.py); those
        # that do take its BLAS path. faiss-cpu 1.15 compares queries x dimensions, not queries, with this global.
        faiss.cvar.distance_compute_blas_threshold = 1
        self.galleries: dict[str, GalleryIndex] = {}
        self.torch_device = torch_device(config.gpu_search, config.gpus_per_shard)
        self.snapshots = SnapshotDirectory(snapshot_path) if snapshot_path is not None else None
        self.last_snapshot: dict[str, Any] | None = None
        # Writes this replica holds that its snapshot lacks: after a rebuild, or a catch-up that re-read
        # faces, it saves soon, so that its next start is a load with little to replay.
        self.unsaved, self.replayed = False, 0
        self.started_at, started = time.time(), time.perf_counter()
        snapshot = self.snapshots.load(shard_id, store.store_id, config) if self.snapshots else None
        if snapshot is None:
            self.rebuild()
            self.started_from = "rebuild"
        else:
            self.started_from = "snapshot"
            self.replayed = self.catch_up(snapshot)
        self.rebuild_seconds = time.perf_counter() - started
        self._start_snapshot_timer()

    def rebuild(self) -> None:
        """Load this shard's partition of every gallery from the store."""
        self.galleries = {}
        for gallery in self.store.list_galleries():
            self._load_partition(gallery.name)

    def _load_partition(self, gallery: str) -> None:
        self.galleries.pop(gallery, None)
        after = None
        while True:
            page = self.store.scan_partition(gallery, self.shard_id, after_id=after, limit=REBUILD_PAGE)
            if not page:
                break
            self.add(gallery, [f.face_id for f in page], np.stack([f.facen for f in page]), [f.meta for f in page])
            after = page[-1].face_id

    def catch_up(self, snapshot: Snapshot) -> int:
        """Take the snapshot's galleries and apply what the store changed since; returns the faces re-read.
        A gallery the snapshot lacks, holds from an earlier life (deleted and created again), or whose
        changes the store's log no longer reaches back to, is loaded whole from the store instead."""
        since = snapshot.stamp - self.config.snapshot_replay_margin_s
        self.galleries, replayed = {}, 0
        for record in self.store.list_galleries():
            saved = snapshot.galleries.get(record.name)
            changed = None
            if saved is not None and snapshot.generations.get(record.name) == record.created_at:
                changed = self.store.changed_since(record.name, self.shard_id, since)
            if saved is None or changed is None:
                self._load_partition(record.name)
                continue
            saved.search_on(self.torch_device)
            self.galleries[record.name] = saved
            self._replay(record.name, saved, sorted(changed))
            replayed += len(changed)
        for gallery, index in self.galleries.items():
            record_gallery_faces(gallery, self.shard_id, index.count)
        return replayed

    def refresh(self, gallery: str, face_ids: list[int]) -> None:
        """Hold each of ``face_ids`` as the store holds it now: after writes the store could not confirm (a
        timeout may or may not have landed), so that the index never lacks a face the store has."""
        index = self.galleries.get(gallery)
        if index is not None:
            self._replay(gallery, index, sorted(face_ids), settled=True)
            return
        stored = self.store.get_faces(gallery, face_ids, settled=True)
        if stored:
            faces = list(stored.values())
            self.add(gallery, [f.face_id for f in faces], np.stack([f.facen for f in faces]), [f.meta for f in faces])

    def _replay(self, gallery: str, index: GalleryIndex, face_ids: list[int], settled: bool = False) -> None:
        """Make the index hold each of ``face_ids`` exactly as the store does now (or not at all); ``settled``
        as in FaceStore.get_faces."""
        self.unsaved = self.unsaved or bool(face_ids)
        for start in range(0, len(face_ids), REBUILD_PAGE):
            chunk = face_ids[start : start + REBUILD_PAGE]
            stored = self.store.get_faces(gallery, chunk, settled)
            fresh = []
            for face_id in chunk:
                face, held = stored.get(face_id), index.vector(face_id)
                if held is not None and face is not None and np.array_equal(held, face.facen):
                    index.update_meta(face_id, face.meta)
                    continue
                if held is not None:  # deleted, or deleted and added again with another vector
                    index.remove(face_id)
                if face is not None:
                    fresh.append(face)
            if fresh:
                self.add(
                    gallery, [f.face_id for f in fresh], np.stack([f.facen for f in fresh]), [f.meta for f in fresh]
                )

    # ---- snapshots ----------------------------------------------------------------------------

    def save_snapshot(self, only_if_unsaved: bool = False) -> dict[str, Any] | None:
        """Save every gallery of this replica as its current snapshot; returns what was saved. Searches
        wait meanwhile (an actor does one thing at a time), and the state saved is the one between two
        calls, so the stamp taken first is earlier than any write the snapshot lacks."""
        if self.snapshots is None or (only_if_unsaved and not self.unsaved):
            return None
        started, stamp = time.perf_counter(), time.time()
        generations = {g.name: g.created_at for g in self.store.list_galleries()}
        galleries = {name: index for name, index in self.galleries.items() if name in generations}
        try:
            path = self.snapshots.save(
                Snapshot(stamp, galleries, generations), self.shard_id, self.store.store_id, self.config
            )
            for gallery in galleries:
                self.store.prune_changes(gallery, self.shard_id)
        except Exception:  # noqa: BLE001 - a failed save (disk full...) leaves the last one; serving goes on
            logger.exception("shard %d could not save its index snapshot", self.shard_id)
            return None
        self.unsaved = False
        self.last_snapshot = {
            "path": str(path),
            "stamp": stamp,
            "seconds": time.perf_counter() - started,
            "faces": sum(index.count for index in galleries.values()),
        }
        return self.last_snapshot

    def _start_snapshot_timer(self) -> None:
        """Under Ray, a thread asks this actor, through its own queue, to save when it has unsaved writes."""
        import ray

        if self.snapshots is None or not ray.is_initialized():
            return
        try:
            actor = ray.get_runtime_context().current_actor
        except RuntimeError:  # an IndexShard used in a driver or a task, not as an actor
            return

        def tick() -> None:
            wait = 1.0 if self.unsaved else self.config.snapshot_interval_s
            while True:
                time.sleep(wait)
                actor.save_snapshot.remote(only_if_unsaved=True)
                wait = self.config.snapshot_interval_s

        threading.Thread(target=tick, name="snapshot-timer", daemon=True).start()

    def ready(self) -> dict[str, Any]:
        import ray

        return {
            "shard": self.shard_id,
            "galleries": len(self.galleries),
            "faces": sum(g.count for g in self.galleries.values()),
            "index_bytes": sum(g.memory_bytes() for g in self.galleries.values()),
            "coded_faces": sum(len(g.codes) for g in self.galleries.values() if g.codes is not None),
            "started_at": self.started_at,
            "rebuild_s": self.rebuild_seconds,
            "started_from": self.started_from,
            "replayed": self.replayed,
            "threads": self.threads,
            "tuning": self.config.current_tuning(),
            "search_device": self.torch_device or "cpu",
            "snapshot_age_s": None if self.last_snapshot is None else time.time() - self.last_snapshot["stamp"],
            "node": ray.get_runtime_context().get_node_id(),
            "huge_page_bytes": huge_pages.huge_page_bytes(),
        }

    def add(self, gallery: str, face_ids: list[int], vectors: np.ndarray, metas: list[dict[str, Any]]) -> int:
        vectors = np.asarray(vectors, np.float32)
        index = self.galleries.get(gallery)
        if index is None:
            index = self.galleries[gallery] = GalleryIndex(vectors.shape[1], self.config, self.torch_device)
        fresh = [i for i, face_id in enumerate(face_ids) if face_id not in index.slot_of]
        if len(fresh) < len(face_ids):
            # A retried add (replica catching up, repair from the store) must not duplicate a face.
            face_ids = [face_ids[i] for i in fresh]
            vectors, metas = vectors[fresh], [metas[i] for i in fresh]
        if face_ids:
            index.add(face_ids, vectors, metas)
            self.unsaved = True
        record_gallery_faces(gallery, self.shard_id, index.count)
        return index.count

    def remove(self, gallery: str, face_id: int) -> bool:
        index = self.galleries.get(gallery)
        if index is None or not index.remove(face_id):
            return False
        self.unsaved = True
        record_gallery_faces(gallery, self.shard_id, index.count)
        return True

    def update_meta(self, gallery: str, face_id: int, meta: dict[str, Any]) -> bool:
        index = self.galleries.get(gallery)
        updated = index is not None and index.update_meta(face_id, meta)
        self.unsaved = self.unsaved or updated
        return updated

    def drop_gallery(self, gallery: str) -> None:
        if self.galleries.pop(gallery, None) is not None:
            self.unsaved = True
            record_gallery_faces(gallery, self.shard_id, 0)

    def count(self, gallery: str) -> int:
        index = self.galleries.get(gallery)
        return 0 if index is None else index.count

    def counts(self) -> dict[str, int]:
        return {name: index.count for name, index in self.galleries.items()}

    def search_many(self, requests: list[tuple[str, np.ndarray, int, FaceFilter | None]]) -> list[Any]:
        """Answer many (gallery, query, top_k, filter) requests at once: unfiltered queries to the same
        gallery are searched as one batch, filtered ones one by one (each has its own selector). Returns
        one (scores, ids) pair of 1-d arrays per request, or the ShardUnavailable that request met: one
        query's failure is its own answer, not its batch's."""
        results: list[Any] = [None] * len(requests)
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

    def _search_alone(
        self, index: GalleryIndex, request: tuple[str, np.ndarray, int, FaceFilter | None]
    ) -> tuple[np.ndarray, np.ndarray] | ShardUnavailable:
        _, query, top_k, face_filter = request
        try:
            scores, ids = index.search(query, top_k, face_filter)
        except Exception as error:  # noqa: BLE001 - answered to that request alone, as STORAGE_ERROR
            logger.exception("shard %d failed a search", self.shard_id)
            return ShardUnavailable(f"shard {self.shard_id} could not answer this search ({type(error).__name__})")
        return scores[0], ids[0]

    def list_ids(
        self, gallery: str, face_filter: FaceFilter | None, after_id: int | None, limit: int, descending: bool = False
    ) -> np.ndarray:
        index = self.galleries.get(gallery)
        return np.zeros(0, np.uint64) if index is None else index.list_ids(face_filter, after_id, limit, descending)

    def configure(self, tuning: dict[str, Any], sent_at_ns: int = 0) -> None:
        """Apply index tuning (``IndexConfig.TUNABLE`` fields, already checked) to every gallery of the shard,
        unless tuning sent later (``sent_at_ns``, the sender's clock) is already applied: this replica takes
        calls as they arrive, so a newer tuning can arrive before an older one."""
        if sent_at_ns < self.tuning_sent_at_ns:
            return
        self.tuning_sent_at_ns = sent_at_ns
        self.config = self.config.model_copy(update=tuning)
        for index in self.galleries.values():
            index.config = self.config


def threads_for_this_node(config: IndexConfig) -> int:
    """This node's cores divided among the shard replicas spread over the nodes that can hold them."""
    import ray

    replicas = config.num_shards * config.replicas_per_shard
    if not ray.is_initialized():  # a shard used in-process (tests, benchmarks)
        return max(1, (os.cpu_count() or 1) // replicas)
    node_id = ray.get_runtime_context().get_node_id()
    wanted = set(config.shard_bundle())
    nodes = [
        node
        for node in ray.nodes()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
        if node["Alive"] and wanted <= {name for name, amount in node["Resources"].items() if amount > 0}
    ]
    cores = next((node["Resources"].get("CPU", 1) for node in nodes if node["NodeID"] == node_id), os.cpu_count() or 1)
    replicas_here = -(-replicas // max(len(nodes), 1))
    return max(1, int(cores // replicas_here))


def save_snapshots_of_running_shards(timeout_s: float = 300, retry_after_s: float = 2.0) -> int:
    """Ask every shard replica on this Ray cluster to save what its snapshot lacks, and wait (a planned
    stop: the next start then has nothing to replay). A replica whose save failed (the store it reads the
    galleries from unreachable for a moment, as after a Cassandra node's restart) is asked again until
    ``timeout_s``. Returns how many replicas saved."""
    import ray

    replicas: list[Any] = [ray.get_actor(name, namespace=namespace) for name, namespace in named_replicas().values()]
    deadline, saved = time.monotonic() + timeout_s, 0
    while replicas:
        calls = {replica.save_snapshot.remote(only_if_unsaved=True): replica for replica in replicas}
        done, _ = ray.wait(list(calls), num_returns=len(calls), timeout=max(0.0, deadline - time.monotonic()))
        replicas = []
        for call in done:
            try:
                saved += ray.get(call) is not None
            except ray.exceptions.RayActorError:  # a replica that died meanwhile rebuilds or loads on restart
                pass
            except ray.exceptions.RayTaskError as error:
                logger.warning("a shard replica could not save its snapshot, asking again: %s", error)
                replicas.append(calls[call])
        if replicas and time.monotonic() + retry_after_s >= deadline:
            logger.warning("%d shard replicas could not save their snapshots before the stop", len(replicas))
            break
        if replicas:
            time.sleep(retry_after_s)
    return saved


def shard_name(name_prefix: str, shard_id: int) -> str:
    """The stem of a shard's placement group and replica names."""
    return f"{name_prefix}-shard-{shard_id}"


def replica_name(name_prefix: str, shard_id: int, replica: int) -> str:
    """A replica's lasting name: its snapshot directory's."""
    return f"{shard_name(name_prefix, shard_id)}-{replica}"


def shard_fingerprint(store_id: str, config: IndexConfig) -> str:
    """What a running shard replica was started with: the store it reads and the index settings that
    cannot change at run time. Shard actors are detached, so they outlive the service that started them;
    a service started again over another store (a new embedded file, a new keyspace) or with other index
    settings must not take over replicas holding the old ones' galleries."""
    fixed = config.model_dump(mode="json", exclude=set(IndexConfig.TUNABLE))
    text = json.dumps({"store": store_id, "index": fixed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def actor_name(name_prefix: str, shard_id: int, replica: int, fingerprint: str) -> str:
    """A replica's Ray actor name: its lasting name and what it was started with."""
    return f"{replica_name(name_prefix, shard_id, replica)}-{fingerprint}"


_ACTOR_NAME = re.compile(r"(?P<prefix>.+)-shard-(?P<shard>\d+)-(?P<replica>\d+)(?:-(?P<fingerprint>[0-9a-f]+))?")


def named_replicas(name_prefix: str | None = None) -> dict[str, tuple[str, str]]:
    """Every shard replica actor on this Ray cluster (of one application when ``name_prefix`` is given):
    its fingerprint-free replica name -> (actor name, namespace)."""
    import ray

    found = {}
    for info in ray.util.list_named_actors(all_namespaces=True):
        match = _ACTOR_NAME.fullmatch(info["name"])
        if match and name_prefix in (None, match["prefix"]):
            lasting = replica_name(match["prefix"], int(match["shard"]), int(match["replica"]))
            found[lasting] = (info["name"], info["namespace"])
    return found


def retire_shards(name_prefix: str | None = None, keep_fingerprint: str | None = None) -> int:
    """Kill the shard replicas (of one application, or all) other than those started with
    ``keep_fingerprint``, and free their placement groups; returns how many were killed. Their galleries
    live on in the store and in their snapshots, which the next replicas load and bring up to date."""
    import ray
    from ray.util import get_placement_group, remove_placement_group

    killed, groups = 0, set()
    for name, namespace in named_replicas(name_prefix).values():
        match = _ACTOR_NAME.fullmatch(name)
        assert match is not None  # named_replicas matched it
        if keep_fingerprint is not None and match["fingerprint"] == keep_fingerprint:
            continue
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            killed += 1
        except ValueError:  # gone meanwhile
            pass
        shard_id, fingerprint = int(match["shard"]), match["fingerprint"]
        # Replicas started before names carried a fingerprint share a group named after the shard alone.
        groups.add(
            placement_group_name(match["prefix"], shard_id, fingerprint)
            if fingerprint
            else shard_name(match["prefix"], shard_id)
        )
    for group in groups:
        try:
            remove_placement_group(get_placement_group(group))
        except ValueError:
            pass
    if killed:
        logger.info("retired %d shard replicas started over another store or with other index settings", killed)
    return killed


def placement_group_name(name_prefix: str, shard_id: int, fingerprint: str) -> str:
    return f"{shard_name(name_prefix, shard_id)}-{fingerprint}"


def shard_actor(
    shard_id: int,
    replica: int,
    store: FaceStore,
    config: IndexConfig,
    *,
    name_prefix: str = "facegrid",
    detached: bool = False,
) -> Any:
    """Start (or find) the named, restartable actor for one replica of one shard.

    Ray restarts a crashed shard without limit and retries calls made to it meanwhile; the restart runs
    ``__init__`` again, which loads the replica's snapshot (from ``config.snapshot_dir`` when snapshots
    are on) or rebuilds the shard from the store. ``detached`` keeps shards alive beyond
    the process that created them (the service); tests leave them tied to the driver. Lone replicas are
    spread over the nodes; the replicas of one shard share a placement group that spreads them over
    distinct nodes, so that losing a node leaves every shard a live replica whenever the cluster has
    enough nodes (a soft spread: on fewer nodes they still start).
    """
    import ray

    fingerprint = shard_fingerprint(store.store_id, config)
    if config.replicas_per_shard > 1:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = shard_placement_group(placement_group_name(name_prefix, shard_id, fingerprint), config, detached)
        placement: PlacementGroupSchedulingStrategy | str = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=replica
        )
    else:
        placement = "SPREAD"
    return (
        ray.remote(IndexShard)
        .options(
            name=actor_name(name_prefix, shard_id, replica, fingerprint),
            get_if_exists=True,
            lifetime="detached" if detached else None,
            max_restarts=-1,
            max_task_retries=-1,
            # The router orders the writes that must stay ordered (index/write_order.py); Ray's in-order
            # queue stalls every later call from a caller one of whose calls was lost on the way.
            allow_out_of_order_execution=True,
            num_cpus=config.cpus_per_shard,
            num_gpus=config.gpus_per_shard,
            resources=config.shard_resources,
            scheduling_strategy=placement,
            # env_vars merge with the job's runtime environment rather than replace it.
            runtime_env={"env_vars": huge_pages.environment()} if config.huge_pages else None,
        )
        .remote(shard_id, store, config, snapshot_path(config, name_prefix, shard_id, replica))
    )


def snapshot_path(config: IndexConfig, name_prefix: str, shard_id: int, replica: int) -> Path | None:
    """Where one replica keeps its snapshots, or None when snapshots are off."""
    if not config.snapshots or config.snapshot_dir is None:
        return None
    return Path(config.snapshot_dir) / replica_name(name_prefix, shard_id, replica)


def shard_placement_group(name: str, config: IndexConfig, detached: bool) -> Any:
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
        return placement_group(
            [config.shard_bundle()] * config.replicas_per_shard,
            strategy="SPREAD",
            name=name,
            lifetime="detached" if detached else None,
        )
    except ray.exceptions.RaySystemError:
        return get_placement_group(name)  # made by a concurrent caller between the lookup and here
