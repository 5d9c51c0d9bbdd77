"""The /v2 API over real HTTP, against the running Ray Serve app with the real models.

Each endpoint and extension of ../shared/spec/API.md has a test here; the photos come from
../shared/faces (tests that need them skip without it).
"""

from __future__ import annotations

import base64
import csv
import io
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import clustered_unit_vectors, random_meta
from index.filters import FaceFilter
from store.base import FaceRecord
from tests.conftest import SERVICE_PORT, run_services

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@pytest.fixture(scope="module")
def api(service):
    api_limits.settings = service.settings
    return service.client


def api_limits(_api):
    return api_limits.settings.limits


def photo(faces_dir: Path, name: str) -> tuple[bytes, str]:
    path = faces_dir / name
    return path.read_bytes(), CONTENT_TYPES[path.suffix.lower()]


def detect(api, faces_dir, name, **query):
    data, content_type = photo(faces_dir, name)
    return api.post("/v2/detect", params=query, content=data, headers={"Content-Type": content_type})


def expect_error(response, status: int, code: str, param: str | None = None) -> dict:
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    assert isinstance(body["desc"], str) and body["desc"]
    if param is not None:
        assert body["param"] == param and "value" in body
    return body


def facen_source(vector: np.ndarray) -> str:
    return "facen:" + base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()


def largest(faces: list[dict]) -> dict:
    return max(faces, key=lambda f: (f["bbox"]["right"] - f["bbox"]["left"]) * (f["bbox"]["bottom"] - f["bbox"]["top"]))


# ---- detection ----------------------------------------------------------------------------------


def test_detect_finds_every_face_of_a_group_photo(api, faces_dir):
    response = detect(api, faces_dir, "faceapi_bbt4.jpg")
    assert response.status_code == 200
    body = response.json()
    assert body["orientation"] == 1 and len(body["faces"]) == 6
    for face in body["faces"]:
        assert set(face) == {"bbox", "detection_score"}
        box = face["bbox"]
        assert all(isinstance(box[k], int) for k in ("left", "top", "right", "bottom"))
        assert box["right"] > box["left"] and box["bottom"] > box["top"] and face["detection_score"] > 0.9


def test_detect_on_a_photo_without_faces_answers_an_empty_list(api, faces_dir):
    response = detect(api, faces_dir, "faceapi_test_white.png", facen="true")
    assert response.status_code == 200 and response.json()["faces"] == []


def test_detect_with_facen_caches_each_face_for_later(api, faces_dir):
    faces = detect(api, faces_dir, "facerec_two_people.jpg", facen="yes").json()["faces"]
    assert len(faces) == 2 and len({f["id"] for f in faces}) == 2
    assert all("facen" not in f for f in faces)
    cached = api.get(f"/v2/detect/{faces[0]['id']}").json()
    assert cached["id"] == faces[0]["id"] and cached["bbox"] == faces[0]["bbox"] and "facen" not in cached
    expect_error(api.get("/v2/detect/doesnotexist0000"), 404, "NOT_FOUND")


def test_detect_gives_attributes_in_both_styles(api, faces_dir):
    body = detect(api, faces_dir, "faceapi_happy.jpg", gender="1", age="on", emotions="TRUE").json()
    expect_error(detect(api, faces_dir, "faceapi_happy.jpg", age="1", attribute="age"), 400, "BAD_PARAM", "attribute")
    face = body["faces"][0]
    assert face["features"]["gender"]["gender"] in ("MALE", "FEMALE")
    assert isinstance(face["features"]["age"], int)
    assert face["features"]["emotions"][0]["emotion"] == "happy"
    face = detect(api, faces_dir, "faceapi_happy.jpg", attribute=["age", "gender"]).json()["faces"][0]
    assert set(face["attributes"]) == {"age", "gender"} and "features" not in face
    assert face["attributes"]["age"]["attribute"] == "age" and isinstance(face["attributes"]["age"]["result"], int)


def test_return_facen_is_refused_unless_configured(api, faces_dir):
    expect_error(detect(api, faces_dir, "faceapi_amy1.png", return_facen="true"), 400, "BAD_PARAM", "return_facen")


