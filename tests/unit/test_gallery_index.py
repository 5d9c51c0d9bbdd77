"""One gallery's FAISS index against an exact numpy reference over the same seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from index import FaceFilter, GalleryIndex, IndexConfig, coarse_scan
from tests.factories import FILTERS, Reference, clustered_unit_vectors, queries_near, random_meta

DIM = 32


def check_against(index: GalleryIndex, reference: Reference, queries: np.ndarray, top_k: int = 10):
    """Each query alone (a flat gallery's matrix-vector products, or its codes once it keeps them) and all
    in one batch (FAISS's BLAS path, or its ID selector when filtered, or the codes again for a batch
    under ``blas_threshold``) get the reference's exact top-k."""
    for face_filter in FILTERS:
        batched = index.search(queries, top_k, face_filter)
        alone = [index.search(query, top_k, face_filter) for query in queries]
        for row, query in enumerate(queries):
            expected = reference.top(query, top_k, face_filter)
            for scores, ids in ((batched[0][row], batched[1][row]), (alone[row][0][0], alone[row][1][0])):
                got = [(float(s), int(i)) for s, i in zip(scores, ids) if s > -np.inf]
                assert [i for _, i in got] == [i for _, i in expected], face_filter
                np.testing.assert_allclose([s for s, _ in got], [s for s, _ in expected], atol=1e-5)


@pytest.fixture
def filled():
    vectors = clustered_unit_vectors(1500, DIM, seed=5)
    metas = random_meta(1500, seed=6)
    ids = list(range(0, 3000, 2))
    index, reference = GalleryIndex(DIM, IndexConfig()), Reference()
    index.add(ids, vectors, metas)
    reference.faces = {i: (v, m) for i, v, m in zip(ids, vectors, metas)}
    return index, reference, vectors


def test_search_with_and_without_filters_is_exact(filled):
    index, reference, vectors = filled
    check_against(index, reference, queries_near(vectors, 8, seed=7))


def test_search_stays_exact_after_deletes_and_meta_updates(filled):
    index, reference, vectors = filled
    rng = np.random.default_rng(8)
    for face_id in rng.choice(list(reference.faces), 300, replace=False):
        assert index.remove(int(face_id))
        del reference.faces[int(face_id)]
    for face_id in rng.choice(list(reference.faces), 200, replace=False):
        meta = {"name": "ann", "cam": int(rng.integers(0, 10)), "tags": ["vip", "staff"]}
        index.update_meta(int(face_id), meta)
        reference.faces[int(face_id)] = (reference.faces[int(face_id)][0], meta)
    assert index.count == len(reference.faces)
    check_against(index, reference, queries_near(vectors, 8, seed=9))


def test_compaction_after_many_deletes_keeps_every_live_face(filled):
    index, reference, vectors = filled
    for face_id in list(reference.faces)[:1000]:
        index.remove(face_id)
        del reference.faces[face_id]
    assert index.count == len(reference.faces)
    assert index.size < 1500  # compacted at least once
    assert index.size < 1024 or index.dead_fraction < index.config.compact_dead_fraction
    check_against(index, reference, queries_near(vectors, 8, seed=10))


def test_a_filter_passing_few_faces_still_returns_all_of_them(filled):
    index, reference, vectors = filled
    rare = FaceFilter(id_in=(4, 1000, 2998))
    scores, ids = index.search(vectors[:1], 10, rare)
    assert sorted(int(i) for s, i in zip(scores[0], ids[0]) if s > -np.inf) == [4, 1000, 2998]


def test_listing_pages_by_id_in_both_directions(filled):
    index, reference, _ = filled
    face_filter = FaceFilter(meta_in=(("name", ("bob",)),))
    expected = sorted(i for i, (_, m) in reference.faces.items() if face_filter.matches(i, m))
    for descending in (False, True):
        order = expected[::-1] if descending else expected
        pages, after = [], None
        while True:
            page = index.list_ids(face_filter, after, 25, descending).tolist()
            if not page:
                break
            pages += page
            after = page[-1]
        assert pages == order


@pytest.mark.parametrize("kind, tuning", [("hnsw", {}), ("hnsw", {"hnsw_storage": "bf16"}), ("ivf", {})])
def test_approximate_kinds_switch_on_at_their_size_and_keep_recall(kind, tuning):
    vectors = clustered_unit_vectors(6000, DIM, seed=11)
    index = GalleryIndex(DIM, IndexConfig(kind=kind, approximate_min_faces=5000, **tuning))
    index.add(list(range(4000)), vectors[:4000], [{}] * 4000)
    assert index.kind == "flat"
    index.add(list(range(4000, 6000)), vectors[4000:], [{}] * 2000)
    assert index.kind == kind
    queries = queries_near(vectors, 50, seed=12)
    _, found = index.search(queries, 10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.9
    scores, _ = index.search(queries, 10)
    np.testing.assert_allclose(
        scores, np.take_along_axis(queries @ vectors.T, found.astype(np.int64), axis=1), atol=1e-5
    )  # the scores are exact cosines, whatever the graph walks on
    index.remove(5)
    _, found = index.search(vectors[5:6], 10)
    assert 5 not in found[0].tolist()


def test_filter_reference_semantics():
    meta = {"cam": 3, "name": "eve", "tags": ["vip", "staff"]}
    assert FaceFilter(meta_in=(("cam", ("3", "4")),)).matches(1, meta)
    assert not FaceFilter(meta_in=(("cam", ("x",)),)).matches(1, meta)
    assert FaceFilter(meta_gte=(("name", "d"),), meta_lte=(("name", "f"),)).matches(1, meta)
    assert not FaceFilter(meta_gte=(("name", 8),)).matches(1, {"name": 7})
    assert not FaceFilter(meta_gte=(("name", "a"),)).matches(1, {"name": 7})  # int vs text: no match
    assert FaceFilter(meta_subset=(("tags", ("vip",)),)).matches(1, meta)
    assert not FaceFilter(meta_subset=(("tags", ("vip", "guest")),)).matches(1, meta)
    assert FaceFilter(meta_in=(("tags", ("staff",)),)).matches(1, meta)
    assert not FaceFilter(meta_in=(("missing", ("x",)),)).matches(1, meta)


def test_slot_lookup_agrees_with_a_dict_through_merges_and_removals():
    from index.gallery_index import SlotLookup

    rng = np.random.default_rng(13)
    lookup, truth, next_slot = SlotLookup(), {}, 0
    for size in (5000, 10, 3000, 4500, 1, 7000):
        drawn = rng.integers(0, 2**64 - 1, size, dtype=np.uint64, endpoint=True).tolist()
        ids = np.array([i for i in dict.fromkeys(drawn) if i not in truth], np.uint64)
        slots = np.arange(next_slot, next_slot + len(ids))
        next_slot += len(ids)
        lookup.add(ids, slots)
        truth.update(zip(ids.tolist(), slots.tolist()))
        keys = list(truth)
        for face_id in [keys[i] for i in rng.choice(len(keys), 500, replace=False)]:
            assert lookup.pop(face_id) == truth.pop(face_id)
            assert lookup.pop(face_id) is None
    assert len(lookup) == len(truth)
    assert all(lookup.get(face_id) == slot for face_id, slot in truth.items())
    assert lookup.get(12345) is None


def test_the_torch_search_path_is_exact_and_copies_each_row_once():
    """The path a shard with a GPU takes (index/torch_search.py), run here on torch's CPU device: the
    same code, and the same answers as the exact reference, filters and deletes included."""
    pytest.importorskip("torch")
    vectors = clustered_unit_vectors(3000, DIM, seed=13)
    metas = random_meta(3000, seed=14)
    index, reference = GalleryIndex(DIM, IndexConfig(), torch_device="cpu"), Reference()
    index.add(list(range(1000)), vectors[:1000], metas[:1000])
    index.search(vectors[:1], 1)  # makes the copy on the device
    for start in range(1000, 3000, 500):  # adds after it: only their rows go over
        index.add(list(range(start, start + 500)), vectors[start : start + 500], metas[start : start + 500])
    assert index._torch.rows_copied == 3000
    reference.faces = {i: (vectors[i], metas[i]) for i in range(3000)}
    for face_id in range(0, 3000, 7):
        index.remove(face_id)
        del reference.faces[face_id]
    assert index._torch.rows_copied == 3000  # deletes are masked, not copied
    check_against(index, reference, queries_near(vectors, 8, seed=15))
    for face_id in range(1, 3000, 3):  # past compact_dead_fraction: compacted
        if face_id in reference.faces:
            index.remove(face_id)
            del reference.faces[face_id]
    check_against(index, reference, queries_near(vectors, 8, seed=16))
    assert index._torch.rows_copied == index.size  # copied again, once, after the compaction


def test_the_coded_scan_is_exact_for_faces_added_outside_its_trained_ranges_and_after_deletes():
    """A gallery large enough to keep 8-bit codes answers small batches by their scan and an exact re-rank
    (index/coarse_scan.py): the same top-k as the reference, also for faces added after the codes were
    trained that lie far outside the ranges they were trained on, and with deletes and filters."""
    first = coarse_scan.MIN_FACES + 1000
    vectors = clustered_unit_vectors(first, DIM, seed=30)
    outliers = -clustered_unit_vectors(2000, DIM, seed=31)  # the other side of the sphere
    everything = np.concatenate([vectors, outliers])
    metas = random_meta(len(everything), seed=32)
    index, reference = GalleryIndex(DIM, IndexConfig()), Reference()
    index.add(list(range(first)), vectors, metas[:first])
    index.add(list(range(first, len(everything))), outliers, metas[first:])
    assert index.codes is not None and index.codes.trained_on == first and len(index.codes) == len(everything)
    reference.faces = {i: (everything[i], metas[i]) for i in range(len(everything))}
    for face_id in range(0, len(everything), 5):
        index.remove(face_id)
        del reference.faces[face_id]
    queries = np.concatenate([queries_near(vectors, 4, seed=33), queries_near(outliers, 4, seed=34)])
    assert len(queries) < index.blas_from()  # so the batch is answered from the codes too
    for top_k in (1, 10, 40):
        check_against(index, reference, queries, top_k)
    many = queries_near(everything, index.blas_from(), seed=35)  # a batch for FAISS's BLAS path
    for face_filter in (None, FILTERS[3]):
        batched = index.search(many, 10, face_filter)
        for row, query in enumerate(many):
            alone = index.search(query, 10, face_filter)
            np.testing.assert_array_equal(batched[1][row], alone[1][0])
            np.testing.assert_allclose(batched[0][row], alone[0][0], atol=1e-5)


def test_codes_are_trained_again_as_the_gallery_doubles_and_made_again_on_load(tmp_path):
    vectors = clustered_unit_vectors(2 * coarse_scan.MIN_FACES, DIM, seed=36)
    index = GalleryIndex(DIM, IndexConfig())
    small = coarse_scan.MIN_FACES - 1
    index.add(list(range(small)), vectors[:small], [{}] * small)
    assert index.codes is None  # small galleries keep none
    for face_id in range(small, len(vectors)):
        index.add([face_id], vectors[face_id : face_id + 1], [{}])
    assert index.codes is not None and index.codes.trained_on == len(vectors) == len(index.codes)
    queries = queries_near(vectors, 4, seed=36)
    expected = index.search(queries[:1], 10)
    index.save(tmp_path, "g")
    loaded = GalleryIndex.load(tmp_path, "g", DIM, "flat", IndexConfig())
    assert loaded.codes is not None and len(loaded.codes) == len(vectors)
    for got, want in zip(loaded.search(queries[:1], 10), expected):
        np.testing.assert_array_equal(got, want)


def test_the_coded_scan_stays_exact_when_most_faces_crowd_the_line():
    """Near-duplicates everywhere: more faces lie within the coding error of the k-th best than one scan
    asks for, so it asks again and then falls back to the float32 vectors; the answer stays exact, ties
    to the lower slot."""
    rng = np.random.default_rng(37)
    people = clustered_unit_vectors(4, DIM, seed=38)
    vectors = people[rng.integers(0, 4, coarse_scan.MIN_FACES)]
    vectors = vectors + rng.standard_normal(vectors.shape).astype(np.float32) * 1e-4
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = coarse_scan.CoarseCodes(vectors)
    queries = queries_near(people, 3, seed=39)
    passing = rng.random(len(vectors)) < 0.5
    # The reference scores in float64, rounded to float32: these near-duplicates differ by about a float32
    # step, where a float32 product (numpy's) may already call a tie what is not one.
    exact = (queries.astype(np.float64) @ vectors.astype(np.float64).T).astype(np.float32)
    for top_k, mask in ((1, None), (10, None), (300, None), (10, passing)):
        got_scores, got_slots = codes.top_k_each(vectors, queries, top_k, mask)
        for row, scores in enumerate(exact):
            allowed = np.flatnonzero(mask) if mask is not None else np.arange(len(vectors))
            want = allowed[np.lexsort((allowed, -scores[allowed]))[:top_k]]
            np.testing.assert_array_equal(got_slots[row], want)
            np.testing.assert_array_equal(got_scores[row], scores[want])


def test_a_gallery_searched_through_torch_keeps_no_codes():
    """Codes serve CPU searches; a shard given a GPU (here torch's CPU device, the same code) does not
    spend memory on them, also when a gallery loaded with codes is handed to it."""
    pytest.importorskip("torch")
    vectors = clustered_unit_vectors(coarse_scan.MIN_FACES, DIM, seed=46)
    on_device = GalleryIndex(DIM, IndexConfig(), torch_device="cpu")
    on_device.add(list(range(len(vectors))), vectors, [{}] * len(vectors))
    assert on_device.codes is None
    on_cpu = GalleryIndex(DIM, IndexConfig())
    on_cpu.add(list(range(len(vectors))), vectors, [{}] * len(vectors))
    assert on_cpu.codes is not None
    on_cpu.search_on("cpu")
    assert on_cpu.codes is None
    for got, want in zip(on_cpu.search(vectors[:3], 5), on_device.search(vectors[:3], 5)):
        np.testing.assert_array_equal(got, want)
