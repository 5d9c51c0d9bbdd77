"""Load: shared model batches, bounded queues answered 429 at once, places given back, metrics."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tests.api.calls import batch_counts, detect, expect_error, exported_metrics, facen_source, photo, wait_until
from tests.helpers import REPO


def test_detects_under_way_together_share_model_batches(api, faces_dir):
    """The ingress tells the model replicas how many calls are coming (models.deployments.LoadAwareBatching):
    requests sent together run in shared batches, each answered as it is alone."""
    data, content_type = photo(faces_dir, "faceapi_amy1.png")

    def one(_):
        return api.post("/v2/detect", params={"facen": "true"}, content=data, headers={"Content-Type": content_type})

    alone = [face["bbox"] for face in one(0).json()["faces"]]
    shared: set[str] = set()
    # A burst whose requests reach the ingress one after another (the HTTP proxy and the test share two busy
    # cores) has nothing to share; so up to five bursts, each checked in full, until both models have shared
    # a batch. The test service's Detector holds 2 running + 4 queued; 4 leave room for a request Serve
    # still counts.
    for _ in range(5):
        before = batch_counts()
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(one, range(4)))
        ran = {name: counts - before[name] for name, counts in batch_counts().items()}
        assert [r.status_code for r in responses] == [200] * 4
        assert all([face["bbox"] for face in r.json()["faces"]] == alone for r in responses)
        for name, batches in ran.items():
            assert sum(size * count for size, count in batches.items()) == 4, (name, batches)
            if max(batches) >= 2:
                shared.add(name)
        if shared == set(ran):
            break
    assert shared == {"Detector", "Extractor"}


def overload(api, faces_dir) -> list:
    """24 group photos at once: four times what the test service admits (Detector: 2 ongoing + 4 queued)."""
    data, content_type = photo(faces_dir, "faceapi_bbt4.jpg")
    with ThreadPoolExecutor(24) as pool:
        return list(
            pool.map(lambda _: api.post("/v2/detect", content=data, headers={"Content-Type": content_type}), range(24))
        )


def test_full_model_queues_answer_429_at_once(api, faces_dir):
    responses = overload(api, faces_dir)
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert all(r.json()["code"] == "OVER_CAPACITY" and int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert all(r.status_code in (200, 429) for r in responses)
    assert detect(api, faces_dir, "faceapi_bbt4.jpg").status_code == 200


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
    data, content_type = photo(faces_dir, "faceapi_bbt1.jpg")
    for _ in range(8):
        try:
            api.post("/v2/detect", content=data, headers={"Content-Type": content_type}, timeout=0.05)
        except httpx.TimeoutException:
            pass
    assert wait_until(lambda: detect(api, faces_dir, "faceapi_amy1.png").status_code == 200, 30)
    answers = [detect(api, faces_dir, "faceapi_amy1.png") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]


def test_custom_metrics_reach_the_prometheus_export(api, faces_dir, metrics_port):
    """Each series is produced here: a write (faces per gallery shard), searches at once (the router's
    queue and its batches), detects (model batches), an overload; and the Grafana dashboard names only series the export
    has (each series name as a whole word)."""
    api.post("/v2/galleries/metered")
    assert api.post("/v2/galleries/metered/faces/1", json={"from": facen_source(np.ones(128))}).status_code == 200
    with ThreadPoolExecutor(8) as pool:
        searches = list(
            pool.map(
                lambda _: api.get("/v2/galleries/metered/faces", params={"looks_like": "face:metered/1"}), range(8)
            )
        )
    assert [r.status_code for r in searches] == [200] * 8
    assert any(r.status_code == 429 for r in overload(api, faces_dir))
    dashboard = json.loads((REPO / "cluster" / "grafana" / "facegrid.json").read_text())
    named = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bray_facegrid_\w+", target["expr"])
    }
    wanted = {
        "ray_facegrid_gallery_faces",
        "ray_facegrid_search_latency_s_bucket",
        "ray_facegrid_model_batch_size_bucket",
        "ray_facegrid_search_batch_size_bucket",
        "ray_facegrid_over_capacity_total",
    }
    assert len(named) >= 6

    def missing() -> set[str]:
        series = set(re.findall(r"^(\w+)(?:\{| )", exported_metrics(metrics_port), re.M))
        return (wanted | named) - series

    assert wait_until(lambda: not missing(), 60), missing()
    api.delete("/v2/galleries/metered")
