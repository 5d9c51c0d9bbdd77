"""Galleries sharded across real Ray actors, checked against an exact reference over the same data."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from index import FaceFilter, IndexConfig, ShardRouter, huge_pages
from index.errors import ShardUnavailable
from store import FaceRecord, SqliteFaceStore
from tests.factories import FILTERS, Reference, clustered_unit_vectors, queries_near, random_meta

DIM = 32
_prefixes = itertools.count()


@pytest.fixture
def cluster(ray_session, tmp_path):
    """Builds routers over a fresh store; kills their actors afterwards."""
    routers = []

    def make(num_shards: int, replicas: int = 1, store=None, name_prefix: str | None = None, **config):
        store = store or SqliteFaceStore(tmp_path / "faces.db", num_shards)
        settings = IndexConfig(num_shards=num_shards, replicas_per_shard=replicas, cpus_per_shard=0.1, **config)
        router = ShardRouter.start(store, settings, name_prefix=name_prefix or f"t{next(_prefixes)}")
        routers.append(router)
        return router, store

    yield make
    for router in routers:
        router.stop()


def enrol(store, router, gallery: str, count: int, seed: int = 0):
    vectors = clustered_unit_vectors(count, DIM, seed=seed)
    metas = random_meta(count, seed=seed + 1)
    faces = [FaceRecord(gallery, 10 * i + 1, v, m) for i, (v, m) in enumerate(zip(vectors, metas))]
    store.create_gallery(gallery)
    assert store.add_faces(faces) == [None] * count
    asyncio.run(router.add(faces))
    reference = Reference()
    reference.faces = {f.face_id: (f.facen, f.meta) for f in faces}
    return vectors, reference


async def search_all(router, gallery, queries, face_filter, top_k=10):
    """Every query at once, as concurrent clients would send them (the router batches them)."""
    return await asyncio.gather(*(router.search(gallery, q, top_k, face_filter) for q in queries))


def assert_exact(router, gallery, reference, queries):
    async def run():
        for face_filter in FILTERS:
            results = await search_all(router, gallery, queries, face_filter)
            for query, hits in zip(queries, results):
                expected = reference.top(query, 10, face_filter)
                assert [i for i, _ in hits] == [i for _, i in expected], face_filter
                np.testing.assert_allclose([s for _, s in hits], [s for s, _ in expected], atol=1e-5)

    asyncio.run(run())


@pytest.mark.parametrize("num_shards", [1, 3])
def test_sharded_search_is_exact_with_and_without_filters(cluster, num_shards):
    router, store = cluster(num_shards)
    vectors, reference = enrol(store, router, "ppl", 2000)
    assert asyncio.run(router.count("ppl")) == 2000
    assert_exact(router, "ppl", reference, queries_near(vectors, 12, seed=3))


def test_sharded_search_stays_exact_after_deletes_and_meta_updates(cluster):
    router, store = cluster(3)
    vectors, reference = enrol(store, router, "ppl", 1500)
    rng = np.random.default_rng(4)

    async def change():
        for face_id in rng.choice(list(reference.faces), 200, replace=False).tolist():
            store.delete_face("ppl", face_id)
            assert await router.remove("ppl", face_id)
            del reference.faces[face_id]
        for face_id in rng.choice(list(reference.faces), 150, replace=False).tolist():
            merged = store.update_meta("ppl", face_id, {"name": "ann", "tags": ["vip", "staff"]}).meta
            await router.update_meta("ppl", face_id, merged)
            reference.faces[face_id] = (reference.faces[face_id][0], merged)

    asyncio.run(change())
    assert_exact(router, "ppl", reference, queries_near(vectors, 8, seed=5))


def test_threshold_and_limit_cut_the_merged_results(cluster):
    router, store = cluster(2)
    vectors, reference = enrol(store, router, "ppl", 800)
    query = queries_near(vectors, 1, seed=6)[0]
    expected = reference.top(query, 800, None)
    floor = (expected[7][0] + expected[8][0]) / 2
    hits = asyncio.run(router.search("ppl", query, 50, min_cosine=floor))
    assert [i for i, _ in hits] == [i for _, i in expected[:8]]


def test_queries_batched_together_get_what_each_gets_alone(cluster):
    """Mixed galleries, filters, top-k and thresholds in one batch: each query's answer is the one it gets
    sent alone, and the exact one; under concurrent load the router does batch them."""
    router, store = cluster(2, max_batch=64)
    vectors_a, reference_a = enrol(store, router, "a", 1200, seed=1)
    vectors_b, reference_b = enrol(store, router, "b", 700, seed=2)
    rng = np.random.default_rng(9)
    asks = []
    mixed = np.concatenate([queries_near(vectors_a, 20, seed=4), queries_near(vectors_b, 20, seed=5)])
    for n, query in enumerate(mixed):
        gallery, reference = ("a", reference_a) if n < 20 else ("b", reference_b)
        face_filter, top_k = FILTERS[n % len(FILTERS)], int(rng.choice([1, 3, 10, 40]))
        expected = reference.top(query, top_k, face_filter)
        middle = len(expected) // 2
        # A floor between two results' scores, so float rounding cannot decide which side one falls.
        floor = (expected[middle - 1][0] + expected[middle][0]) / 2 if n % 3 == 0 and middle else -np.inf
        asks.append((gallery, query, top_k, face_filter, floor, [i for s, i in expected if s >= floor]))

    async def together():
        return await asyncio.gather(*(router.search(g, q, k, f, floor) for g, q, k, f, floor, _ in asks))

    async def alone():
        return [await router.search(g, q, k, f, floor) for g, q, k, f, floor, _ in asks]

    batched, lone = asyncio.run(together()), asyncio.run(alone())
    for ask, got_batched, got_alone in zip(asks, batched, lone):
        assert [i for i, _ in got_batched] == [i for i, _ in got_alone] == ask[-1]
        np.testing.assert_allclose([s for _, s in got_batched], [s for _, s in got_alone], atol=1e-5)
    searched = asyncio.run(router.ready())
    assert all(replica["threads"] >= 1 for replica in searched)


def test_a_query_that_fails_on_a_shard_fails_alone(cluster):
    """A query its shard cannot answer (here: a vector of the wrong dimension, which the service refuses
    earlier) gets STORAGE_ERROR's ShardUnavailable; the queries batched with it get their answers."""
    router, store = cluster(2)
    vectors, reference = enrol(store, router, "ppl", 500)
    queries = queries_near(vectors, 6, seed=7)

    async def run():
        good = [router.search("ppl", q, 5) for q in queries]
        bad = router.search("ppl", np.ones(DIM + 3, np.float32), 5)
        return await asyncio.gather(*good, bad, return_exceptions=True)

    *answers, failure = asyncio.run(run())
    assert isinstance(failure, ShardUnavailable), failure
    for query, hits in zip(queries, answers):
        assert [i for i, _ in hits] == [i for _, i in reference.top(query, 5, None)]


