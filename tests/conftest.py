"""Shared fixtures: the set-up models (run once per session) and the development photos.

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

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"


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


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


SERVICE_PORT = 18433


def service_settings_for(data_dir: Path, backends: str, request=None):
    """Test service: defaults (or the cluster backends), with bounds small enough to reach in a test."""
    store = {"path": data_dir / "faces.db", "busy_timeout_s": 2}
    cache = {}
    if backends == "cluster":
        import uuid

        host, port = request.getfixturevalue("cassandra_endpoint")
        keyspace = f"facegrid_test_api_{uuid.uuid4().hex[:8]}"
        store = {
            "kind": "cassandra",
            "cassandra": {"hosts": [host], "port": port, "keyspace": keyspace, "request_timeout_s": 5},
        }
        cache = {"kind": "memcached", "servers": [request.getfixturevalue("memcached_endpoint")]}
    return load_settings(
        port=SERVICE_PORT,
        store=store,
        cache=cache,
        # dlib served beside SFace, as for a store that facegrid 0.1 filled: every API test runs two models.
        models={"extra_extractors": [{"kind": "dlib"}]},
        limits={"max_body_bytes": 4 * 2**20, "max_bulk_faces": 1000, "max_limit": 500},
        # The test's photo server is on loopback: allowed there only; 127.0.0.2 stays refused.
        url_fetch={"allowed_networks": ["127.0.0.1/32"], "timeout_s": 5},
        index={"num_shards": 2, "cpus_per_shard": 0.1, "snapshot_dir": data_dir / "index-snapshots"},
        serve={
            "detector": {"max_ongoing_requests": 2, "max_queued_requests": 4},
            "extractor": {"max_ongoing_requests": 4, "max_queued_requests": 16},
        },
    )


@pytest.fixture(scope="session", params=["embedded", pytest.param("cluster", marks=pytest.mark.integration)])
def service(request, ray_session, model_config, tmp_path_factory):
    """The real Ray Serve app on a test port, once on the embedded defaults and once on Cassandra +
    memcached; yields an HTTP client, the settings, the backends and a restart."""
    import httpx

    from serve_app.app import run, stop_service, wait_until_ready

    settings = service_settings_for(tmp_path_factory.mktemp("service"), request.param, request)
    base_url = f"http://127.0.0.1:{SERVICE_PORT}"

    def start():
        run(settings)
        if not wait_until_ready(base_url, 180):
            raise RuntimeError("the service did not become ready")
        return httpx.Client(base_url=base_url, timeout=120)

    def stop():
        stop_service()
        for info in ray_session.util.list_named_actors(all_namespaces=True):
            if info["name"].startswith("facegrid-"):
                ray_session.kill(ray_session.get_actor(info["name"], namespace=info["namespace"]))

    class Service:
        def __init__(self):
            self.settings, self.backends = settings, request.param
            self.client = start()

        def restart(self):
            self.client.close()
            stop()
            self.client = start()

    running = Service()
    yield running
    running.client.close()
    stop()


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


SERVICES_SCRIPT = REPO / "cluster" / "services.sh"


@pytest.fixture(scope="session")
def cassandra_endpoint() -> tuple[str, int]:
    """The real Cassandra that cluster/services.sh started (make test starts it)."""
    import os

    port = int(os.environ.get("FACEGRID_CASSANDRA_PORT", "9042"))
    if not _answers("127.0.0.1", port):
        pytest.fail(f"no Cassandra on 127.0.0.1:{port}: run `bash cluster/services.sh start` (make test does)")
    return "127.0.0.1", port


@pytest.fixture(scope="session")
def memcached_endpoint() -> str:
    import os

    port = int(os.environ.get("FACEGRID_MEMCACHED_PORT", "11211"))
    if not _answers("127.0.0.1", port):
        pytest.fail(f"no memcached on 127.0.0.1:{port}: run `bash cluster/services.sh start` (make test does)")
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


def run_services(command: str) -> None:
    import subprocess

    subprocess.run(["bash", str(SERVICES_SCRIPT), command], check=True, timeout=300)
