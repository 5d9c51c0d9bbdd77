"""The embedded store (SQLite): the FaceStore contract, and what only a file shared by processes needs."""

from __future__ import annotations

import multiprocessing

from store import FaceRecord, SqliteFaceStore, add_face
from tests.store_contract import StoreContract, unit


class TestSqliteStore(StoreContract):
    def open(self, request, tmp_path, num_shards, meta_rules):
        return SqliteFaceStore(tmp_path / "faces.db", num_shards, meta_rules=meta_rules)

    def reopen(self, store, num_shards):
        return SqliteFaceStore(store.path, num_shards)


def _writer(path, worker: int) -> None:
    store = SqliteFaceStore(path, num_shards=2)
    for i in range(50):
        add_face(store, FaceRecord("ppl", worker * 1000 + i, unit(i)))
    store.close()


def test_several_processes_write_at_once_without_losing_a_face(tmp_path):
    path = tmp_path / "faces.db"
    SqliteFaceStore(path, num_shards=2).create_gallery("ppl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, worker)) for worker in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert SqliteFaceStore(path, num_shards=2).count_faces("ppl") == 150


def test_pruning_the_change_log_forgets_only_old_changes_of_one_partition(tmp_path):
    import sqlite3
    import time

    store = SqliteFaceStore(tmp_path / "faces.db", num_shards=1, change_log_retention_s=0.2)
    for gallery in ("a", "b"):
        store.create_gallery(gallery)
        assert store.add_faces([FaceRecord(gallery, 1, unit(1))]) == [None]
    time.sleep(0.3)
    assert store.add_faces([FaceRecord("a", 2, unit(2))]) == [None]
    store.prune_changes("a", 0)
    log = sqlite3.connect(tmp_path / "faces.db")
    rows = log.execute("SELECT gallery FROM face_changes ORDER BY gallery").fetchall()
    assert rows == [("a",), ("b",)]  # a's old change gone, its new one and b's old one kept
