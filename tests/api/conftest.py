"""The API tier's service: the real Ray Serve app on a test port, and the galleries several tests search."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from serve_app.config import load_settings
from tests.api.calls import detect, facen_source, largest
from tests.factories import clustered_unit_vectors, random_meta
from tests.helpers import SERVICE_PORT


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


@pytest.fixture
def api(service):
    """The service's HTTP client (a new one after a restart)."""
    return service.client


@pytest.fixture
def limits(service):
    return service.settings.limits


@pytest.fixture(scope="session")
def people(service, faces_dir):
    """One gallery with the first photo of every person who has several; the rest are probes."""
    api = service.client
    rows = list(csv.DictReader(open(faces_dir / "labels.csv", newline="")))
    by_person: dict[str, list[str]] = {}
    for row in rows:
        if row["identity"] not in ("multi", "unknown"):
            by_person.setdefault(row["identity"], []).append(row["file"])
    people = {name: files for name, files in by_person.items() if len(files) > 1}
    assert api.post("/v2/galleries/people").status_code == 200
    for number, (name, files) in enumerate(sorted(people.items()), start=1):
        face = largest(detect(api, faces_dir, files[0], facen="true").json()["faces"])
        added = api.post(
            f"/v2/galleries/people/faces/{number}", json={"from": f"detection:{face['id']}", "meta": {"name": name}}
        )
        assert added.status_code == 200, added.json()
    return people


@pytest.fixture(scope="session")
def filtered(service):
    """A gallery of 300 synthetic faces with meta, and its exact contents for reference. Tests only read it."""
    api = service.client
    vectors = clustered_unit_vectors(300, 128, seed=7)
    metas = random_meta(300, seed=8)
    api.post("/v2/galleries/filtered")
    ids = [int(i) for i in np.random.default_rng(9).choice(10**12, 300, replace=False)]
    items = [{"id": i, "from": facen_source(v), "meta": m} for i, v, m in zip(ids, vectors, metas)]
    for start in range(0, 300, 50):
        results = api.post("/v2/galleries/filtered/faces", json={"faces": items[start : start + 50]}).json()
        assert all("code" not in r for r in results["results"])
    return {i: (v, m) for i, v, m in zip(ids, vectors, metas)}


def pytest_collection_modifyitems(config, items):
    """A test marked ``embedded_only(why)`` checks what is the same on every backend: it runs once, on the
    embedded backends, and its run on Cassandra + memcached is deselected rather than skipped."""
    dropped = [
        item
        for item in items
        if item.get_closest_marker("embedded_only")
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("service") == "cluster"
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
