"""GET and POST /v2/verify: the same person or not."""

from __future__ import annotations

from tests.api.calls import detect, expect_error, largest


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
