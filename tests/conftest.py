"""Shared fixtures: the set-up models (run once per session) and the development photos.

Tests that need ../shared/faces skip cleanly where it is absent; nothing from it is copied here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.config import ModelConfig
from models.export import prepare_models
from models.images import read_image
from models.pipeline import load_pipeline
from serve_app.config import load_settings

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"


@pytest.fixture(scope="session")
def model_config() -> ModelConfig:
    config = load_settings().models
    prepare_models(config.data_dir, log=lambda message: None)
    return config


@pytest.fixture(scope="session")
def pipeline(model_config):
    return load_pipeline(model_config)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (SHARED_FACES / "labels.csv").is_file():
        pytest.skip("../shared/faces is not present")
    return SHARED_FACES


@pytest.fixture(scope="session")
def labels(faces_dir) -> list[dict]:
    return list(csv.DictReader(open(faces_dir / "labels.csv", newline="")))


@pytest.fixture(scope="session")
def load_photo(faces_dir):
    def load(name: str) -> np.ndarray:
        return read_image(faces_dir / name)
    return load


@pytest.fixture(scope="session")
def character_crops(faces_dir) -> list[tuple[str, Path]]:
    """The 40 face-api.js 150x150 crops of eight characters, five each: (identity, path)."""
    rows = csv.DictReader(open(faces_dir / "labels.csv", newline=""))
    return [(row["identity"], faces_dir / row["file"]) for row in rows
            if row["file"].startswith("faceapi_") and row["identity"] not in ("multi", "unknown")]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (start-ups are slow on 2 cores)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="facegrid-tests", logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()


SERVICE_PORT = 18433


def service_settings_for(data_dir: Path):
    """Test service: defaults, with bounds small enough to reach in a test."""
    return load_settings(
        port=SERVICE_PORT,
        store={"path": data_dir / "faces.db", "busy_timeout_s": 2},
        limits={"max_body_bytes": 4 * 2 ** 20, "max_bulk_faces": 50, "max_limit": 500},
        url_fetch={"denied_networks": ["127.0.0.2/32", "10.0.0.0/8"], "timeout_s": 5},
        index={"num_shards": 2, "cpus_per_shard": 0.1},
        serve={"detector": {"max_ongoing_requests": 2, "max_queued_requests": 4},
               "extractor": {"max_ongoing_requests": 4, "max_queued_requests": 16}},
    )


@pytest.fixture(scope="session")
def service(ray_session, model_config, tmp_path_factory):
    """The real Ray Serve app on a test port, for the whole session; yields an HTTP client and a restart."""
    import time

    import httpx
    from ray import serve

    from serve_app.app import run

    settings = service_settings_for(tmp_path_factory.mktemp("service"))

    def start():
        run(settings)
        client = httpx.Client(base_url=f"http://127.0.0.1:{SERVICE_PORT}", timeout=120)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("the service did not become ready")

    def stop():
        serve.shutdown()
        for info in ray_session.util.list_named_actors(all_namespaces=True):
            if info["name"].startswith("facegrid-"):
                ray_session.kill(ray_session.get_actor(info["name"], namespace=info["namespace"]))

    class Service:
        def __init__(self):
            self.settings = settings
            self.client = start()

        def restart(self):
            self.client.close()
            stop()
            self.client = start()

    running = Service()
    yield running
    running.client.close()
    stop()