def test_roi_limits_the_search_and_boxes_stay_in_image_coordinates(api, faces_dir):
    whole = detect(api, faces_dir, "facerec_two_people.jpg").json()["faces"]
    right = max(whole, key=lambda f: f["bbox"]["left"])
    roi = f"{right['bbox']['left'] - 40},0,{right['bbox']['right'] + 40},{right['bbox']['bottom'] + 40}"
    faces = detect(api, faces_dir, "facerec_two_people.jpg", roi=roi).json()["faces"]
    assert len(faces) == 1
    tolerance = 0.08 * (right["bbox"]["right"] - right["bbox"]["left"])  # a crop shifts the pyramid a little
    assert all(abs(faces[0]["bbox"][k] - right["bbox"][k]) <= tolerance for k in right["bbox"]), (faces, right)
    expect_error(detect(api, faces_dir, "facerec_two_people.jpg", roi="1,2,x"), 400, "BAD_PARAM", "roi")


def test_autorotate_finds_the_face_in_a_photo_lying_on_its_side(api, faces_dir):
    image = Image.open(faces_dir / "facerec_obama_480p.jpg").rotate(90, expand=True)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    plain = api.post("/v2/detect", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"}).json()
    turned = api.post(
        "/v2/detect", params={"autorotate": "true"}, content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"}
    ).json()
    assert len(turned["faces"]) == 1 and len(plain["faces"]) == 0
    assert turned["orientation"] != 1


def test_landmarks_extension_gives_five_points_inside_the_box(api, faces_dir):
    face = detect(api, faces_dir, "facerec_obama_480p.jpg", landmarks="true").json()["faces"][0]
    box = face["bbox"]
    assert len(face["landmarks"]) == 5
    assert all(box["left"] <= x <= box["right"] and box["top"] <= y <= box["bottom"] for x, y in face["landmarks"])


def test_normalized_detector_takes_an_aligned_crop_as_one_face(api, faces_dir):
    face = detect(api, faces_dir, "faceapi_amy1.png", detector="normalized", facen="true").json()["faces"]
    assert len(face) == 1 and face[0]["bbox"] == {"left": 0, "top": 0, "right": 150, "bottom": 150}
    expect_error(detect(api, faces_dir, "faceapi_amy1.png", detector="magic"), 400, "BAD_PARAM", "detector")


def test_multipart_upload_with_a_photo_part(api, faces_dir):
    data, content_type = photo(faces_dir, "facerec_obama_480p.jpg")
    response = api.post("/v2/detect", files={"photo": ("p.jpg", data, content_type)})
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
    expect_error(api.post("/v2/detect", files={"other": ("p.jpg", data, content_type)}), 400, "MALFORMED_REQUEST")


class _PhotoServer(BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self):
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/photo.jpg")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


def test_image_urls_are_fetched_directly_and_safely(api, faces_dir):
    _PhotoServer.payload = photo(faces_dir, "facerec_obama_480p.jpg")[0]
    server = HTTPServer(("127.0.0.1", 0), _PhotoServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:

        def by_url(url):
            return api.post("/v2/detect", content=url, headers={"Content-Type": "text/x-url"})

        assert len(by_url(f"{base}/photo.jpg").json()["faces"]) == 1
        expect_error(by_url(f"{base}/moved"), 503, "EXTRACTION_ERROR")
        for refused_host in (
            "127.0.0.2",
            "[::1]",
            "[::ffff:127.0.0.2]",
            "[::127.0.0.1]",
            "[::ffff:7f00:2]",
            "[64:ff9b::7f00:2]",
            "[2002:7f00:2::]",
            "0x7f000002",
            "2130706434",
        ):
            expect_error(by_url(f"http://{refused_host}:{server.server_port}/photo.jpg"), 400, "BAD_PARAM", "url")
        expect_error(by_url("ftp://example.invalid/x.jpg"), 400, "BAD_PARAM", "url")
    finally:
        server.shutdown()
    expect_error(
        api.post("/v2/detect", content=f"{base}/photo.jpg", headers={"Content-Type": "text/x-url"}),
        503,
        "EXTRACTION_ERROR",
    )


# ---- galleries, faces, search -------------------------------------------------------------------


@pytest.fixture(scope="module")
def people(api, faces_dir):
    """One gallery with the first photo of every person who has several; the rest are probes."""
    rows = list(csv.DictReader(open(faces_dir / "labels.csv", newline="")))
    by_person: dict[str, list[str]] = {}
    for row in rows:
        if row["identity"] not in ("multi", "unknown"):
            by_person.setdefault(row["identity"], []).append(row["file"])
    people = {name: files for name, files in by_person.items() if len(files) > 1}
    assert api.post("/v2/galleries/people").status_code == 200
    for number, (name, files) in enumerate(sorted(people.items()), start=1):
        face = largest(detect(api, faces_dir, files[0], facen="true").json()["faces"])
        added = api.post(
            f"/v2/galleries/people/faces/{number}", json={"from": f"detection:{face['id']}", "meta": {"name": name}}
        )
        assert added.status_code == 200, added.json()
    return people


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


def test_verify_says_same_person_or_not(api, faces_dir, people):
    same = api.get("/v2/verify", params={"face1": "face:people/1", "face2": "face:people/1"}).json()
    assert same["verified"] is True and same["confidence"] > 0.99
    obama = largest(detect(api, faces_dir, "facerec_obama3.jpg", facen="true").json()["faces"])["id"]
    biden = largest(detect(api, faces_dir, "facerec_knn_train_biden_biden2.jpg", facen="true").json()["faces"])["id"]
    number = sorted(people).index("obama") + 1
    match = api.post("/v2/verify", params={"face1": f"detection:{obama}", "face2": f"face:people/{number}"}).json()
    other = api.get("/v2/verify", params={"face1": f"detection:{obama}", "face2": f"detection:{biden}"}).json()
    assert match["verified"] is True and other["verified"] is False and match["confidence"] > other["confidence"]
    strict = api.get(
        "/v2/verify", params={"face1": f"detection:{obama}", "face2": f"face:people/{number}", "threshold": "1"}
    ).json()
    assert strict["verified"] is False
    expect_error(api.get("/v2/verify", params={"face1": "face:people/1"}), 400, "BAD_PARAM", "face2")


def test_galleries_are_created_listed_read_and_deleted(api):
    assert api.post("/v2/galleries/temp-1").json() == {"name": "temp-1"}
    expect_error(api.post("/v2/galleries/temp-1"), 409, "CONFLICT")
    expect_error(api.post("/v2/galleries/bad%20name"), 400, "BAD_PARAM", "gallery")
    api.post("/v2/galleries/temp-1/faces/5", json={"from": facen_source(np.ones(128))})
    assert api.get("/v2/galleries/temp-1").json() == {
        "name": "temp-1",
        "number_of_elements": 1,
        "model": "sface_2021dec.v1",
        "dim": 128,
    }
    listed = {g["name"]: g["number_of_elements"] for g in api.get("/v2/galleries").json()["galleries"]}
    assert listed["temp-1"] == 1
    assert api.delete("/v2/galleries/temp-1").json() == {}
    expect_error(api.get("/v2/galleries/temp-1"), 404, "GALLERY_NOT_FOUND")
    expect_error(api.delete("/v2/galleries/temp-1"), 404, "GALLERY_NOT_FOUND")


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


def test_bulk_add_reports_each_item_and_writes_only_good_faces(api):
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
    limit = api_limits(api).max_bulk_faces
    too_many = {"faces": [{"id": i, "from": facen_source(vectors[0])} for i in range(limit + 1)]}
    expect_error(api.post("/v2/galleries/bulk/faces", json=too_many), 400, "BAD_PARAM", "faces")


@pytest.fixture(scope="module")
def filtered(api):
    """A gallery of 300 synthetic faces with meta, and its exact contents for reference."""
    vectors = clustered_unit_vectors(300, 128, seed=7)
    metas = random_meta(300, seed=8)
    api.post("/v2/galleries/filtered")
    ids = [int(i) for i in np.random.default_rng(9).choice(10**12, 300, replace=False)]
    items = [{"id": i, "from": facen_source(v), "meta": m} for i, v, m in zip(ids, vectors, metas)]
    for start in range(0, 300, 50):
        results = api.post("/v2/galleries/filtered/faces", json={"faces": items[start : start + 50]}).json()
        assert all("code" not in r for r in results["results"])
    return {i: (v, m) for i, v, m in zip(ids, vectors, metas)}


FILTER_QUERIES = [
    ({}, FaceFilter()),
    ({"meta:in:name": "ann,eve"}, FaceFilter(meta_in=(("name", ("ann", "eve")),))),
    ({"meta:gte:cam": "3", "meta:lte:cam": "6"}, FaceFilter(meta_gte=(("cam", "3"),), meta_lte=(("cam", "6"),))),
    ({"meta:subset:tags": ["vip", "staff"]}, FaceFilter(meta_subset=(("tags", ("vip", "staff")),))),
    ({"id:gte": "200000000000", "id:lte": "700000000000"}, FaceFilter(id_gte=200000000000, id_lte=700000000000)),
]


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
    everywhere = api.get("/v2/faces", params={"looks_like": probe, "limit": 5}).json()
    assert everywhere["faces"][0]["id"] == {"gallery": "people", "face": 1}
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


def _gallery_in_store(service, name: str, dim: int, model: str | None) -> None:
    """A gallery written straight into the embedded store: model None is how facegrid 0.1 left one (its
    vectors' length, no model recorded)."""
    from store.sqlite import SqliteFaceStore

    settings = service.settings
    store = SqliteFaceStore(settings.store.path, settings.index.num_shards)
    store.create_gallery(name)
    store.add_faces([FaceRecord(name, 1, clustered_unit_vectors(1, dim, seed=11)[0], model=model)])
    store.close()


def test_a_gallery_is_bound_to_the_model_that_filled_it(api, service, faces_dir):
    """The test service serves dlib beside SFace (models.extra_extractors), as for a store filled by 0.1."""
    if service.backends != "embedded":
        pytest.skip("writes galleries straight into the embedded store")
    api.post("/v2/galleries/bound")
    assert api.get("/v2/galleries/bound").json()["model"] is None
    detected = detect(api, faces_dir, "facerec_obama3.jpg", facen="true").json()["faces"][0]["id"]
    again = detect(api, faces_dir, "facerec_obama3.jpg", facen="true").json()["faces"][0]["id"]
    assert api.post("/v2/galleries/bound/faces/1", json={"from": f"detection:{detected}"}).status_code == 200
    assert api.get("/v2/galleries/bound").json()["model"] == "sface_2021dec.v1"

    # A 0.1 gallery holds dlib vectors: detections add and search it with their dlib vector.
    _gallery_in_store(service, "legacy", 128, None)
    assert api.get("/v2/galleries/legacy").json()["model"] == "dlib_resnet.v1"
    assert api.post("/v2/galleries/legacy/faces/2", json={"from": f"detection:{detected}"}).status_code == 200
    found = api.get("/v2/galleries/legacy/faces", params={"looks_like": f"detection:{again}", "limit": 1}).json()
    assert found["faces"][0]["id"] == {"gallery": "legacy", "face": 2} and found["faces"][0]["confidence"] > 0.99
    assert api.get("/v2/verify", params={"face1": f"detection:{again}", "face2": "face:legacy/2"}).json()["verified"]
    # Vectors of different models never meet.
    expect_error(api.post("/v2/galleries/legacy/faces/3", json={"from": "face:bound/1"}), 400, "BAD_PARAM", "from")
    expect_error(
        api.get("/v2/verify", params={"face1": "face:bound/1", "face2": "face:legacy/2"}), 400, "BAD_PARAM", "face2"
    )
    # A raw vector is taken as the gallery's model when its length fits.
    vector = clustered_unit_vectors(1, 128, seed=12)[0]
    assert api.post("/v2/galleries/legacy/faces/4", json={"from": facen_source(vector)}).status_code == 200

    # A gallery of a model this deployment does not run keeps its vectors but takes no detections.
    _gallery_in_store(service, "other", 512, "arcface_512.v1")
    assert api.get("/v2/galleries/other").json() | {"number_of_elements": 0} == {
        "name": "other",
        "number_of_elements": 0,
        "model": "arcface_512.v1",
        "dim": 512,
    }
    body = expect_error(
        api.post("/v2/galleries/other/faces/2", json={"from": f"detection:{detected}"}), 400, "BAD_PARAM", "from"
    )
    assert "does not run arcface_512.v1" in body["desc"]
    expect_error(
        api.get("/v2/galleries/other/faces", params={"looks_like": f"detection:{detected}"}),
        400,
        "BAD_PARAM",
        "looks_like",
    )
    for gallery in ("bound", "legacy", "other"):
        api.delete(f"/v2/galleries/{gallery}")


# ---- protocol, limits, operations ---------------------------------------------------------------


def test_request_errors_get_the_spec_codes(api, faces_dir):
    expect_error(api.get("/v2/nothing-here"), 404, "NOT_FOUND")
    expect_error(api.put("/v2/galleries/people"), 501, "NOT_IMPLEMENTED")
    expect_error(api.post("/v2/detect", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "MALFORMED_REQUEST")
    expect_error(
        api.post("/v2/detect", content=b"\xff\xd8garbage", headers={"Content-Type": "image/jpeg"}),
        400,
        "MALFORMED_REQUEST",
    )
    expect_error(
        api.post("/v2/detect", content=b"hello", headers={"Content-Type": "application/json"}), 400, "MALFORMED_REQUEST"
    )
    expect_error(detect(api, faces_dir, "faceapi_amy1.png", facen="maybe"), 400, "BAD_PARAM", "facen")
    wide = io.BytesIO()
    Image.new("RGB", (6001, 8)).save(wide, "PNG")
    expect_error(
        api.post("/v2/detect", content=wide.getvalue(), headers={"Content-Type": "image/png"}),
        400,
        "BAD_PARAM",
        "image",
    )
    expect_error(
        api.post("/v2/detect", content=b"\xff" * (5 * 2**20), headers={"Content-Type": "image/jpeg"}),
        400,
        "BAD_PARAM",
        "body",
    )


def test_a_body_over_the_limit_is_answered_not_reset_however_it_is_sent(api):
    """Six times the limit, declared or chunked: the client finishes its upload and reads a 400."""
    big = b"\xff" * (6 * api_limits(api).max_body_bytes)

    def chunked():
        for start in range(0, len(big), 2**20):
            yield big[start : start + 2**20]

    for path, content_type in (
        ("/v2/detect", "image/jpeg"),
        ("/v2/galleries/people/faces", "application/json"),
        ("/v2/detect", "multipart/form-data; boundary=x"),
    ):
        for body in (big, chunked()):
            expect_error(api.post(path, content=body, headers={"Content-Type": content_type}), 400, "BAD_PARAM", "body")
    expect_error(api.post("/v2/verify", content=big), 400, "BAD_PARAM", "body")  # a route that reads no body


def test_trailing_slashes_docs_and_health(api):
    assert api.get("/v2/galleries/").status_code == 200
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz").json()
    assert ready["ready"] is True and set(ready["checks"]) == {"detector", "extractor", "store", "cache", "shards"}
    replicas = [replica for shard in ready["shards"] for replica in shard]
    assert replicas and all(r["state"] == "ready" and r["huge_page_bytes"] >= 0 for r in replicas)
    assert "/v2/detect" in api.get("/v2/openapi.json").json()["paths"]
    assert api.get("/v2/docs").status_code == 200
    assert api.get("/v2/docs/v2/overview.html").text == api.get("/v2/docs").text


def wait_until(check, seconds: float = 90) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_an_unavailable_store_answers_storage_error_and_recovers_without_restart(api, service, people):
    """Embedded: another process holds the SQLite write lock. Cluster: Cassandra is stopped, then started."""
    if service.backends == "embedded":
        import sqlite3

        holder = sqlite3.connect(service.settings.store.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            expect_error(api.post("/v2/galleries/while-down"), 503, "STORAGE_ERROR")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        run_services("stop-cassandra")
        try:
            expect_error(api.post("/v2/galleries/while-down"), 503, "STORAGE_ERROR")
            expect_error(api.get("/v2/galleries/people/faces/1"), 503, "STORAGE_ERROR")
        finally:
            run_services("start-cassandra")
    assert wait_until(lambda: api.post("/v2/galleries/while-down").status_code == 200)
    assert api.get("/v2/galleries/people/faces/1").status_code == 200


def test_a_lost_cache_answers_cache_error_then_recovers_without_restart(api, faces_dir, service, ray_session, people):
    """Embedded: the cache actor is killed. Cluster: memcached is stopped, then started."""
    if service.backends == "embedded":
        cache = ray_session.get_actor("facegrid-detection-cache", namespace="facegrid-tests")
        ray_session.kill(cache, no_restart=True)
    else:
        run_services("stop-memcached")
    try:
        expect_error(detect(api, faces_dir, "faceapi_amy1.png", facen="true"), 503, "CACHE_ERROR")
        if service.backends == "cluster":  # the embedded cache is re-created by the next call already
            expect_error(api.get("/v2/detect/00000000000000000000"), 503, "CACHE_ERROR")
        assert detect(api, faces_dir, "faceapi_amy1.png").status_code == 200  # detection alone needs no cache
        assert api.get("/v2/galleries").status_code == 200
        assert api.get("/v2/galleries/people/faces", params={"looks_like": "face:people/1"}).status_code == 200
    finally:
        if service.backends == "cluster":
            run_services("start-memcached")
    assert wait_until(lambda: detect(api, faces_dir, "faceapi_amy1.png", facen="true").status_code == 200, 30)


def test_ten_thousand_faces_added_in_bulk_all_land(api):
    api.post("/v2/galleries/ten-thousand")
    vectors = clustered_unit_vectors(10_000, 128, seed=12)
    size = api_limits(api).max_bulk_faces
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


def test_detects_under_way_together_share_model_batches(api, faces_dir):
    """The ingress tells the model replicas how many calls are coming (models.deployments.LoadAwareBatching):
    requests sent together run in shared batches, each answered as it is alone."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.serving import batch_counts

    data, content_type = photo(faces_dir, "faceapi_amy1.png")

    def one(_):
        return api.post("/v2/detect", params={"facen": "true"}, content=data, headers={"Content-Type": content_type})

    alone = one(0).json()["faces"]
    before = batch_counts()
    # The test service's Detector holds 2 running + 4 queued; 4 leave room for a request Serve still counts.
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(4)))
    ran = {name: counts - before[name] for name, counts in batch_counts().items()}
    assert [r.status_code for r in responses] == [200] * 4
    assert all([face["bbox"] for face in r.json()["faces"]] == [face["bbox"] for face in alone] for r in responses)
    for name, batches in ran.items():
        assert sum(size * count for size, count in batches.items()) == 4, (name, batches)
        assert max(batches) >= 2, (name, batches)


def test_full_model_queues_answer_429_at_once(api, faces_dir):
    from concurrent.futures import ThreadPoolExecutor

    data, content_type = photo(faces_dir, "faceapi_bbt4.jpg")

    def one(_):
        return api.post("/v2/detect", content=data, headers={"Content-Type": content_type})

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(one, range(24)))
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert all(r.json()["code"] == "OVER_CAPACITY" and int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.status_code in (200, 429) for r in responses)
    assert one(0).status_code == 200


def test_failed_and_abandoned_detects_give_their_queue_place_back(api, faces_dir):
    # The test service admits 6 detects at a time (Detector: 2 ongoing + 4 queued); many more failures
    # than that, one after another, must leave every place free again.
    for _ in range(4):
        expect_error(
            api.post("/v2/detect", content=b"\xff\xd8garbage", headers={"Content-Type": "image/jpeg"}),
            400,
            "MALFORMED_REQUEST",
        )
        expect_error(
            api.post("/v2/detect/", content=b"", headers={"Content-Type": "image/jpeg"}), 400, "MALFORMED_REQUEST"
        )
        expect_error(detect(api, faces_dir, "faceapi_amy1.png", facen="maybe"), 400, "BAD_PARAM", "facen")
    # Clients that give up before their answer (here after 50 ms, on a slow group photo) free theirs too.
    import httpx

    data, content_type = photo(faces_dir, "faceapi_bbt1.jpg")
    for _ in range(8):
        try:
            api.post("/v2/detect", content=data, headers={"Content-Type": content_type}, timeout=0.05)
        except httpx.TimeoutException:
            pass
    assert wait_until(lambda: detect(api, faces_dir, "faceapi_amy1.png").status_code == 200, 30)
    answers = [detect(api, faces_dir, "faceapi_amy1.png") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]


def test_custom_metrics_reach_the_prometheus_export(api, people, filtered, metrics_port):
    import httpx

    api.get("/v2/galleries/people/faces", params={"looks_like": "face:people/1"})
    wanted = {
        "facegrid_gallery_faces",
        "facegrid_search_latency_s",
        "facegrid_model_batch_size",
        "facegrid_over_capacity_total",
    }  # the overload test above produced 429s

    def exported() -> set[str]:
        try:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return set()
        return {name for name in wanted if name in text}

    assert wait_until(lambda: exported() == wanted, 60), exported()
    # The Grafana dashboard names only series the export has (each series name as a whole word).
    import json
    import re

    dashboard = json.loads((Path(__file__).parent.parent / "cluster" / "grafana" / "facegrid.json").read_text())
    named = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bray_facegrid_\w+", target["expr"])
    }
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    series = set(re.findall(r"^(\w+)(?:\{| )", text, re.M))
    assert len(named) >= 6 and named <= series, named - series


def test_detection_ids_the_server_never_issues_are_not_found_on_every_backend(api, people):
    from urllib.parse import quote

    for bad in ("a b", "abc\r\nstats", "é" * 20, "x" * 10_000, "0123456789abcdefghijk", "ABCDEFGHIJ0123456789"):
        body = expect_error(api.get(f"/v2/detect/{quote(bad, safe='')}"), 404, "NOT_FOUND")
        assert "facegrid:" not in body["desc"] and "memcache" not in body["desc"].lower()
        for response in (
            api.post("/v2/galleries/people/faces/424242", json={"from": f"detection:{bad}"}),
            api.get("/v2/galleries/people/faces", params={"looks_like": f"detection:{bad}"}),
            api.get("/v2/verify", params={"face1": f"detection:{bad}", "face2": "face:people/1"}),
        ):
            body = expect_error(response, 400, "SOURCE_NOT_FOUND")
            assert len(body["desc"]) < 200
    expect_error(api.get("/v2/galleries/people/faces/424242"), 404, "NOT_FOUND")  # nothing half-written


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
OFFLINE_CHROMIUM = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=20000",
    "--dump-dom",
]


def test_the_docs_page_shows_every_operation_in_a_browser_with_no_network(api, service):
    import re
    import shutil
    import subprocess

    if service.backends != "embedded":
        pytest.skip("the docs page is the same on every backend")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it: cluster/browser.sh)")
    document = api.get("/v2/openapi.json").json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert len(operations) >= 15
    page = api.get("/v2/docs").text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # nothing fetched from elsewhere
    for path in ("/v2/docs", "/v2/docs/v2/overview.html"):
        shown = subprocess.run(
            [chromium, *OFFLINE_CHROMIUM, f"http://127.0.0.1:{SERVICE_PORT}{path}"],
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout
        rendered = set(re.findall(r'opblock-summary-method">([A-Z]+)</span>.{0,400}?data-path="([^"]+)"', shown, re.S))
        assert rendered == operations, operations ^ rendered


def test_import_enrols_a_folder_over_http_resumes_and_reports_every_photo(api, service, faces_dir, labels, tmp_path):
    from cluster.cli import main

    if service.backends != "embedded":
        pytest.skip("the import speaks HTTP only: one backend is enough")
    url = f"http://127.0.0.1:{SERVICE_PORT}"
    report = tmp_path / "report.csv"
    assert (
        main(["import", str(faces_dir), "--gallery", "imported", "--url", url, "--quiet", "--report", str(report)]) == 0
    )
    rows = {row["path"]: row for row in csv.DictReader(open(report, newline=""))}
    faces_in = {row["file"]: int(row["faces_in_image"].strip()) for row in labels}
    assert {Path(path).name for path in rows} == set(faces_in)
    outcome = {Path(path).name: row["outcome"] for path, row in rows.items()}
    assert {name for name, count in faces_in.items() if count == 0} <= {n for n, o in outcome.items() if o == "no face"}
    with_faces = [name for name, count in faces_in.items() if count > 0]
    enrolled = [name for name in with_faces if outcome[name] == "enrolled"]
    assert len(enrolled) >= 0.95 * len(with_faces)
    assert api.get("/v2/galleries/imported").json()["number_of_elements"] == list(outcome.values()).count("enrolled")
    some = next(row for row in rows.values() if row["outcome"] == "enrolled")
    assert api.get(f"/v2/galleries/imported/faces/{some['id']}").json()["meta"] == {"file": Path(some["path"]).name}

    assert (
        main(
            [
                "import",
                str(faces_dir),
                "--gallery",
                "imported",
                "--url",
                url,
                "--quiet",
                "--report",
                str(report),
                "--several",
                "skip",
            ]
        )
        == 0
    )  # resumed: nothing is enrolled twice
    again = {row["path"]: row["outcome"] for row in csv.DictReader(open(report, newline=""))}
    assert all(again[path] == "already there" for path, row in rows.items() if row["outcome"] == "enrolled")
    assert "enrolled" not in again.values()

    listing = tmp_path / "photos.csv"
    group = next(name for name, count in faces_in.items() if count > 1)
    listing.write_text(
        "path,id,meta,site\n"
        f'{faces_dir / enrolled[0]},91,"{{""name"": ""ann""}}",north\n'
        f"{faces_dir / 'missing.jpg'},92,,\n"
        f"{faces_dir / group},93,,south\n"
    )
    assert (
        main(
            [
                "import",
                str(listing),
                "--gallery",
                "listed",
                "--url",
                url,
                "--quiet",
                "--report",
                str(report),
                "--several",
                "skip",
            ]
        )
        == 0
    )
    listed = {row["id"]: row["outcome"] for row in csv.DictReader(open(report, newline=""))}
    assert listed == {"91": "enrolled", "92": "unreadable", "93": "several faces, skipped"}
    assert api.get("/v2/galleries/listed/faces/91").json()["meta"] == {"name": "ann", "site": "north"}


def test_schemathesis_finds_nothing_over_the_openapi_document(api, service, people, tmp_path):
    """Every check of schemathesis, bounded in examples, over the running service; tests/schemathesis.toml
    allows only the spec's own answers that no OpenAPI document can rule out, and says why."""
    import subprocess
    import sys

    if service.backends != "embedded":
        pytest.skip("the document and the routes are the same on every backend")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    repo = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [
            str(schemathesis),
            "--no-color",
            "--config-file",
            str(repo / "tests" / "schemathesis.toml"),
            "run",
            f"http://127.0.0.1:{SERVICE_PORT}/v2/openapi.json",
            "--max-examples",
            "25",
            "--max-failures",
            "20",
            "--request-timeout",
            "30",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )  # its cache goes there
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    people_count = api.get("/v2/galleries/people").json()["number_of_elements"]
    assert people_count == len(people)  # its writes left the others' data


def test_zz_restart_keeps_every_acknowledged_face(service, people, filtered):
    api = service.client
    gone, kept = sorted(filtered)[:2]
    assert api.delete(f"/v2/galleries/filtered/faces/{gone}").status_code == 200
    probe = api.get(f"/v2/galleries/filtered/faces/{kept}").json()
    before = {g["name"]: g["number_of_elements"] for g in api.get("/v2/galleries").json()["galleries"]}
    service.restart()
    api = service.client
    shards = [replica for replicas in api.get("/readyz").json()["shards"] for replica in replicas]
    assert [replica["started_from"] for replica in shards] == ["snapshot"] * len(shards)  # saved on stop
    after = {g["name"]: g["number_of_elements"] for g in api.get("/v2/galleries").json()["galleries"]}
    assert after == before and after["people"] == len(people) and after["filtered"] == len(filtered) - 1
    assert api.get(f"/v2/galleries/filtered/faces/{gone}").status_code == 404
    assert api.get(f"/v2/galleries/filtered/faces/{kept}").json() == probe
    probe_id = sorted(filtered)[3]
    found = api.get("/v2/galleries/filtered/faces", params={"looks_like": f"face:filtered/{probe_id}", "limit": 1})
    assert found.json()["faces"][0]["id"]["face"] == probe_id
    listed = api.get("/v2/galleries/filtered/faces", params={"limit": 500}).json()["faces"]
    assert gone not in {face["id"]["face"] for face in listed}
