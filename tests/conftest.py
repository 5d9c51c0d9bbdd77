"""Fixtures of every tier: the set-up models (once per session), the development photos, the session's Ray,
and the real Cassandra and memcached. Each test is marked with its tier, the folder it lives in:

    tests/unit         no Ray, no services: seconds
    tests/api          the /v2 API over real HTTP on a running service (embedded backends; again on
                       Cassandra + memcached, marked integration too)
    tests/integration  real Cassandra, memcached, several Ray nodes, killed shards

Tests that need ../shared/faces skip cleanly where it is absent; nothing from it is copied here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from models.config import DetectorConfig, ExtractorConfig, ModelConfig
from models.export import prepare_models
from models.images import read_image
from models.pipeline import load_pipeline
from serve_app.config import load_settings
from tests.helpers import REPO, SHARED_FACES, answers, free_port, unavailable


@pytest.fixture(scope="session")
def model_config() -> ModelConfig:
    config = load_settings().models
    prepare_models(config.data_dir, log=lambda message: None)
    return config


@pytest.fixture(scope="session")
def mtcnn_config(model_config) -> ModelConfig:
    """The models of facegrid 0.1: the MTCNN cascade and the dlib descriptor."""
    return model_config.model_copy(
        update={"detector": DetectorConfig(kind="mtcnn"), "extractor": ExtractorConfig(kind="dlib")}
    )


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
    return [
        (row["identity"], faces_dir / row["file"])
        for row in rows
        if row["file"].startswith("faceapi_") and row["identity"] not in ("multi", "unknown")
    ]


METRICS_PORT = free_port()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (start-ups are slow on 2 cores); its Prometheus export
    listens on METRICS_PORT."""
    import ray

    from serve_app.app import ray_environment

    # Restarts in the tests wait out the drain of the Ingress replicas they stop.
    os.environ.update(ray_environment(load_settings(serve={"ingress_drain_s": 1})))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="facegrid-tests",
        logging_level="ERROR",
        log_to_driver=False,
        _metrics_export_port=METRICS_PORT,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def metrics_port(ray_session) -> int:
    """Where the session's Ray exports Prometheus metrics (a fixture: importing conftest from a test
    module would load it a second time, with another port)."""
    return METRICS_PORT


@pytest.fixture(scope="session")
def cassandra_endpoint() -> tuple[str, int]:
    """The real Cassandra that cluster/services.sh started (make test starts it)."""

    port = int(os.environ.get("FACEGRID_CASSANDRA_PORT", "9042"))
    if not answers("127.0.0.1", port):
        unavailable(f"no Cassandra on 127.0.0.1:{port}: run `bash cluster/services.sh start` (make test does)")
    return "127.0.0.1", port


@pytest.fixture(scope="session")
def memcached_endpoint() -> str:

    port = int(os.environ.get("FACEGRID_MEMCACHED_PORT", "11211"))
    if not answers("127.0.0.1", port):
        unavailable(f"no memcached on 127.0.0.1:{port}: run `bash cluster/services.sh start` (make test does)")
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def cassandra_keyspaces(cassandra_endpoint):
    """One scratch keyspace per shard count for the session (schema changes are slow); dropped at the end."""
    import uuid

    from cassandra.cluster import Cluster

    names: dict[int, str] = {}
    token = uuid.uuid4().hex[:8]
    yield lambda num_shards: names.setdefault(num_shards, f"facegrid_test_{token}_{num_shards}")
    cluster = Cluster([cassandra_endpoint[0]], port=cassandra_endpoint[1], protocol_version=5)
    session = cluster.connect()
    for keyspace in names.values():
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cluster.shutdown()


TIERS = ("unit", "api", "integration")


def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(item.path).relative_to(REPO / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
