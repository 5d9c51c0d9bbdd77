"""Gallery search figures, measured side by side in one run (ratios; absolute times depend on the machine).

    python -m bench.search [--exact-faces 1000000] [--approx-faces 5000000] [--queries 512]

0. a flat shard's search paths by batch size: numpy matrix-vector products, FAISS's sequential scan and
   its BLAS path, and the shard as configured;
1. index RAM per face vs the raw vector bytes (in-process GalleryIndex, empty meta and typical meta);
2. the embedded store: bulk write of N faces, then the rebuild of 2 shard actors from it;
3. exact search over N faces x 128-d across 2 shard actors, single queries arriving concurrently,
   vs in-process numpy brute force one query at a time (and a check that both return the same top-10);
4. the approximate index (HNSW by default, or IVF) at M faces vs exact flat search in one process:
   queries/s and recall@10 across its search breadth, on vectors with face-embedding statistics
   (tests/factories.py); and the same graph searched by a process without huge pages (index/huge_pages.py).

The benchmark runs with malloc on huge pages, as shard actors do; it restarts itself to get them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index import GalleryIndex, IndexConfig, ShardRouter, coarse_scan, huge_pages, matvec
from store import FaceRecord, SqliteFaceStore
from tests.factories import clustered_unit_vectors, queries_near, random_meta

DIM, TOP_K = 128, 10
REPEATS = 3  # section 4 and the huge-page comparison report the best of this many passes


def rss_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def search_paths(count: int) -> None:
    """Where each path of a flat shard is fastest: queries/s by batch size, one thread, over ``count`` faces
    (one shard's share): numpy's matrix-vector product one query at a time (index/matvec.py), the integer
    product over 8-bit codes with its exact re-rank (index/coarse_scan.py), FAISS's sequential scan
    (faiss-cpu 1.15's own threshold keeps batches under 1000 queries of 128-d on it), FAISS's BLAS path,
    and a shard's flat gallery as configured (a gallery this large: the second below
    ``index.blas_threshold``, the fourth from it)."""
    import threadpoolctl

    vectors = clustered_unit_vectors(count, DIM, seed=10)
    queries = queries_near(vectors, 256, seed=11)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    gallery = GalleryIndex(DIM, IndexConfig())
    gallery.add(list(range(count)), vectors, [{}] * count)
    codes = coarse_scan.CoarseCodes(vectors)
    library_default = faiss.cvar.distance_compute_blas_threshold
    faiss.omp_set_num_threads(1)

    def rate(search, batch: int) -> float:
        search(queries[:batch])  # warm-up
        repeats = max(3, 64 // batch)
        started = time.perf_counter()
        for _ in range(repeats):
            search(queries[:batch])
        return batch * repeats / (time.perf_counter() - started)

    paths = {
        "numpy matrix-vector": (1, lambda q: matvec.top_k_each(vectors, q, TOP_K)),
        "8-bit codes + re-rank": (1, lambda q: codes.top_k_each(vectors, q, TOP_K)),
        "FAISS sequential scan": (library_default, lambda q: index.search(q, TOP_K)),
        "FAISS BLAS": (1, lambda q: index.search(q, TOP_K)),
        "shard, as configured": (1, lambda q: gallery.search(q, TOP_K)),
    }
    batches = (1, 2, 4, 6, 8, 12, 16, 64, 256)
    print(
        f"0. flat search paths, {count:,} faces, one thread, top-{TOP_K}, queries/s by batch size "
        f"({', '.join(str(b) for b in batches)}); index.blas_threshold = {IndexConfig().blas_threshold}"
    )
    with threadpoolctl.threadpool_limits(1):
        for name, (threshold, search) in paths.items():
            faiss.cvar.distance_compute_blas_threshold = threshold
            print(f"   {name:22s} " + "  ".join(f"{rate(search, batch):7.0f}" for batch in batches))
    faiss.cvar.distance_compute_blas_threshold = 1
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    print()


def ram_per_face(count: int) -> None:
    vectors = clustered_unit_vectors(count, DIM, seed=20)
    raw = DIM * 4
    print(f"1. index RAM per face, {count:,} faces x {DIM}-d (raw vector: {raw} bytes)")
    no_meta: list[dict[str, Any]] = [{}] * count
    for label, metas in (("no meta", no_meta), ("typical meta", random_meta(count, seed=21))):
        gc.collect()
        before = rss_bytes()
        index = GalleryIndex(DIM, IndexConfig())
        index.add(list(range(count)), vectors, metas)
        gc.collect()
        per_face = (rss_bytes() - before) / count
        print(f"   {label:<13} {per_face:7.0f} bytes/face   {per_face / raw:.2f}x raw")
        del index


def exact_sharded(count: int, num_queries: int) -> None:
    import ray

    vectors = clustered_unit_vectors(count, DIM, seed=30)
    queries = queries_near(vectors, num_queries, seed=31)
    sample = min(num_queries, 64)
    started = time.perf_counter()
    brute = []
    for query in queries[:sample]:
        scores = vectors @ query
        top = np.argpartition(-scores, TOP_K)[:TOP_K]
        brute.append(top[np.argsort(-scores[top])].tolist())
    numpy_qps = sample / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as scratch:
        store = SqliteFaceStore(Path(scratch) / "faces.db", num_shards=2)
        store.create_gallery("bench")
        started = time.perf_counter()
        for start in range(0, count, 20_000):
            chunk = vectors[start : start + 20_000]
            store.add_faces([FaceRecord("bench", start + i, v) for i, v in enumerate(chunk)])
        write_s = time.perf_counter() - started
        print(f"\n2. embedded store, {count:,} faces")
        print(f"   bulk write          {count / write_s:10,.0f} faces/s")

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        try:
            config = IndexConfig(num_shards=2, cpus_per_shard=0.5, threads_per_shard=1)
            started = time.perf_counter()
            router = ShardRouter.start(store, config, name_prefix="bench")
            ready = asyncio.run(router.ready())
            wall = time.perf_counter() - started
            per_shard = ", ".join(f"{r['rebuild_s']:.1f}" for r in ready)
            print(f"   rebuild, 2 shards   {wall:10.1f} s wall (per shard: {per_shard} s, in parallel)")

            async def concurrent(batch):
                return await asyncio.gather(*(router.search("bench", q, TOP_K) for q in batch))

            asyncio.run(concurrent(queries[:64]))  # warm-up
            started = time.perf_counter()
            sharded = asyncio.run(concurrent(queries))
            sharded_qps = num_queries / (time.perf_counter() - started)
        finally:
            ray.shutdown()

    same = all([i for i, _ in hits] == expected for hits, expected in zip(sharded, brute))
    print(f"\n3. exact search, {count:,} faces, 2 shard actors, {num_queries} concurrent single queries")
    print(f"   numpy brute force   {numpy_qps:10.1f} queries/s (one at a time, in process)")
    print(
        f"   sharded FAISS       {sharded_qps:10.1f} queries/s   {sharded_qps / numpy_qps:.1f}x   "
        f"same top-{TOP_K}: {'yes' if same else 'NO'}"
    )


def approximate(
    count: int, num_queries: int, kind: str, tuning: dict, breadths: tuple[int, ...], index_cache: Path | None = None
) -> None:
    vectors = clustered_unit_vectors(count, DIM, seed=40)
    queries = queries_near(vectors, num_queries, seed=41)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    faiss.cvar.distance_compute_blas_threshold = 1  # as in a shard (index/shard.py)

    def rate(index: GalleryIndex, repeats: int = REPEATS):
        return best_rate(lambda batch: index.search(batch, TOP_K)[1], queries, repeats)

    exact = GalleryIndex(DIM, IndexConfig())
    exact.add(list(range(count)), vectors, [{}] * count)
    exact_qps, truth = rate(exact)
    del exact
    gc.collect()

    config = IndexConfig(kind=kind, approximate_min_faces=1000, **tuning)
    knobs = (
        f"m{config.hnsw_m}-efc{config.hnsw_ef_construction}"
        + ("" if config.hnsw_storage == "flat" else f"-{config.hnsw_storage}")
        if kind == "hnsw"
        else f"lists{config.ivf_lists_per_sqrt:g}sqrt"
    )
    cached = index_cache / f"{kind}-{count}-{knobs}-seed40.faiss" if index_cache else None
    if cached is not None and cached.exists():
        # A 5M-face graph takes an hour or more to build on a small machine; sweeps reuse the saved one.
        approx = GalleryIndex(DIM, config.model_copy(update={"kind": "flat"}))
        approx.add(list(range(count)), vectors, [{}] * count)
        approx.index, approx.kind, approx.config = faiss.read_index(str(cached)), kind, config
        build_s = float(cached.with_suffix(".build_s").read_text())
    else:
        started = time.perf_counter()
        approx = GalleryIndex(DIM, config)
        approx.add(list(range(count)), vectors, [{}] * count)
        build_s = time.perf_counter() - started
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(approx.index, str(cached))
            cached.with_suffix(".build_s").write_text(f"{build_s:.1f}")
    shape = (
        f"M={config.hnsw_m}, efConstruction={config.hnsw_ef_construction}, walks {config.hnsw_storage} vectors"
        if kind == "hnsw"
        else f"{approx.index.nlist} lists"
    )
    print(
        f"\n4. approximate ({kind}, {shape}) vs exact, {count:,} faces, {num_queries} queries in batches "
        f"of 64; build {build_s:.0f} s ({count / build_s:,.0f} faces/s)"
    )
    if cached is not None:
        print(f"   index file {cached} (build time: the one recorded when it was built)")
    print(f"   exact flat          {exact_qps:10.1f} queries/s   recall@{TOP_K} 1.000")
    knob = "hnsw_ef_search" if kind == "hnsw" else "ivf_nprobe"
    approx.config = config.model_copy(update={knob: breadths[0]})
    rate(approx, repeats=1)  # a read index file, or a fresh build, is cold: warm it up first
    for value in breadths:
        approx.config = config.model_copy(update={knob: value})
        qps, found = rate(approx)
        recall = np.mean([len(set(f) & set(t)) / TOP_K for f, t in zip(found.tolist(), truth.tolist())])
        print(f"   {knob}={value:<4} {qps:10.1f} queries/s   recall@{TOP_K} {recall:.3f}   {qps / exact_qps:.1f}x")
    ram = approx.memory_bytes() / count
    print(f"   index bytes/face    {ram:10.0f}   {ram / (DIM * 4):.2f}x raw")
    if kind == "hnsw":
        small_pages(approx, queries, breadths, cached)


def best_rate(search_batch, queries: np.ndarray, repeats: int = REPEATS) -> tuple[float, np.ndarray]:
    """Queries/s of ``search_batch`` over ``queries`` in batches of 64, best of ``repeats`` passes (a shared
    VM's noise only ever slows a pass down), and the ids found."""
    best = 0.0
    for _ in range(repeats):
        started, found = time.perf_counter(), []
        for start in range(0, len(queries), 64):
            found.append(search_batch(queries[start : start + 64]))
        best = max(best, len(queries) / (time.perf_counter() - started))
    return best, np.concatenate(found)


def search_rate(index, queries: np.ndarray, ef_search: int, repeats: int = REPEATS) -> float:
    """A bare FAISS HNSW index, searched as GalleryIndex searches it, in either process of the comparison."""
    params = GalleryIndex.hnsw_parameters(index, IndexConfig(hnsw_ef_search=ef_search))
    return best_rate(lambda batch: index.search(batch, TOP_K, params=params)[1], queries, repeats)[0]


def small_pages(approx: GalleryIndex, queries: np.ndarray, breadths: tuple[int, ...], saved: Path | None) -> None:
    """The same graph and queries in a child process started without the huge-page tunable."""
    with tempfile.TemporaryDirectory() as scratch:
        if saved is None:
            saved = Path(scratch) / "index.faiss"
            faiss.write_index(approx.index, str(saved))
        np.save(Path(scratch) / "queries.npy", queries)
        environment = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.search",
                "--probe",
                str(saved),
                "--probe-queries",
                str(Path(scratch) / "queries.npy"),
                "--breadths",
                ",".join(map(str, breadths)),
            ],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
    small = json.loads(child.stdout.splitlines()[-1])
    print(
        f"   the same graph searched with 4 KiB pages (a process without the tunable), then huge pages "
        f"(kernel THP mode: {huge_pages.kernel_mode()}):"
    )
    for value in breadths:
        large = search_rate(approx.index, queries, value)
        print(
            f"   hnsw_ef_search={value:<4} {small[str(value)]:10.1f} vs {large:10.1f} queries/s   "
            f"{large / small[str(value)]:.2f}x"
        )


def probe(index_file: Path, queries_file: Path, breadths: tuple[int, ...]) -> None:
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index, queries = faiss.read_index(str(index_file)), np.load(queries_file)
    search_rate(index, queries, breadths[0], repeats=1)  # warm-up, as the parent's sweep was
    print(json.dumps({value: search_rate(index, queries, value) for value in breadths}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact-faces", type=int, default=1_000_000)
    parser.add_argument("--approx-faces", type=int, default=5_000_000)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument(
        "--approx-queries",
        type=int,
        default=1024,
        help="queries of section 4 (many: one at 5M faces takes under a millisecond)",
    )
    parser.add_argument("--ram-faces", type=int, default=500_000)
    parser.add_argument("--approx-kind", choices=("hnsw", "ivf"), default="hnsw")
    parser.add_argument("--hnsw-m", type=int, default=None, help="default: IndexConfig's")
    parser.add_argument("--hnsw-ef-construction", type=int, default=None, help="default: IndexConfig's")
    parser.add_argument("--hnsw-storage", choices=("flat", "bf16"), default=None, help="default: IndexConfig's")
    parser.add_argument("--breadths", default="32,64,128", help="ef_search (hnsw) or nprobe (ivf) values")
    parser.add_argument("--only", choices=("paths", "ram", "exact", "approximate"), default=None)
    parser.add_argument("--paths-faces", type=int, default=500_000)
    parser.add_argument(
        "--index-cache",
        type=Path,
        default=None,
        help="save the built approximate index here, and read it back on later runs",
    )
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-queries", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    breadths = tuple(int(b) for b in args.breadths.split(","))
    if args.probe:
        return probe(args.probe, args.probe_queries, breadths)
    if not huge_pages.enabled_here():
        # glibc reads its tunables when a process starts, so start again the way shard actors start.
        os.execve(
            sys.executable,
            [sys.executable, "-m", "bench.search", *(sys.argv[1:] if argv is None else argv)],
            {**os.environ, **huge_pages.environment()},
        )
    tuning = {
        key: value
        for key, value in (
            ("hnsw_m", args.hnsw_m),
            ("hnsw_storage", args.hnsw_storage),
            ("hnsw_ef_construction", args.hnsw_ef_construction),
        )
        if value
    }
    sections = {
        "paths": lambda: search_paths(args.paths_faces),
        "ram": lambda: ram_per_face(args.ram_faces),
        "exact": lambda: exact_sharded(args.exact_faces, args.queries),
        "approximate": lambda: approximate(
            args.approx_faces, args.approx_queries, args.approx_kind, tuning, breadths, args.index_cache
        ),
    }
    for name, section in sections.items():
        if args.only in (None, name):
            section()


if __name__ == "__main__":
    main()