def test_index_tuning_reaches_every_shard_and_refuses_what_cannot_change(cluster):
    router, store = cluster(2, replicas=2)
    asyncio.run(router.configure({"hnsw_ef_search": 300, "max_batch": 8}))
    assert router.config.hnsw_ef_search == 300 and router.config.max_batch == 8
    with pytest.raises(ValueError, match="num_shards"):
        asyncio.run(router.configure({"num_shards": 4}))
    with pytest.raises(ValueError):
        asyncio.run(router.configure({"hnsw_ef_search": 0}))


def test_a_replica_keeps_the_newest_tuning_when_an_older_arrives_after_it(cluster, ray_session):
    router, store = cluster(1)
    replica = router.replicas[0][0]
    newer_ns = time.time_ns()
    ray_session.get(replica.configure.remote({"hnsw_ef_search": 200}, newer_ns))
    ray_session.get(replica.configure.remote({"hnsw_ef_search": 100}, newer_ns - 10**9))
    assert asyncio.run(router.ready())[0]["tuning"]["hnsw_ef_search"] == 200


def test_listing_pages_across_shards_in_id_order(cluster):
    router, store = cluster(3)
    _, reference = enrol(store, router, "ppl", 600)
    face_filter = FaceFilter(meta_in=(("cam", ("1", "2", "3")),))
    expected = sorted(i for i, (_, m) in reference.faces.items() if face_filter.matches(i, m))

    async def pages():
        collected, after = [], None
        while page := await router.list_ids("ppl", face_filter, after, 40):
            collected += page
            after = page[-1]
        return collected

    assert asyncio.run(pages()) == expected


