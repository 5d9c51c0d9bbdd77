"""Index snapshots: a shard replica restarted from its snapshot holds exactly what the store holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from index import FaceFilter, IndexConfig
from index.shard import IndexShard
from store import FaceRecord, SqliteFaceStore
from tests.factories import clustered_unit_vectors, random_meta
from tests.helpers import REPO

DIM = 16


def faces(gallery: str, count: int, first_id: int = 1, seed: int = 0) -> list[FaceRecord]:
    vectors = clustered_unit_vectors(count, DIM, seed=seed)
    metas = random_meta(count, seed=seed + 1)
    return [FaceRecord(gallery, first_id + i, v, m) for i, (v, m) in enumerate(zip(vectors, metas))]


def fill(store, gallery: str, count: int, **kwargs) -> list[FaceRecord]:
    store.create_gallery(gallery)
    records = faces(gallery, count, **kwargs)
    assert store.add_faces(records) == [None] * count
    return records


def start(store, config: IndexConfig, path: Path) -> IndexShard:
    return IndexShard(0, store, config, path)


def held(shard: IndexShard, gallery: str) -> dict[int, tuple[np.ndarray, dict]]:
    """Every face the shard's gallery holds: id -> (vector, meta)."""
    index = shard.galleries.get(gallery)
    if index is None:
        return {}
    ids = index.list_ids(None, None, 10**9).tolist()
    contents = {}
    for face_id in ids:
        slot, vector = index.slot_of.get(face_id), index.vector(face_id)
        assert slot is not None and vector is not None
        contents[face_id] = (vector, index.meta[slot] or {})
    return contents


def stored(store, gallery: str) -> dict[int, tuple[np.ndarray, dict]]:
    return {f.face_id: (f.facen, f.meta) for f in store.scan_partition(gallery, 0, limit=10**9)}


def assert_same(shard: IndexShard, store, gallery: str) -> None:
    mine, theirs = held(shard, gallery), stored(store, gallery)
    assert mine.keys() == theirs.keys()
    for face_id, (vector, meta) in theirs.items():
        assert np.array_equal(mine[face_id][0], vector) and mine[face_id][1] == meta, face_id


@pytest.fixture
def store(tmp_path):
    return SqliteFaceStore(tmp_path / "faces.db", num_shards=1)


@pytest.fixture
def snapshots(tmp_path) -> Path:
    return tmp_path / "snapshots" / "t-shard-0-0"


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_a_snapshot_round_trip_gives_the_same_answers(store, snapshots, kind):
    config = IndexConfig(num_shards=1, kind=kind, approximate_min_faces=1000)
    fill(store, "ppl", 3000)
    first = start(store, config, snapshots)
    assert first.started_from == "rebuild" and first.galleries["ppl"].kind == kind
    assert first.save_snapshot()["faces"] == 3000
    queries = clustered_unit_vectors(20, DIM, seed=9)
    face_filter = FaceFilter(meta_in=(("name", ("ann", "eve")),), id_gte=100)
    before = [first.galleries["ppl"].search(queries, 10, f) for f in (None, face_filter)]

    again = start(store, config, snapshots)
    assert again.started_from == "snapshot" and again.galleries["ppl"].kind == kind
    assert_same(again, store, "ppl")
    for (scores, ids), f in zip(before, (None, face_filter)):
        new_scores, new_ids = again.galleries["ppl"].search(queries, 10, f)
        assert np.array_equal(ids, new_ids) and np.allclose(scores, new_scores)


def test_changes_after_the_snapshot_are_replayed_from_the_store(store, snapshots):
    config = IndexConfig(num_shards=1)
    records = fill(store, "ppl", 500)
    fill(store, "old", 50)
    fill(store, "gone", 50)
    start(store, config, snapshots).save_snapshot()

    store.delete_face("ppl", records[0].face_id)  # deleted: must not come back
    store.update_meta("ppl", records[1].face_id, {"name": "patched"})  # patched: filters see it
    store.delete_face("ppl", records[2].face_id)  # deleted, then added with another vector
    (again_added,) = faces("ppl", 1, first_id=records[2].face_id, seed=7)
    assert store.add_faces([again_added]) == [None]
    assert store.add_faces(faces("ppl", 30, first_id=10_000, seed=3)) == [None] * 30
    store.delete_gallery("old")  # deleted and created again
    fill(store, "old", 5, first_id=90_000, seed=4)
    store.delete_gallery("gone")
    fill(store, "new", 20, seed=5)  # created after the snapshot

    shard = start(store, config, snapshots)
    assert shard.started_from == "snapshot"
    assert set(shard.galleries) == {"ppl", "old", "new"}
    for gallery in ("ppl", "old", "new"):
        assert_same(shard, store, gallery)
    assert records[0].face_id not in held(shard, "ppl")
    patched = shard.galleries["ppl"].list_ids(FaceFilter(meta_in=(("name", ("patched",)),)), None, 10)
    assert patched.tolist() == [records[1].face_id]
    scores, ids = shard.galleries["ppl"].search(again_added.facen, 1)
    assert ids[0, 0] == again_added.face_id and scores[0, 0] == pytest.approx(1, abs=1e-5)


