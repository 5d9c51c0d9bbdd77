"""1:N search (GET /v2/faces and /v2/galleries/:g/faces with looks_like): ranking, thresholds, filters, pages."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.calls import FILTER_QUERIES, detect, expect_error, facen_source, largest
from tests.factories import clustered_unit_vectors, queries_near, random_meta


def test_search_puts_the_right_person_first_for_every_probe(api, faces_dir, people):
    for name, files in people.items():
        for probe in files[1:]:
            face = largest(detect(api, faces_dir, probe, facen="true").json()["faces"])
            found = api.get(
                "/v2/galleries/people/faces", params={"looks_like": f"detection:{face['id']}", "limit": 3}
            ).json()
            assert found["faces"][0]["meta"]["name"] == name, probe
            confidences = [f["confidence"] for f in found["faces"]]
            assert confidences == sorted(confidences, reverse=True)


def test_the_recommended_threshold_cuts_impostors(api, faces_dir, people):
    stranger = largest(detect(api, faces_dir, "facerec_lin_manuel_miranda.png", facen="true").json()["faces"])
    source = f"detection:{stranger['id']}"
    everyone = api.get("/v2/galleries/people/faces", params={"looks_like": source}).json()["faces"]
    assert len(everyone) == len(people)
    cut = api.get("/v2/galleries/people/faces", params={"looks_like": source, "threshold": "0.6"}).json()
    assert cut["faces"] == [] and cut["next_page"] is None
    expect_error(
        api.get("/v2/galleries/people/faces", params={"looks_like": source, "threshold": "2"}),
        400,
        "BAD_PARAM",
        "threshold",
    )


@pytest.mark.parametrize("query, face_filter", FILTER_QUERIES)
def test_search_with_filters_returns_the_exact_top_faces(api, filtered, query, face_filter):
    probe_id = sorted(filtered)[5]
    probe = filtered[probe_id][0]
    scores = sorted(
        ((float(v @ probe), i) for i, (v, m) in filtered.items() if face_filter.matches(i, m)), reverse=True
    )[:10]
    body = api.get(
        "/v2/galleries/filtered/faces", params={**query, "looks_like": f"face:filtered/{probe_id}", "limit": 10}
    ).json()
    assert [f["id"]["face"] for f in body["faces"]] == [i for _, i in scores]


def test_search_pages_continue_where_the_last_stopped(api, filtered):
    probe = f"face:filtered/{sorted(filtered)[0]}"
    first = api.get("/v2/galleries/filtered/faces", params={"looks_like": probe, "limit": 7}).json()
    second = api.get(
        "/v2/galleries/filtered/faces", params={"looks_like": probe, "limit": 7, "page": first["next_page"]}
    ).json()
    both = api.get("/v2/galleries/filtered/faces", params={"looks_like": probe, "limit": 14}).json()
    assert [f["id"] for f in first["faces"] + second["faces"]] == [f["id"] for f in both["faces"]]
    by_id = api.get("/v2/galleries/filtered/faces", params={"looks_like": probe, "limit": 7, "sort": "id"}).json()
    assert sorted(f["id"]["face"] for f in first["faces"]) == [f["id"]["face"] for f in by_id["faces"]]
    expect_error(api.get("/v2/galleries/filtered/faces", params={"page": "garbage"}), 400, "BAD_PARAM", "page")
    expect_error(api.get("/v2/galleries/filtered/faces", params={"sort": "-confidence"}), 400, "BAD_PARAM", "sort")
    expect_error(api.get("/v2/galleries/filtered/faces", params={"meta:near:x": "1"}), 400, "BAD_PARAM")
    expect_error(api.get("/v2/galleries/filtered/faces", params={"id:in": "1,x"}), 400, "BAD_PARAM", "id:in")


def test_search_across_galleries_names_each_faces_gallery(api, people, filtered):
    probe = "face:people/1"
    body = api.get("/v2/faces", params={"gallery": ["people", "filtered"], "looks_like": probe, "limit": 5}).json()
    assert body["faces"][0]["id"] == {"gallery": "people", "face": 1}
    assert {f["id"]["gallery"] for f in body["faces"]} <= {"people", "filtered"}
    # Every gallery: other tests may hold copies of the same face elsewhere, all as close as the probe itself.
    everywhere = api.get("/v2/faces", params={"looks_like": probe, "limit": 20}).json()["faces"]
    best = everywhere[0]["confidence"]
    assert {"gallery": "people", "face": 1} in [face["id"] for face in everywhere if face["confidence"] >= best - 1e-6]
    expect_error(api.get("/v2/faces", params={"gallery": "nowhere", "looks_like": probe}), 404, "GALLERY_NOT_FOUND")


def test_the_service_finds_what_the_pipeline_finds(api, faces_dir, pipeline, load_photo):
    """One code path: the Detector and Extractor replicas run the in-process pipeline's stages."""
    name = "facerec_two_people.jpg"
    served = detect(api, faces_dir, name, facen="true", landmarks="true").json()["faces"]
    local = pipeline.detect([load_photo(name)])[0]
    assert len(served) == len(local) == 2
    for face, reference in zip(served, local):
        left, top, right, bottom = reference.box.tolist()
        assert face["bbox"] == {
            "left": round(max(left, 0)),
            "top": round(max(top, 0)),
            "right": round(right),
            "bottom": round(bottom),
        }
        np.testing.assert_allclose(face["landmarks"], reference.landmarks, atol=0.01)
        # The vector the service cached for the face is the pipeline's (cosine ~1, the calibration's top).
        verified = api.get(
            "/v2/verify", params={"face1": f"detection:{face['id']}", "face2": facen_source(reference.facen)}
        ).json()
        assert verified["confidence"] >= 0.999999


