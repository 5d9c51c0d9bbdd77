"""Face store figures, measured side by side in one run against a real Cassandra (cluster/services.sh start).

    python -m bench.stores [--faces 200000] [--single 2000] [--port 9042]

1. bulk add (``add_faces`` in batches of 1000, at most ``max_in_flight`` requests in flight) vs one call
   per face, faces/s and their ratio;
2. rebuild of 2 shard actors from Cassandra: the time until both have loaded every face.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid

from cassandra.cluster import Cluster

from index import IndexConfig, ShardRouter
from store import FaceRecord, add_face
from store.cassandra import CassandraFaceStore
from store.config import CassandraSettings
from tests.factories import clustered_unit_vectors, random_meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200_000, help="faces written in bulk, then rebuilt")
    parser.add_argument("--single", type=int, default=2000, help="faces written one call at a time")
    parser.add_argument("--port", type=int, default=9042)
    args = parser.parse_args(argv)
    keyspace = f"facegrid_bench_{uuid.uuid4().hex[:8]}"
    store = CassandraFaceStore(CassandraSettings(port=args.port, keyspace=keyspace, max_in_flight=64), num_shards=2)
    try:
        store.create_gallery("single")
        store.create_gallery("bulk")
        single = clustered_unit_vectors(args.single, 128, seed=50)
        started = time.perf_counter()
        for i, vector in enumerate(single):
            add_face(store, FaceRecord("single", i, vector, {"n": i}))
        single_rate = args.single / (time.perf_counter() - started)

        vectors = clustered_unit_vectors(args.faces, 128, seed=51)
        metas = random_meta(args.faces, seed=52)
        started = time.perf_counter()
        for start in range(0, args.faces, 1000):
            errors = store.add_faces(
                [
                    FaceRecord("bulk", start + i, v, m)
                    for i, (v, m) in enumerate(zip(vectors[start : start + 1000], metas[start : start + 1000]))
                ]
            )
            assert not any(errors), next(e for e in errors if e)
        bulk_rate = args.faces / (time.perf_counter() - started)
        print("1. Cassandra writes (one node on this machine, 2 shards)")
        print(f"   one call per face   {single_rate:10,.0f} faces/s   ({args.single:,} faces)")
        print(
            f"   bulk, 1000 a call   {bulk_rate:10,.0f} faces/s   ({args.faces:,} faces)   "
            f"{bulk_rate / single_rate:.1f}x"
        )

        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            started = time.perf_counter()
            router = ShardRouter.start(store, IndexConfig(num_shards=2, cpus_per_shard=0.5), name_prefix="bench")
            ready = asyncio.run(router.ready())
            wall = time.perf_counter() - started
        finally:
            ray.shutdown()
        loaded = sum(r["faces"] for r in ready)
        per_shard = ", ".join(f"{r['rebuild_s']:.1f}" for r in ready)
        print(
            f"\n2. rebuild of 2 shard actors from Cassandra: {loaded:,} faces (single + bulk) in {wall:.1f} s "
            f"wall (per shard {per_shard} s, in parallel) = {loaded / wall:,.0f} faces/s"
        )
    finally:
        store.close()
        cluster = Cluster(["127.0.0.1"], port=args.port, protocol_version=5)
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
        cluster.shutdown()


if __name__ == "__main__":
    main()
