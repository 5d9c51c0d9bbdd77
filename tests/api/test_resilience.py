"""A store or cache that goes away, and a restart: clear errors, recovery, nothing acknowledged lost."""

from __future__ import annotations

from tests.api.calls import detect, expect_error, facen_source, wait_until
from tests.factories import clustered_unit_vectors
from tests.helpers import run_services


def test_an_unavailable_store_answers_storage_error_and_recovers_without_restart(api, service, people):
    """Embedded: another process holds the SQLite write lock. Cluster: Cassandra is stopped, then started."""
    if service.backends == "embedded":
        import sqlite3

        holder = sqlite3.connect(service.settings.store.path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            expect_error(api.post("/v2/galleries/while-down"), 503, "STORAGE_ERROR")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        run_services("stop-cassandra")
        try:
            expect_error(api.post("/v2/galleries/while-down"), 503, "STORAGE_ERROR")
            expect_error(api.get("/v2/galleries/people/faces/1"), 503, "STORAGE_ERROR")
        finally:
            run_services("start-cassandra")
    assert wait_until(lambda: api.post("/v2/galleries/while-down").status_code == 200)
    assert api.get("/v2/galleries/people/faces/1").status_code == 200


def test_a_lost_cache_answers_cache_error_then_recovers_without_restart(api, faces_dir, service, ray_session, people):
    """Embedded: the cache actor is killed. Cluster: memcached is stopped, then started."""
    if service.backends == "embedded":
        cache = ray_session.get_actor("facegrid-detection-cache", namespace="facegrid-tests")
        ray_session.kill(cache, no_restart=True)
    else:
        run_services("stop-memcached")
    try:
        expect_error(detect(api, faces_dir, "faceapi_amy1.png", facen="true"), 503, "CACHE_ERROR")
        if service.backends == "cluster":  # the embedded cache is re-created by the next call already
            expect_error(api.get("/v2/detect/00000000000000000000"), 503, "CACHE_ERROR")
        assert detect(api, faces_dir, "faceapi_amy1.png").status_code == 200  # detection alone needs no cache
        assert api.get("/v2/galleries").status_code == 200
        assert api.get("/v2/galleries/people/faces", params={"looks_like": "face:people/1"}).status_code == 200
    finally:
        if service.backends == "cluster":
            run_services("start-memcached")
    assert wait_until(lambda: detect(api, faces_dir, "faceapi_amy1.png", facen="true").status_code == 200, 30)


def test_a_restart_keeps_every_acknowledged_face(service, people, filtered):
    """Whatever ran before: every gallery holds after a restart what it held before, deletes included, and
    the shards start from the snapshots saved on stop."""
    api = service.client
    vectors = clustered_unit_vectors(40, 128, seed=21)
    api.post("/v2/galleries/restarted")
    items = [{"id": i, "from": facen_source(v), "meta": {"n": i}} for i, v in enumerate(vectors)]
    added = api.post("/v2/galleries/restarted/faces", json={"faces": items}).json()["results"]
    assert all("code" not in r for r in added)
    assert api.delete("/v2/galleries/restarted/faces/0").status_code == 200
    probe = api.get("/v2/galleries/restarted/faces/1").json()
    before = {g["name"]: g["number_of_elements"] for g in api.get("/v2/galleries").json()["galleries"]}
    service.restart()
    api = service.client
    shards = [replica for replicas in api.get("/readyz").json()["shards"] for replica in replicas]
    assert [replica["started_from"] for replica in shards] == ["snapshot"] * len(shards)  # saved on stop
    after = {g["name"]: g["number_of_elements"] for g in api.get("/v2/galleries").json()["galleries"]}
    assert after == before and after["people"] == len(people) and after["filtered"] == len(filtered)
    assert after["restarted"] == 39
    assert api.get("/v2/galleries/restarted/faces/0").status_code == 404
    assert api.get("/v2/galleries/restarted/faces/1").json() == probe
    found = api.get("/v2/galleries/restarted/faces", params={"looks_like": "face:restarted/7", "limit": 1})
    assert found.json()["faces"][0]["id"]["face"] == 7
    listed = api.get("/v2/galleries/restarted/faces", params={"limit": 500, "sort": "id"}).json()["faces"]
    assert [face["id"]["face"] for face in listed] == list(range(1, 40))
    assert api.delete("/v2/galleries/restarted").status_code == 200
