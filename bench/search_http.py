"""1:N search as a client sees it, beside what one process can do with the same vectors (one run).

    python -m bench.search_http [--faces 1000000] [--clients 1,8,32,64] [--num-cpus N]
                                [--hnsw-faces 0] [--hnsw-ef-search 128,160] [--hnsw-rebuild]

The service runs on its defaults (embedded store, 2 flat shards) on a local Ray; N faces are enrolled
over HTTP (bulk add of ``facen:`` vectors); then 1 / 8 / 32 / 64 concurrent keep-alive clients search
``GET /v2/galleries/<g>/faces?looks_like=facen:...&limit=1``, one query after another each. The clients
are coroutines on one event loop (aiohttp), so the load generator costs little CPU; the table shows how
much (this process's CPU time over the searches it sent).

Beside it, right after the service has stopped so that nothing competes: a numpy loop (one matrix-vector
product and argmax per query, the way CompreFace searches), and FAISS flat in this process at batch =
clients, over the same vectors. Then the restart of the shards to ready (``/readyz``), rebuilt from the
store and loaded from their snapshots, and index RAM per
face against the raw vector. ``--hnsw-faces M`` adds the same over M faces with ``index.kind: hnsw``
(recall@10 against exact, at each of ``--hnsw-ef-search`` in turn); its enrolment time is the graph's build, and its
restart rebuilt from the store is timed only with ``--hnsw-rebuild`` (it is that build again: about
50 minutes at 5M faces on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

from serve_app.config import load_settings
from serve_app.face_wire import encode_facen
from tests.factories import clustered_unit_vectors, queries_near

PORT, DIM, GALLERY = 18478, 128, "bench"
BULK = 1000


async def enrol(vectors: np.ndarray, gallery: str) -> float:
    """Bulk-adds every vector over HTTP, 4 requests in flight; returns faces/s."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=300) as client:
        (await client.post(f"/v2/galleries/{gallery}")).raise_for_status()
        chunks = iter(range(0, len(vectors), BULK))

        async def sender():
            for start in chunks:
                items = [
                    {"id": start + i + 1, "from": "facen:" + encode_facen(vector)}
                    for i, vector in enumerate(vectors[start : start + BULK])
                ]
                response = await client.post(f"/v2/galleries/{gallery}/faces", json={"faces": items})
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(4)))
    return len(vectors) / (time.perf_counter() - started)


async def search_load(probes: list[str], clients: int, total: int, gallery: str, top_k: int = 1):
    """``total`` searches from ``clients`` concurrent clients; (queries/s, median ms, [face ids]). aiohttp,
    not httpx: the load generator shares the cores with the service it measures, and httpx's client took
    several times aiohttp's CPU a request, as much as the Ingress replica (docs/benchmarks.md)."""
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{PORT}", connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def one(index: int) -> tuple[float, list[int]]:
            started = time.perf_counter()
            params = {"looks_like": probes[index % len(probes)], "limit": str(top_k)}
            async with session.get(f"/v2/galleries/{gallery}/faces", params=params) as response:
                response.raise_for_status()
                body = await response.json()
            return time.perf_counter() - started, [int(face["id"]["face"]) for face in body["faces"]]

        async def run(count: int) -> list:
            indices, results = iter(range(count)), [None] * count

            async def client_loop():
                for index in indices:
                    results[index] = await one(index)

            await asyncio.gather(*(client_loop() for _ in range(clients)))
            return results

        await run(clients)  # connections opened
        started = time.perf_counter()
        results = await run(total)
        elapsed = time.perf_counter() - started
    return total / elapsed, statistics.median(s for s, _ in results) * 1000, [ids for _, ids in results]


def numpy_loop_rate(vectors: np.ndarray, queries: np.ndarray) -> float:
    started = time.perf_counter()
    for query in queries:
        int(np.argmax(vectors @ query))
    return len(queries) / (time.perf_counter() - started)


def faiss_rate(index, queries: np.ndarray, batch: int) -> float:
    index.search(queries[:batch], 1)
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        index.search(queries[start : start + batch], 1)
    return len(queries) / (time.perf_counter() - started)


def restart_to_ready_s(snapshot_dir: Path, from_snapshot: bool) -> dict[str, Any]:
    """Kills every shard replica (Ray restarts them) and times /readyz back to 200: after each replica
    saved its snapshot (timed too), or with the snapshots removed, so that each rebuilds from the store."""
    import shutil

    import ray

    from index.shard import named_replicas, save_snapshots_of_running_shards

    figures: dict[str, Any] = {}
    if from_snapshot:
        started = time.perf_counter()
        save_snapshots_of_running_shards()
        figures["save_s"] = time.perf_counter() - started
    else:
        shutil.rmtree(snapshot_dir, ignore_errors=True)
    for name, namespace in named_replicas().values():
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=False)
    started = time.perf_counter()
    time.sleep(0.5)
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.2)
    figures["ready_s"] = time.perf_counter() - started
    figures["started_from"] = sorted({state["started_from"] for state in shard_states()})
    return figures


