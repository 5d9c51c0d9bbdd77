"""How the API tests talk to the service: photos as request bodies, the spec's error shape, waits."""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path

import numpy as np

from index.filters import FaceFilter

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


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


def wait_until(check, seconds: float = 90) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def batch_counts() -> dict[str, Counter]:
    """Batches each model deployment of the test service has run, by size (its replicas' own counts)."""
    from ray import serve

    return {
        name: Counter(serve.get_deployment_handle(name, app_name="facegrid").batch_counts.remote().result())
        for name in ("Detector", "Extractor")
    }


def exported_metrics(metrics_port: int) -> str:
    """The session's Ray Prometheus export, or nothing while it does not answer."""
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


# The listing's and search's filter parameters, each with the FaceFilter they mean.
FILTER_QUERIES = [
    ({}, FaceFilter()),
    ({"meta:in:name": "ann,eve"}, FaceFilter(meta_in=(("name", ("ann", "eve")),))),
    ({"meta:gte:cam": "3", "meta:lte:cam": "6"}, FaceFilter(meta_gte=(("cam", "3"),), meta_lte=(("cam", "6"),))),
    ({"meta:subset:tags": ["vip", "staff"]}, FaceFilter(meta_subset=(("tags", ("vip", "staff")),))),
    ({"id:gte": "200000000000", "id:lte": "700000000000"}, FaceFilter(id_gte=200000000000, id_lte=700000000000)),
]