@pytest.mark.embedded_only("searching a shard's codes is the same on every backend")
def test_a_gallery_large_enough_for_codes_answers_the_exact_top_faces(api):
    """Past index/coarse_scan.py's MIN_FACES a shard, a flat gallery is searched through 8-bit codes and a
    re-rank: over HTTP the answer stays the exact top-k, with filters, after deletes, and for faces added
    after the codes were trained that lie far outside their ranges."""
    from index.coarse_scan import MIN_FACES

    first = 2 * MIN_FACES + 4000  # both shards past MIN_FACES, the hash split being about even
    vectors = np.concatenate([clustered_unit_vectors(first, 128, seed=41), -clustered_unit_vectors(2000, 128, seed=44)])
    count = len(vectors)
    metas = random_meta(count, seed=42)
    api.post("/v2/galleries/coded")
    try:
        bounds = [(s, min(s + 1000, first)) for s in range(0, first, 1000)]
        for start, stop in bounds + [(first, first + 1000), (first + 1000, count)]:
            items = [{"id": i + 1, "from": facen_source(vectors[i]), "meta": metas[i]} for i in range(start, stop)]
            results = api.post("/v2/galleries/coded/faces", json={"faces": items}, timeout=60).json()["results"]
            assert all("code" not in r for r in results)
        replicas = [replica for shard in api.get("/readyz").json()["shards"] for replica in shard]
        assert all(replica["coded_faces"] >= MIN_FACES for replica in replicas), replicas
        deleted = set(range(1, count + 1, 9)[:200])
        for face_id in sorted(deleted):
            assert api.delete(f"/v2/galleries/coded/faces/{face_id}").json() == {}
        probes = np.concatenate([queries_near(vectors[:first], 3, seed=43), queries_near(vectors[first:], 3, seed=45)])
        exact = probes.astype(np.float64) @ vectors.astype(np.float64).T
        for (query, face_filter), probe, scores in zip(FILTER_QUERIES[:3] * 2, probes, exact):
            passing = [i for i in range(count) if i + 1 not in deleted and face_filter.matches(i + 1, metas[i])]
            wanted = sorted(passing, key=lambda i: (-np.float32(scores[i]), i))[:10]
            body = api.get(
                "/v2/galleries/coded/faces", params={**query, "looks_like": facen_source(probe), "limit": 10}
            ).json()
            assert [f["id"]["face"] for f in body["faces"]] == [i + 1 for i in wanted], (query, body, wanted)
    finally:
        api.delete("/v2/galleries/coded")
