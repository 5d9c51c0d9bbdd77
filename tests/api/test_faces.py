"""/v2/galleries/:g/faces: one face and bulk adds, reads, meta patches, deletes, filtered listings."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.calls import FILTER_QUERIES, expect_error, facen_source
from tests.factories import clustered_unit_vectors


def test_faces_are_added_read_patched_and_deleted(api, faces_dir, people):
    api.post("/v2/galleries/crud")
    vector = clustered_unit_vectors(1, 128, seed=3)[0]
    added = api.post(
        "/v2/galleries/crud/faces/18446744073709551615",
        json={"from": facen_source(vector), "meta": {"name": "Ann", "tags": ["a", "b"]}},
    ).json()
    assert added == {
        "id": {"gallery": "crud", "face": 18446744073709551615},
        "meta": {"name": "Ann", "tags": ["a", "b"]},
        "features": {},
        "attributes": {},
    }
    expect_error(
        api.post("/v2/galleries/crud/faces/18446744073709551615", json={"from": facen_source(vector)}), 409, "CONFLICT"
    )
    copied = api.post("/v2/galleries/crud/faces/2", params={"from": "face:people/1"}).json()
    assert copied["id"] == {"gallery": "crud", "face": 2}
    patched = api.patch("/v2/galleries/crud/faces/18446744073709551615", json={"meta": {"age": 30}}).json()
    assert patched["meta"] == {"name": "Ann", "tags": ["a", "b"], "age": 30}
    assert api.get("/v2/galleries/crud/faces/18446744073709551615").json()["meta"]["age"] == 30
    assert api.delete("/v2/galleries/crud/faces/2").json() == {}
    expect_error(api.get("/v2/galleries/crud/faces/2"), 404, "NOT_FOUND")
    expect_error(api.delete("/v2/galleries/crud/faces/2"), 404, "NOT_FOUND")
    expect_error(api.get("/v2/galleries/nowhere/faces/1"), 404, "GALLERY_NOT_FOUND")
    expect_error(
        api.post("/v2/galleries/crud/faces/18446744073709551616", json={"from": facen_source(vector)}),
        400,
        "BAD_PARAM",
        "id",
    )
    expect_error(
        api.post("/v2/galleries/crud/faces/3", json={"from": "detection:nosuchdetection00"}), 400, "SOURCE_NOT_FOUND"
    )
    expect_error(
        api.post("/v2/galleries/crud/faces/3", json={"from": "face:nowhere/1"}), 400, "SOURCE_GALLERY_NOT_FOUND"
    )
    expect_error(api.post("/v2/galleries/crud/faces/3", json={"from": "face:people/999"}), 400, "SOURCE_NOT_FOUND")
    expect_error(
        api.post("/v2/galleries/crud/faces/3", json={"from": facen_source(np.ones(64))}), 400, "BAD_PARAM", "from"
    )
    expect_error(api.post("/v2/galleries/crud/faces/3", json={"from": "facen:@@@"}), 400, "BAD_PARAM", "from")
    expect_error(
        api.post("/v2/galleries/crud/faces/3", json={"from": facen_source(vector), "meta": {"x": 1.5}}),
        400,
        "BAD_PARAM",
    )
    expect_error(
        api.post("/v2/galleries/crud/faces/3", content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "MALFORMED_REQUEST",
    )
    expect_error(api.patch("/v2/galleries/crud/faces/3", json={"meta": {"a": 1}}), 404, "NOT_FOUND")
    assert api.get("/v2/galleries/crud").json()["number_of_elements"] == 1


def test_bulk_add_reports_each_item_and_writes_only_good_faces(api, limits):
    api.post("/v2/galleries/bulk")
    vectors = clustered_unit_vectors(4, 128, seed=4)
    items = [
        {"id": 1, "from": facen_source(vectors[0]), "meta": {"k": "a"}},
        {"id": 2, "from": "detection:missing000000000000"},
        {"id": 3, "from": facen_source(vectors[2]), "meta": {"bad": {"nested": 1}}},
        {"id": 1, "from": facen_source(vectors[3])},
        {"id": 4, "from": facen_source(vectors[3])},
    ]
    results = api.post("/v2/galleries/bulk/faces", json={"faces": items}).json()["results"]
    assert [r.get("code") for r in results] == [None, "SOURCE_NOT_FOUND", "BAD_PARAM", "CONFLICT", None]
    assert results[0]["id"] == {"gallery": "bulk", "face": 1}
    assert api.get("/v2/galleries/bulk").json()["number_of_elements"] == 2
    expect_error(api.get("/v2/galleries/bulk/faces/3"), 404, "NOT_FOUND")
    limit = limits.max_bulk_faces
    too_many = {"faces": [{"id": i, "from": facen_source(vectors[0])} for i in range(limit + 1)]}
    expect_error(api.post("/v2/galleries/bulk/faces", json=too_many), 400, "BAD_PARAM", "faces")


def test_ten_thousand_faces_added_in_bulk_all_land(api, limits):
    api.post("/v2/galleries/ten-thousand")
    vectors = clustered_unit_vectors(10_000, 128, seed=12)
    size = limits.max_bulk_faces
    for start in range(0, 10_000, size):
        items = [
            {"id": start + i, "from": facen_source(v), "meta": {"n": start + i}}
            for i, v in enumerate(vectors[start : start + size])
        ]
        results = api.post("/v2/galleries/ten-thousand/faces", json={"faces": items}).json()["results"]
        assert all("code" not in r for r in results)
    assert api.get("/v2/galleries/ten-thousand").json()["number_of_elements"] == 10_000
    listed = api.get("/v2/galleries/ten-thousand/faces", params={"limit": 500, "sort": "id", "id:gte": 9_600}).json()
    assert [f["id"]["face"] for f in listed["faces"]] == list(range(9_600, 10_000))
    found = api.get("/v2/galleries/ten-thousand/faces", params={"looks_like": "face:ten-thousand/4321", "limit": 1})
    assert found.json()["faces"][0]["id"]["face"] == 4321


def test_meta_beyond_its_bounds_is_bad_param_naming_the_field(api, people):
    source = {"from": "face:people/1"}
    for meta, param in (
        ({"note": "x" * 2**20}, "meta.note"),
        ({f"k{i}": i for i in range(10_000)}, "meta"),
        ({"big": 2**64}, "meta.big"),
        ({"tags": ["t"] * 1000}, "meta.tags"),
    ):
        expect_error(
            api.post("/v2/galleries/people/faces/424243", json={**source, "meta": meta}), 400, "BAD_PARAM", param
        )
    expect_error(api.get("/v2/galleries/people/faces/424243"), 404, "NOT_FOUND")
    results = api.post(
        "/v2/galleries/people/faces",
        json={
            "faces": [
                {"id": 424244, **source, "meta": {"big": -(2**63) - 1}},
                {"id": 424245, **source, "meta": {"big": -(2**63)}},
            ]
        },
    )
    first, second = results.json()["results"]
    assert first["code"] == "BAD_PARAM" and first["param"] == "meta.big" and second["meta"] == {"big": -(2**63)}
    expect_error(
        api.patch("/v2/galleries/people/faces/424245", json={"meta": {"note": "x" * 2**20}}),
        400,
        "BAD_PARAM",
        "meta.note",
    )
    assert api.get("/v2/galleries/people/faces/424245").json()["meta"] == {"big": -(2**63)}
    assert api.delete("/v2/galleries/people/faces/424245").status_code == 200


# Every address but loopback unreachable: names do not resolve, and anything else goes to a dead proxy.


@pytest.mark.parametrize("query, face_filter", FILTER_QUERIES)
def test_listing_with_filters_pages_through_exactly_the_matching_ids(api, filtered, query, face_filter):
    expected = sorted((i for i, (_, m) in filtered.items() if face_filter.matches(i, m)), reverse=True)
    seen, page = [], None
    while True:
        paging = {"page": page} if page else {}
        body = api.get("/v2/galleries/filtered/faces", params={**query, "limit": 40, **paging}).json()
        seen += [f["id"]["face"] for f in body["faces"]]
        page = body["next_page"]
        if page is None:
            break
    assert seen == expected
    ascending = api.get("/v2/galleries/filtered/faces", params={**query, "sort": "id", "limit": 500}).json()
    assert [f["id"]["face"] for f in ascending["faces"]] == expected[::-1]