def test_galleries_are_separate_and_dropping_one_leaves_the_others(cluster):
    router, store = cluster(2)
    enrol(store, router, "a", 100, seed=1)
    vectors_b, reference_b = enrol(store, router, "b", 100, seed=2)
    asyncio.run(router.drop_gallery("a"))
    assert asyncio.run(router.counts()) == {"b": 100}
    assert_exact(router, "b", reference_b, vectors_b[:3])


def test_writes_sent_while_an_add_is_on_its_way_apply_after_it(cluster):
    # The add's vectors (4000 x 32 float32, past Ray's inline limit) travel through the object store, so
    # a replica that ran calls as they arrive could run the delete and patch first and then the add.
    router, store = cluster(1)
    vectors = clustered_unit_vectors(4000, DIM, seed=5)
    faces = [FaceRecord("ppl", i + 1, v, {"camera": "a"}) for i, v in enumerate(vectors)]

    async def run():
        await asyncio.gather(
            router.add(faces),
            router.remove("ppl", 1),
            router.update_meta("ppl", 2, {"camera": "b"}),
            router.drop_gallery("gone"),
        )
        hits = await router.search("ppl", vectors[1], 1, FaceFilter(meta_in=(("camera", ("b",)),)))
        return await router.count("ppl"), await router.list_ids("ppl", None, None, 2), hits

    count, first_ids, hits = asyncio.run(run())
    assert count == 3999 and first_ids == [2, 3]
    assert [face_id for face_id, _ in hits] == [2]


def test_a_killed_shard_rebuilds_from_the_store_while_the_others_answer(cluster, ray_session):
    router, store = cluster(2)
    vectors, reference = enrol(store, router, "ppl", 3000)
    before = [r["faces"] for r in asyncio.run(router.ready())]
    ray_session.kill(router.replicas[0][0], no_restart=False)

    async def during_restart():
        started = time.perf_counter()
        other = await router._read(1, "count", "ppl")
        return other, time.perf_counter() - started

    other_count, seconds = asyncio.run(during_restart())
    assert other_count == before[1] and seconds < 5
    after = [r["faces"] for r in asyncio.run(router.ready())]  # waits for shard 0's rebuild
    assert after == before
    assert_exact(router, "ppl", reference, queries_near(vectors, 6, seed=7))


def test_a_killed_shard_restarts_from_its_snapshot_with_the_writes_made_since(cluster, ray_session, tmp_path):
    # No margin: what the snapshot holds was written before it, so only the writes below are replayed.
    router, store = cluster(2, snapshot_dir=tmp_path / "snapshots", snapshot_replay_margin_s=0)
    vectors, reference = enrol(store, router, "ppl", 3000)
    saved = ray_session.get([replica.save_snapshot.remote() for replica in itertools.chain(*router.replicas)])
    assert sum(snapshot["faces"] for snapshot in saved) == 3000
    gone = sorted(reference.faces)[:40]
    for face_id in gone:
        store.delete_face("ppl", face_id)
        asyncio.run(router.remove("ppl", face_id))
        del reference.faces[face_id]
    patched = sorted(reference.faces)[:40]
    for face_id in patched:
        face = store.update_meta("ppl", face_id, {"name": "zed"})
        asyncio.run(router.update_meta("ppl", face_id, face.meta))
        reference.faces[face_id] = (face.facen, face.meta)
    added = [
        FaceRecord("ppl", 1_000_000 + i, v, {"name": "new"})
        for i, v in enumerate(clustered_unit_vectors(50, DIM, seed=11))
    ]
    assert store.add_faces(added) == [None] * len(added)
    asyncio.run(router.add(added))
    reference.faces.update({f.face_id: (f.facen, f.meta) for f in added})

    first_start = asyncio.run(router.ready())[0]["started_at"]
    ray_session.kill(router.replicas[0][0], no_restart=False)
    deadline = time.monotonic() + 60
    while (restarted := asyncio.run(router.ready())[0])["started_at"] == first_start:  # the kill takes a moment
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert restarted["started_from"] == "snapshot", restarted
    assert 0 < restarted["replayed"] <= len(gone + patched + added), restarted
    assert sum(r["faces"] for r in asyncio.run(router.ready())) == len(reference.faces)
    assert_exact(router, "ppl", reference, queries_near(vectors, 6, seed=7))


