"""POST /v2/detect and GET /v2/detect/:id: faces, attributes, photo forms, image URLs, detection ids."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from PIL import Image

from tests.api.calls import detect, expect_error, photo


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