def search_batch_counts() -> Counter:
    """Batches the Ingress's router has sent to the shards, by size."""
    from ray import serve

    handle = serve.get_deployment_handle("Ingress", app_name="facegrid")
    return Counter(handle.search_batch_counts.remote().result())


def shard_states() -> list[dict]:
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
        body = client.get("/readyz").json()
    return [replica for shard in body["shards"] for replica in shard]


def wait_until_indexed(faces: int) -> None:
    """Until every shard replica answers and holds all ``faces``: an add a busy replica has not
    acknowledged within ``index.shard_timeout_s`` is answered from the store, and the replica indexes
    it later (an HNSW graph grows slower than HTTP enrols)."""
    while True:
        states = shard_states()
        if all(state["state"] == "ready" for state in states) and sum(state["faces"] for state in states) >= faces:
            return
        time.sleep(1)


def measure(
    label: str,
    vectors: np.ndarray,
    index_settings: dict,
    client_counts: list[int],
    scratch: Path,
    recall_of=None,
    time_rebuild: bool = True,
    tunings: list[dict] | None = None,
) -> dict:
    """Enrol, then search from each number of clients under each of ``tunings`` (index tuning, applied
    the way an operator does: the application deployed again with it, the shards kept running)."""
    from bench.serving import mean_batch, serve_with
    from serve_app.app import stop_service

    def settings_with(tuning: dict):
        store = {"path": scratch / f"{label}.db"}
        return load_settings(port=PORT, store=store, index={**index_settings, **tuning})

    tunings = tunings or [{}]
    queries = queries_near(vectors, 512, seed=21)
    probes = ["facen:" + encode_facen(query) for query in queries]
    settings = settings_with(tunings[0])
    serve_with(settings)
    started = time.perf_counter()
    figures: dict[str, Any] = {"enrol_faces_per_s": asyncio.run(enrol(vectors, GALLERY))}
    wait_until_indexed(len(vectors))
    figures["indexed_s"] = time.perf_counter() - started
    figures["runs"] = []
    for number, tuning in enumerate(tunings):
        if number:
            serve_with(settings_with(tuning))
            while any(
                state.get("tuning", {}).get(name) != value for state in shard_states() for name, value in tuning.items()
            ):
                time.sleep(0.5)  # the deployment's new Ingress replica retunes the shards as it starts
        http, recalls, weights = {}, [], []
        for clients in client_counts:
            total = max(64, 16 * clients)
            before, cpu_before = search_batch_counts(), time.process_time()
            top_k = 10 if recall_of else 1
            rate, median_ms, ids = asyncio.run(search_load(probes, clients, total, GALLERY, top_k=top_k))
            client_cpu_ms = (time.process_time() - cpu_before) / (total + clients) * 1000  # with the warm-up round
            http[clients] = (rate, median_ms, mean_batch(search_batch_counts() - before), client_cpu_ms)
            if recall_of is not None:
                recalls.append(recall_of(ids, queries))
                weights.append(total)
        recall = float(np.average(recalls, weights=weights)) if recalls else None
        figures["runs"].append((tuning, recall, http))
    snapshot_dir = settings.index.snapshot_dir
    assert snapshot_dir is not None  # the settings always name one
    if time_rebuild:
        figures["rebuild"] = restart_to_ready_s(snapshot_dir, from_snapshot=False)
    figures["snapshot"] = restart_to_ready_s(snapshot_dir, from_snapshot=True)
    states = shard_states()
    figures["index_bytes"] = sum(state.get("index_bytes", 0) for state in states)
    stop_service()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--hnsw-faces", type=int, default=0, help="also measure HNSW over this many faces")
    parser.add_argument(
        "--hnsw-ef-search",
        default="128,160",
        help="HNSW search breadths, each measured in turn on the running service (bench.search at 5M faces "
        "in one graph: recall@10 0.944 at 128, 0.955 at 160)",
    )
    parser.add_argument("--hnsw-rebuild", action="store_true", help="also time the HNSW shards rebuilt from the store")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray may use")
    args = parser.parse_args(argv)
    client_counts = [int(part) for part in args.clients.split(",")]
    scratch = Path(tempfile.mkdtemp())

    import faiss
    import ray

    from bench.serving import start_local_ray

    vectors = clustered_unit_vectors(args.faces, DIM, seed=20)
    start_local_ray(args.num_cpus)
    try:
        flat = measure("flat", vectors, {}, client_counts, scratch)
        # The loops in this process run right after the service they are set beside has stopped: this
        # shared machine's speed drifts over an hour-long run, and the ratios must not take that in.
        queries = queries_near(vectors, 512, seed=21)
        numpy_rate = numpy_loop_rate(vectors, queries[:64])
        index = faiss.IndexFlatIP(DIM)
        index.add(vectors)
        faiss.cvar.distance_compute_blas_threshold = 1
        in_process = {clients: faiss_rate(index, queries, clients) for clients in client_counts}
        del index
        hnsw = hnsw_vectors = hnsw_numpy_rate = None
        if args.hnsw_faces:
            hnsw_vectors = clustered_unit_vectors(args.hnsw_faces, DIM, seed=22)
            exact = faiss.IndexFlatIP(DIM)
            exact.add(hnsw_vectors)

            def recall(ids, queries):
                truth = exact.search(queries, 10)[1] + 1  # face ids are positions + 1
                found = [len(set(got) & set(truth[i % len(queries)].tolist())) / 10 for i, got in enumerate(ids)]
                return float(np.mean(found))

            breadths = [{"hnsw_ef_search": int(part)} for part in args.hnsw_ef_search.split(",")]
            hnsw = measure(
                "hnsw",
                hnsw_vectors,
                {"kind": "hnsw"},
                client_counts,
                scratch,
                recall,
                time_rebuild=args.hnsw_rebuild,
                tunings=breadths,
            )
            del exact
            hnsw_numpy_rate = numpy_loop_rate(hnsw_vectors, queries[:32])
    finally:
        ray.shutdown()

    print(
        f"1:N search, {args.faces:,} faces x {DIM}-d, flat, 2 shards (the defaults), "
        f"enrolled over HTTP at {flat['enrol_faces_per_s']:,.0f} faces/s"
    )
    print(f"   numpy loop, one matrix-vector product per query: {numpy_rate:.1f} q/s")
    print(
        "   clients   facegrid over HTTP (median ms)   mean batch   clients' CPU a search   x numpy"
        "   FAISS flat in-process, batch = clients   HTTP/FAISS"
    )
    for clients in client_counts:
        rate, median_ms, batch, client_cpu_ms = flat["runs"][0][2][clients]
        print(
            f"   {clients:7d}   {rate:10.1f} q/s ({median_ms:6.1f} ms)   {batch:10.1f}   {client_cpu_ms:16.2f} ms"
            f"   {rate / numpy_rate:7.2f}x   {in_process[clients]:10.1f} q/s{'':26s}{rate / in_process[clients]:6.2f}x"
        )
    print_restarts(flat)
    raw = args.faces * DIM * 4
    print(f"   index RAM {flat['index_bytes'] / 2**20:,.0f} MiB = {flat['index_bytes'] / raw:.2f}x the raw vectors")
    if hnsw:
        print(
            f"\n   HNSW over {args.hnsw_faces:,} faces, enrolled over HTTP and indexed in {hnsw['indexed_s']:.0f} s; "
            f"the numpy loop over the same faces {hnsw_numpy_rate:.1f} q/s"
        )
        for tuning, recall, http in hnsw["runs"]:
            print(f"   ef_search {tuning['hnsw_ef_search']}: recall@10 {recall:.3f} (against exact)")
            for clients in client_counts:
                rate, median_ms, batch, client_cpu_ms = http[clients]
                print(
                    f"   {clients:7d}   {rate:10.1f} q/s ({median_ms:6.1f} ms)   {batch:10.1f}"
                    f"   {client_cpu_ms:16.2f} ms   {rate / hnsw_numpy_rate:7.2f}x the numpy loop"
                )
        print_restarts(hnsw)


def print_restarts(figures: dict) -> None:
    snapshot = figures["snapshot"]
    if "rebuild" not in figures:
        print(
            f"   shards killed -> /readyz 200 again, loaded from snapshots: {snapshot['ready_s']:.1f} s "
            f"(started from {snapshot['started_from']}, saved in {snapshot['save_s']:.1f} s); rebuild not timed"
        )
        return
    rebuild = figures["rebuild"]
    print(
        f"   shards killed -> /readyz 200 again: rebuilt from the store {rebuild['ready_s']:.1f} s "
        f"(started from {rebuild['started_from']}); loaded from snapshots {snapshot['ready_s']:.1f} s "
        f"(started from {snapshot['started_from']}, saved in {snapshot['save_s']:.1f} s) = "
        f"{rebuild['ready_s'] / snapshot['ready_s']:.1f}x faster"
    )


if __name__ == "__main__":
    main()
