"""The embedded ``FaceStore``: one SQLite file, safe for several processes at once.

WAL journaling lets readers go on while one process writes; ``synchronous=FULL`` makes a committed
write survive a power cut, so a write is durable when the call returns. Each process (ingress replica,
shard actor) opens its own connection; a lock serialises the threads of one process on it.

Face ids are stored shifted into SQLite's signed integers (``store.base.to_stored_id``).

Every write also notes the face it touched in ``face_changes``, in the same transaction, so an index
snapshot can be brought up to date by reading back only what changed after it (``changed_since``). The
log keeps ``change_log_retention_s`` of history; a snapshot older than that is rebuilt instead.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from facegrid.errors import FacegridError

from .base import (
    CHANGE_LOG_RETENTION_S,
    SMALLEST_STORED_ID,
    FaceRecord,
    GalleryRecord,
    check_face_id,
    check_facen,
    check_gallery_name,
    from_stored_id,
    shard_of,
    to_stored_id,
)
from .errors import FaceExists, FaceNotFound, GalleryExists, GalleryNotFound, StoreUnavailable
from .meta import MetaRules

logger = logging.getLogger(__name__)
T = TypeVar("T")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS layout (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS galleries (
    name TEXT PRIMARY KEY, created_at REAL NOT NULL, dim INTEGER, model TEXT);
CREATE TABLE IF NOT EXISTS faces (
    gallery TEXT NOT NULL, shard INTEGER NOT NULL, id INTEGER NOT NULL,
    facen BLOB NOT NULL, meta TEXT NOT NULL, features TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (gallery, shard, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS face_changes (
    gallery TEXT NOT NULL, shard INTEGER NOT NULL, changed_at REAL NOT NULL, id INTEGER NOT NULL,
    PRIMARY KEY (gallery, shard, changed_at, id)) WITHOUT ROWID;
"""