def test_a_snapshot_older_than_the_change_log_is_rebuilt_from_the_store(tmp_path, snapshots):
    store = SqliteFaceStore(tmp_path / "faces.db", num_shards=1, change_log_retention_s=3600)
    config = IndexConfig(num_shards=1)
    records = fill(store, "ppl", 200)
    shard = start(store, config, snapshots)
    shard.save_snapshot()
    manifest = snapshots / (snapshots / "CURRENT").read_text().split()[0] / "manifest.json"
    store.delete_face("ppl", records[5].face_id)
    _age_snapshot(snapshots, manifest, seconds=7200)

    again = start(store, config, snapshots)
    assert again.started_from == "snapshot" and again.replayed == 0  # the gallery was loaded whole
    assert_same(again, store, "ppl")


def _age_snapshot(snapshots: Path, manifest: Path, seconds: float) -> None:
    """Make the snapshot look ``seconds`` older, keeping its checksums right."""
    import hashlib

    content = json.loads(manifest.read_text())
    content["stamp"] -= seconds
    manifest.write_text(json.dumps(content))
    pointer = snapshots / "CURRENT"
    pointer.write_text(f"{manifest.parent.name} {hashlib.sha256(manifest.read_bytes()).hexdigest()}\n")


def test_a_damaged_snapshot_file_is_detected_and_the_shard_rebuilds(store, snapshots):
    config = IndexConfig(num_shards=1)
    fill(store, "ppl", 300)
    start(store, config, snapshots).save_snapshot()
    current = snapshots / (snapshots / "CURRENT").read_text().split()[0]
    vectors = current / "ppl.faiss"
    data = bytearray(vectors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vectors.write_bytes(bytes(data))

    shard = start(store, config, snapshots)
    assert shard.started_from == "rebuild"
    assert_same(shard, store, "ppl")


def test_a_snapshot_of_another_store_or_other_build_settings_is_not_used(tmp_path, store, snapshots):
    fill(store, "ppl", 300)
    start(store, IndexConfig(num_shards=1), snapshots).save_snapshot()
    other = SqliteFaceStore(tmp_path / "other.db", num_shards=1)
    fill(other, "ppl", 10, seed=3)
    assert start(other, IndexConfig(num_shards=1), snapshots).started_from == "rebuild"
    start(store, IndexConfig(num_shards=1), snapshots).save_snapshot()
    hnsw = IndexConfig(num_shards=1, kind="hnsw", approximate_min_faces=1000)
    assert start(store, hnsw, snapshots).started_from == "rebuild"


_SAVE_KILLED_HALF_WAY = """
import os, signal, sys
from pathlib import Path
from index import IndexConfig, snapshot
from index.shard import IndexShard
from store import SqliteFaceStore

def killed(path):
    os.kill(os.getpid(), signal.SIGKILL)    # the data files are written, nothing renamed or named yet

snapshot._sync_directory = killed
store = SqliteFaceStore(Path(sys.argv[1]), num_shards=1)
IndexShard(0, store, IndexConfig(num_shards=1), Path(sys.argv[2])).save_snapshot()
"""


@pytest.mark.parametrize("earlier_snapshot", [False, True])
def test_a_save_killed_half_way_leaves_a_start_that_holds_the_store(tmp_path, store, snapshots, earlier_snapshot):
    config = IndexConfig(num_shards=1)
    records = fill(store, "ppl", 400)
    if earlier_snapshot:
        start(store, config, snapshots).save_snapshot()
    store.delete_face("ppl", records[0].face_id)
    assert store.add_faces(faces("ppl", 10, first_id=50_000, seed=2)) == [None] * 10
    script = tmp_path / "save.py"
    script.write_text(textwrap.dedent(_SAVE_KILLED_HALF_WAY))
    finished = subprocess.run(
        [sys.executable, str(script), str(store.path), str(snapshots)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert finished.returncode == -signal.SIGKILL, finished.stderr.decode()[-2000:]
    assert any(entry.name.startswith("tmp-") for entry in snapshots.iterdir())  # the torn save

    shard = start(store, config, snapshots)
    assert shard.started_from == ("snapshot" if earlier_snapshot else "rebuild")
    assert_same(shard, store, "ppl")
    shard.save_snapshot()
    assert not any(entry.name.startswith("tmp-") for entry in snapshots.iterdir())
