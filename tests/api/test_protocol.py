"""What every route shares: the spec's error codes, the body bound, trailing slashes, health."""

from __future__ import annotations

import io

from PIL import Image

from tests.api.calls import detect, expect_error


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


def test_a_body_over_the_limit_is_answered_not_reset_however_it_is_sent(api, limits):
    """Six times the limit, declared or chunked: the client finishes its upload and reads a 400."""
    big = b"\xff" * (6 * limits.max_body_bytes)

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
