"""/v2/galleries: created, listed, read, deleted; each bound to the model that filled it."""

from __future__ import annotations

import numpy as np
import pytest

from store.base import FaceRecord
from tests.api.calls import detect, expect_error, facen_source
from tests.factories import clustered_unit_vectors


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


def _gallery_in_store(service, name: str, dim: int, model: str | None) -> None:
    """A gallery written straight into the embedded store: model None is how facegrid 0.1 left one (its
    vectors' length, no model recorded)."""
    from store.sqlite import SqliteFaceStore

    settings = service.settings
    store = SqliteFaceStore(settings.store.path, settings.index.num_shards)
    store.create_gallery(name)
    store.add_faces([FaceRecord(name, 1, clustered_unit_vectors(1, dim, seed=11)[0], model=model)])
    store.close()


@pytest.mark.embedded_only("writes galleries straight into the embedded store")
def test_a_gallery_is_bound_to_the_model_that_filled_it(api, service, faces_dir):
    """The test service serves dlib beside SFace (models.extra_extractors), as for a store filled by 0.1."""
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