def test_a_start_over_another_store_or_settings_replaces_the_running_shards(cluster, ray_session, tmp_path):
    """Shard actors are detached: a service started again under the same name must not search the
    galleries of the store it had before, nor keep index settings it no longer has."""
    router, store = cluster(2, snapshot_dir=tmp_path / "snapshots")
    vectors, reference = enrol(store, router, "ppl", 400)
    old_replicas = list(itertools.chain(*router.replicas))

    fresh_store = SqliteFaceStore(tmp_path / "fresh.db", 2)
    over_fresh, _ = cluster(2, store=fresh_store, name_prefix=router.name_prefix, snapshot_dir=tmp_path / "snapshots")
    assert [state["faces"] for state in asyncio.run(over_fresh.ready())] == [0, 0]
    for replica in old_replicas:
        with pytest.raises(ray_session.exceptions.RayActorError):
            ray_session.get(replica.ready.remote(), timeout=30)

    started = [state["started_at"] for state in asyncio.run(over_fresh.ready())]
    snapshots = tmp_path / "snapshots"
    tuned, _ = cluster(2, store=fresh_store, name_prefix=router.name_prefix, snapshot_dir=snapshots, hnsw_ef_search=200)
    states = asyncio.run(tuned.ready())
    assert [state["started_at"] for state in states] == started  # other tuning only: the same replicas, retuned
    assert {state["tuning"]["hnsw_ef_search"] for state in states} == {200}

    back, _ = cluster(2, store=store, name_prefix=router.name_prefix, snapshot_dir=snapshots, kind="hnsw")
    assert sum(state["faces"] for state in asyncio.run(back.ready())) == 400
    assert_exact(back, "ppl", reference, queries_near(vectors, 4, seed=7))


def test_replicas_named_before_fingerprints_are_retired_with_their_placement_group(ray_session):
    from ray.util import get_placement_group, placement_group

    from index.shard import retire_shards

    group = placement_group([{"CPU": 0.05}], name="legacy-shard-0")
    ray_session.get(group.ready(), timeout=60)
    actor = ray_session.remote(num_cpus=0)(Reference).options(name="legacy-shard-0-0").remote()
    ray_session.get(actor.__ray_ready__.remote(), timeout=60)
    assert retire_shards("legacy") == 1
    with pytest.raises(ValueError):
        get_placement_group("legacy-shard-0")


def test_reads_fail_over_to_a_live_replica(cluster, ray_session):
    router, store = cluster(1, replicas=2)
    vectors, reference = enrol(store, router, "ppl", 300)
    ray_session.kill(router.replicas[0][1], no_restart=True)
    for _ in range(3):  # round-robin would have picked the dead replica at least once
        hits = asyncio.run(router.search("ppl", vectors[0], 5))
        assert [i for i, _ in hits] == [i for _, i in reference.top(vectors[0], 5, None)]


def test_a_shard_with_no_live_replica_is_a_clear_error_and_the_rest_still_write(cluster, ray_session):
    router, store = cluster(2)
    vectors, _ = enrol(store, router, "ppl", 200)
    ray_session.kill(router.replicas[1][0], no_restart=True)
    started = time.perf_counter()
    with pytest.raises(ShardUnavailable, match="shard 1"):
        asyncio.run(router.search("ppl", vectors[0], 5))
    assert time.perf_counter() - started < router.config.shard_timeout_s
    assert asyncio.run(router._read(0, "count", "ppl")) > 0


def test_shard_vectors_sit_on_huge_pages_unless_switched_off(cluster, tmp_path):
    mode = huge_pages.kernel_mode()
    if mode not in ("madvise", "always"):
        pytest.skip(f"this kernel's transparent huge pages are {mode!r}")
    vectors = clustered_unit_vectors(20_000, 128, seed=3)  # 10 MB of vectors in one FAISS buffer
    faces = [FaceRecord("big", i + 1, v) for i, v in enumerate(vectors)]
    on_huge_pages = {}
    for switch in (True, False):
        router, store = cluster(1, store=SqliteFaceStore(tmp_path / f"{switch}.db", 1), huge_pages=switch)
        store.create_gallery("big")
        store.add_faces(faces)
        asyncio.run(router.add(faces))
        on_huge_pages[switch] = asyncio.run(router.ready())[0]["huge_page_bytes"]
    assert on_huge_pages[True] >= 4 << 20
    if mode == "madvise":  # with "always" the kernel gives huge pages to every process anyway
        assert on_huge_pages[False] == 0