class SqliteFaceStore:
    def __init__(
        self,
        path: Path,
        num_shards: int,
        busy_timeout_s: float = 30,
        change_log_retention_s: float = CHANGE_LOG_RETENTION_S,
        meta_rules: MetaRules | None = None,
    ):
        self.path = Path(path)
        self.meta_rules = meta_rules or MetaRules()
        self.num_shards, self.busy_timeout_s = num_shards, busy_timeout_s
        self.change_log_retention_s = change_log_retention_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._lock:
                self._db.executescript(_SCHEMA)
                self._check_layout()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"cannot open the face store at {self.path}: {error}") from None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Crossing to another process (a Ray actor) opens a fresh connection there.
        return type(self), (
            self.path,
            self.num_shards,
            self.busy_timeout_s,
            self.change_log_retention_s,
            self.meta_rules,
        )

    def _check_layout(self) -> None:
        self._db.execute("INSERT OR IGNORE INTO layout VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        self.store_id = self._db.execute("SELECT value FROM layout WHERE key = 'store_id'").fetchone()[0]
        row = self._db.execute("SELECT value FROM layout WHERE key = 'num_shards'").fetchone()
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO layout VALUES ('num_shards', ?)", (str(self.num_shards),))
        elif int(row[0]) != self.num_shards:
            raise ValueError(
                f"{self.path} was laid out for {row[0]} shards, not {self.num_shards}: "
                "keep index.num_shards as it was, or start from an empty store"
            )

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool = False) -> T:
        """Run ``work(cursor)`` in one transaction; driver failures become StoreUnavailable."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as error:
                logger.warning("SQLite failed: %s", error)
                raise StoreUnavailable(f"the face store is unavailable ({type(error).__name__})") from None

    @staticmethod
    def _gallery(db: sqlite3.Connection, name: str) -> GalleryRecord:
        row = db.execute("SELECT name, created_at, dim, model FROM galleries WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryNotFound(name)
        return GalleryRecord(*row)

    def create_gallery(self, name: str) -> GalleryRecord:
        check_gallery_name(name)

        def work(db: sqlite3.Connection) -> GalleryRecord:
            if db.execute("SELECT 1 FROM galleries WHERE name = ?", (name,)).fetchone():
                raise GalleryExists(name)
            record = GalleryRecord(name, time.time())
            db.execute("INSERT INTO galleries (name, created_at) VALUES (?, ?)", (name, record.created_at))
            return record

        return self._run(work, write=True)

    def get_gallery(self, name: str) -> GalleryRecord:
        return self._run(lambda db: self._gallery(db, name))

    def list_galleries(self) -> list[GalleryRecord]:
        rows = self._run(
            lambda db: db.execute("SELECT name, created_at, dim, model FROM galleries ORDER BY name").fetchall()
        )
        return [GalleryRecord(*row) for row in rows]

    def delete_gallery(self, name: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._gallery(db, name)
            db.execute("DELETE FROM faces WHERE gallery = ?", (name,))
            db.execute("DELETE FROM face_changes WHERE gallery = ?", (name,))
            db.execute("DELETE FROM galleries WHERE name = ?", (name,))

        self._run(work, write=True)

    def add_faces(self, faces: Sequence[FaceRecord]) -> list[FacegridError | None]:
        def work(db: sqlite3.Connection) -> list[FacegridError | None]:
            results: list[FacegridError | None] = []
            galleries: dict[str, GalleryRecord] = {}
            changes: list[tuple[str, int, float, int]] = []
            for face in faces:
                db.execute("SAVEPOINT face")
                try:
                    changes.append(self._insert(db, face, galleries))
                    results.append(None)
                    db.execute("RELEASE face")
                except FacegridError as error:
                    db.execute("ROLLBACK TO face")
                    db.execute("RELEASE face")
                    results.append(error)
            db.executemany("INSERT OR IGNORE INTO face_changes VALUES (?, ?, ?, ?)", changes)
            return results

        return self._run(work, write=True)

    def _insert(
        self, db: sqlite3.Connection, face: FaceRecord, galleries: dict[str, GalleryRecord]
    ) -> tuple[str, int, float, int]:
        """Insert one face; returns its change-log row, written with the others at the end."""
        gallery = galleries.get(face.gallery) or self._gallery(db, face.gallery)
        face_id = check_face_id(face.face_id)
        vector = check_facen(face.facen, gallery, face.model)
        meta = self.meta_rules.check(face.meta, new_face=True)
        if gallery.dim is None:
            db.execute(
                "UPDATE galleries SET dim = ?, model = ? WHERE name = ?", (vector.size, face.model, gallery.name)
            )
            gallery = GalleryRecord(gallery.name, gallery.created_at, vector.size, face.model)
        galleries[face.gallery] = gallery
        shard = shard_of(face.gallery, face_id, self.num_shards)
        try:
            db.execute(
                "INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    face.gallery,
                    shard,
                    to_stored_id(face_id),
                    vector.astype("<f4").tobytes(),
                    json.dumps(meta),
                    json.dumps(face.attributes),
                    face.created_at or time.time(),
                ),
            )
        except sqlite3.IntegrityError:
            raise FaceExists(face.gallery, face_id) from None
        return face.gallery, shard, time.time(), to_stored_id(face_id)

    def _note_change(self, db: sqlite3.Connection, gallery: str, face_id: int) -> None:
        db.execute(
            "INSERT OR IGNORE INTO face_changes VALUES (?, ?, ?, ?)",
            (gallery, shard_of(gallery, face_id, self.num_shards), time.time(), to_stored_id(face_id)),
        )

    def _face(self, db: sqlite3.Connection, gallery: str, face_id: int) -> FaceRecord:
        self._gallery(db, gallery)
        check_face_id(face_id)
        row = db.execute(
            "SELECT id, facen, meta, features, created_at FROM faces WHERE gallery = ? AND shard = ? AND id = ?",
            (gallery, shard_of(gallery, face_id, self.num_shards), to_stored_id(face_id)),
        ).fetchone()
        if row is None:
            raise FaceNotFound(gallery, face_id)
        return self._record(gallery, row)

    @staticmethod
    def _record(gallery: str, row: tuple[Any, ...]) -> FaceRecord:
        row_id, blob, meta, features, created_at = row
        return FaceRecord(
            gallery,
            from_stored_id(row_id),
            np.frombuffer(blob, dtype="<f4").copy(),
            json.loads(meta),
            json.loads(features),
            created_at,
        )

    def get_face(self, gallery: str, face_id: int) -> FaceRecord:
        return self._run(lambda db: self._face(db, gallery, face_id))

    def get_faces(self, gallery: str, face_ids: Sequence[int], settled: bool = False) -> dict[int, FaceRecord]:
        # A SQLite write is committed or not when its call returns: nothing is left to settle.
        def work(db: sqlite3.Connection) -> dict[int, FaceRecord]:
            self._gallery(db, gallery)
            found: dict[int, FaceRecord] = {}
            for face_id in face_ids:
                key = (gallery, shard_of(gallery, face_id, self.num_shards), to_stored_id(face_id))
                row = db.execute(
                    "SELECT id, facen, meta, features, created_at FROM faces "
                    "WHERE gallery = ? AND shard = ? AND id = ?",
                    key,
                ).fetchone()
                if row is not None:
                    found[face_id] = self._record(gallery, row)
            return found

        return self._run(work)

    def update_meta(self, gallery: str, face_id: int, meta: dict[str, Any]) -> FaceRecord:
        self.meta_rules.check(meta, new_face=False)

        def work(db: sqlite3.Connection) -> FaceRecord:
            face = self._face(db, gallery, face_id)
            merged = self.meta_rules.check({**face.meta, **meta}, new_face=False)
            db.execute(
                "UPDATE faces SET meta = ? WHERE gallery = ? AND shard = ? AND id = ?",
                (json.dumps(merged), gallery, shard_of(gallery, face_id, self.num_shards), to_stored_id(face_id)),
            )
            self._note_change(db, gallery, face_id)
            return FaceRecord(gallery, face_id, face.facen, merged, face.attributes, face.created_at)

        return self._run(work, write=True)

    def delete_face(self, gallery: str, face_id: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._face(db, gallery, face_id)
            db.execute(
                "DELETE FROM faces WHERE gallery = ? AND shard = ? AND id = ?",
                (gallery, shard_of(gallery, face_id, self.num_shards), to_stored_id(face_id)),
            )
            self._note_change(db, gallery, face_id)

        self._run(work, write=True)

    def scan_partition(
        self, gallery: str, shard: int, after_id: int | None = None, limit: int = 1000
    ) -> list[FaceRecord]:
        # With no cursor, start at the smallest stored id (-2**63) inclusively.
        bound, operator = (SMALLEST_STORED_ID, ">=") if after_id is None else (to_stored_id(after_id), ">")
        rows = self._run(
            lambda db: db.execute(
                "SELECT id, facen, meta, features, created_at FROM faces "
                f"WHERE gallery = ? AND shard = ? AND id {operator} ? ORDER BY id LIMIT ?",
                (gallery, shard, bound, limit),
            ).fetchall()
        )
        return [self._record(gallery, row) for row in rows]

    def changed_since(self, gallery: str, shard: int, since: float) -> set[int] | None:
        if since < time.time() - self.change_log_retention_s:
            return None
        rows = self._run(
            lambda db: db.execute(
                "SELECT DISTINCT id FROM face_changes WHERE gallery = ? AND shard = ? AND changed_at >= ?",
                (gallery, shard, since),
            ).fetchall()
        )
        return {from_stored_id(row_id) for (row_id,) in rows}

    def prune_changes(self, gallery: str, shard: int) -> None:
        # A range of the table's primary key (gallery, shard, changed_at, ...): no scan of other partitions.
        horizon = time.time() - self.change_log_retention_s
        self._run(
            lambda db: db.execute(
                "DELETE FROM face_changes WHERE gallery = ? AND shard = ? AND changed_at < ?", (gallery, shard, horizon)
            ),
            write=True,
        )

    def count_faces(self, gallery: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            self._gallery(db, gallery)
            return int(db.execute("SELECT COUNT(*) FROM faces WHERE gallery = ?", (gallery,)).fetchone()[0])

        return self._run(work)

    def close(self) -> None:
        with self._lock:
            self._db.close()
