"""Face store figures, measured side by side in one run against a real Cassandra (cluster/services.sh start).

    python -m bench.stores [--faces 200000] [--single 2000] [--port 9042] [--ring-faces 20000]

1. bulk add (``add_faces`` in batches of 1000, at most ``max_in_flight`` requests in flight) vs one call
   per face, faces/s and their ratio;
2. rebuild of 2 shard actors from Cassandra: the time until both have loaded every face;
3. with ``--ring-faces N`` (and ``cluster/services.sh start-ring``): bulk add and rebuild of N faces on the
   three-node ring at replication factor 3 (LOCAL_QUORUM) beside the single node at 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

import numpy as np
from cassandra.cluster import Cluster

from index import IndexConfig, ShardRouter
from store import FaceRecord, add_face
from store.cassandra import CassandraFaceStore
from store.config import CassandraSettings
from tests.factories import clustered_unit_vectors, random_meta

RING_HOSTS, RING_PORT = ["127.0.0.1", "127.0.0.2", "127.0.0.3"], 9142  # cluster/services.sh start-ring


def bulk_add_rate(store: CassandraFaceStore, gallery: str, vectors: np.ndarray, metas: list[dict]) -> float:
    """Faces/s of ``add_faces`` in batches of 1000 into a new gallery."""
    store.create_gallery(gallery)
    started = time.perf_counter()
    for start in range(0, len(vectors), 1000):
        errors = store.add_faces(
            [
                FaceRecord(gallery, start + i, v, m)
                for i, (v, m) in enumerate(zip(vectors[start : start + 1000], metas[start : start + 1000]))
            ]
        )
        assert not any(errors), next(e for e in errors if e)
    return len(vectors) / (time.perf_counter() - started)


def rebuild(store: CassandraFaceStore, name_prefix: str) -> tuple[list[dict], float]:
    """Start 2 shard actors on ``store`` (Ray must be running); (their ready states, wall seconds)."""
    started = time.perf_counter()
    router = ShardRouter.start(store, IndexConfig(num_shards=2, cpus_per_shard=0.5), name_prefix=name_prefix)
    ready = asyncio.run(router.ready())
    return ready, time.perf_counter() - started


def drop(hosts: list[str], port: int, keyspace: str) -> None:
    cluster = Cluster(hosts, port=port, protocol_version=5)
    cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cluster.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200_000, help="faces written in bulk, then rebuilt")
    parser.add_argument("--single", type=int, default=2000, help="faces written one call at a time")
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("--ring-faces", type=int, default=0, help="also compare the ring at RF=3 on this many")
    args = parser.parse_args(argv)
    keyspace = f"facegrid_bench_{uuid.uuid4().hex[:8]}"
    store = CassandraFaceStore(CassandraSettings(port=args.port, keyspace=keyspace, max_in_flight=64), num_shards=2)
    ring = alone = None
    if args.ring_faces:
        # One conditional batch in flight on both: with 4 or more, batches for the same partition contend in
        # Paxos and the ring answered CAS_WRITE_UNKNOWN on 2 shared cores (the single node does not).
        ring_settings = CassandraSettings(
            hosts=RING_HOSTS, port=RING_PORT, keyspace=keyspace, replication_factor=3, max_in_flight=1
        )
        ring = CassandraFaceStore(ring_settings, num_shards=2)
        alone_settings = CassandraSettings(port=args.port, keyspace=f"{keyspace}_rf1", max_in_flight=1)
        alone = CassandraFaceStore(alone_settings, num_shards=2)
    import ray

    try:
        store.create_gallery("single")
        single = clustered_unit_vectors(args.single, 128, seed=50)
        started = time.perf_counter()
        for i, vector in enumerate(single):
            add_face(store, FaceRecord("single", i, vector, {"n": i}))
        single_rate = args.single / (time.perf_counter() - started)
        bulk_rate = bulk_add_rate(
            store, "bulk", clustered_unit_vectors(args.faces, 128, seed=51), random_meta(args.faces, seed=52)
        )
        print("1. Cassandra writes (one node on this machine, 2 shards)")
        print(f"   one call per face   {single_rate:10,.0f} faces/s   ({args.single:,} faces)")
        print(
            f"   bulk, 1000 a call   {bulk_rate:10,.0f} faces/s   ({args.faces:,} faces)   "
            f"{bulk_rate / single_rate:.1f}x"
        )

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        ready, wall = rebuild(store, "bench")
        loaded = sum(r["faces"] for r in ready)
        per_shard = ", ".join(f"{r['rebuild_s']:.1f}" for r in ready)
        print(
            f"\n2. rebuild of 2 shard actors from Cassandra: {loaded:,} faces (single + bulk) in {wall:.1f} s "
            f"wall (per shard {per_shard} s, in parallel) = {loaded / wall:,.0f} faces/s"
        )

        if ring is not None and alone is not None:
            vectors = clustered_unit_vectors(args.ring_faces, 128, seed=53)
            metas = random_meta(args.ring_faces, seed=54)
            figures = {}
            for label, where, prefix in (
                ("one node, RF=1", alone, "bench-rf1"),
                ("three nodes, RF=3", ring, "bench-rf3"),
            ):
                add_rate = bulk_add_rate(where, "ringed", vectors, metas)
                _, rebuild_s = rebuild(where, prefix)
                figures[label] = (add_rate, args.ring_faces / rebuild_s)
            print(f"\n3. the ring: {args.ring_faces:,} faces, bulk add and rebuild of 2 shard actors, LOCAL_QUORUM")
            for label, (add_rate, rebuild_rate) in figures.items():
                print(f"   {label:18}  bulk add {add_rate:8,.0f} faces/s   rebuild {rebuild_rate:8,.0f} faces/s")
            (one_add, one_rebuild), (three_add, three_rebuild) = figures.values()
            add_ratio, rebuild_ratio = three_add / one_add, three_rebuild / one_rebuild
            print(f"   RF=3 / RF=1         bulk add {add_ratio:.2f}x          rebuild {rebuild_ratio:.2f}x")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        store.close()
        drop(["127.0.0.1"], args.port, keyspace)
        if ring is not None and alone is not None:
            ring.close()
            drop(RING_HOSTS, RING_PORT, keyspace)
            alone.close()
            drop(["127.0.0.1"], args.port, f"{keyspace}_rf1")


if __name__ == "__main__":
    main()
