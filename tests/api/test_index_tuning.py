"""Index tuning on a running service, the way an operator changes it: the Ingress deployment's
``user_config`` in a Serve config, deployed again (``serve deploy`` / ``serve run config.yaml``), which
Serve applies in place; searched over HTTP before and after."""

from __future__ import annotations

import time

import numpy as np
import pytest

from serve_app.face_wire import encode_facen
from tests.factories import clustered_unit_vectors, queries_near
from tests.helpers import SERVICE_PORT, delete_app, deploy_app

APP, PREFIX = "facegrid-tuning", "/tuning"
TOKEN = "tuning-secret"  # this app also runs behind a bearer token
FACES, DIM, PROBES = 4000, 128, 40


def recall_at_10(client, probes: np.ndarray, truth: np.ndarray) -> float:
    found = []
    for probe, expected in zip(probes, truth):
        response = client.get(
            "/v2/galleries/tuned/faces", params={"looks_like": "facen:" + encode_facen(probe), "limit": 10}
        )
        response.raise_for_status()
        ids = {face["id"]["face"] for face in response.json()["faces"]}
        found.append(len(ids & set(expected.tolist())) / 10)
    return float(np.mean(found))


@pytest.fixture
def tuned_service(ray_session, tmp_path):
    import httpx

    from serve_app.app import wait_until_ready

    args = {
        "port": SERVICE_PORT,
        "store": {"path": str(tmp_path / "faces.db")},
        "auth_token": TOKEN,
        "index": {
            "num_shards": 2,
            "cpus_per_shard": 0.1,
            "kind": "hnsw",
            "approximate_min_faces": 1000,
            "hnsw_m": 8,
            "hnsw_ef_construction": 40,
            "hnsw_ef_search": 1,
        },
        "serve": {"detector": {"num_cpus": 0.1}, "extractor": {"num_cpus": 0.1}, "ingress": {"num_cpus": 0.1}},
    }
    deploy_app(APP, PREFIX, args)
    base_url = f"http://127.0.0.1:{SERVICE_PORT}{PREFIX}"
    assert wait_until_ready(base_url, 240)
    with httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, args
    delete_app(APP)


def test_raising_ef_search_on_a_running_hnsw_gallery_raises_its_recall(tuned_service):
    client, args = tuned_service
    vectors = clustered_unit_vectors(FACES, DIM, seed=3)  # face-like: identities of a few photos each
    client.post("/v2/galleries/tuned").raise_for_status()
    for start in range(0, FACES, 1000):
        items = [
            {"id": start + i + 1, "from": "facen:" + encode_facen(v)}
            for i, v in enumerate(vectors[start : start + 1000])
        ]
        assert client.post("/v2/galleries/tuned/faces", json={"faces": items}).status_code == 200
    probes = queries_near(vectors, PROBES, seed=4)
    truth = np.argsort(-(probes @ vectors.T), axis=1)[:, :10] + 1

    narrow = recall_at_10(client, probes, truth)
    deploy_app(APP, PREFIX, args, {"index": {"hnsw_ef_search": 400}})  # only user_config changed: applied in place
    deadline = time.monotonic() + 120
    while recall_at_10(client, probes[:5], truth[:5]) < 0.9 and time.monotonic() < deadline:
        time.sleep(1)  # the controller applies it shortly after
    wide = recall_at_10(client, probes, truth)
    assert narrow < 0.6 and wide >= 0.95, (narrow, wide)
    replicas = [replica for shard in client.get("/readyz").json()["shards"] for replica in shard]
    assert sum(r["faces"] for r in replicas) == FACES
    assert {r["tuning"]["hnsw_ef_search"] for r in replicas} == {400}

    # The settings deployed again with no user_config, and a change that starts a new Ingress replica: the
    # running shards (kept: their store and index structure are the same) take the settings' tuning again.
    deploy_app(APP, PREFIX, {**args, "serve": {**args["serve"], "ingress": {"num_cpus": 0.15}}})
    deadline = time.monotonic() + 120
    while {r["tuning"]["hnsw_ef_search"] for s in client.get("/readyz").json()["shards"] for r in s} != {1}:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert recall_at_10(client, probes, truth) < 0.6


def test_behind_a_token_the_api_needs_it_and_the_docs_stay_open(tuned_service):
    import httpx

    client, _ = tuned_service
    with httpx.Client(base_url=str(client.base_url), timeout=60) as anonymous:
        refused = anonymous.get("/v2/galleries")
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
        assert anonymous.get("/v2/galleries", headers={"Authorization": "Bearer wrong"}).status_code == 401
        page = anonymous.get("/v2/docs")
        assert page.status_code == 200 and f"{PREFIX}/v2/docs/static/swagger-ui-bundle.js" in page.text
        assert anonymous.get("/v2/docs/static/swagger-ui-bundle.js").status_code == 200
        document = anonymous.get("/v2/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in document["paths"]["/v2/galleries"]["get"]["responses"]
    assert client.get("/v2/galleries").status_code == 200
