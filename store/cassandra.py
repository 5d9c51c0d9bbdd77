"""The cluster ``FaceStore``: galleries and faces in Apache Cassandra, through prepared statements.

Layout (created when missing): ``galleries (name PRIMARY KEY, created_at, dim, model)`` and
``faces ((gallery, shard), id, facen, meta, features, created_at)``, one partition per gallery shard,
so a shard rebuild is a single-partition scan and a gallery delete is S partition deletes.

Uniqueness (CONFLICT) and the gallery's dimension use lightweight transactions (``IF NOT EXISTS``,
``IF dim = null``); a meta patch is a compare-and-set loop, so concurrent patches never lose a key.
Every write first notes the faces it touches in ``face_changes ((gallery, shard), changed_at, id)``,
kept ``change_log_retention_s`` by a TTL, from which an index snapshot is brought up to date
(``changed_since``). The note goes first because the face write itself is conditional and cannot share a
batch with another table: a note for a write that then fails only makes a snapshot re-read that face.
Bulk work runs with at most ``max_in_flight`` requests outstanding. Every driver failure becomes
``StoreUnavailable`` (the API's STORAGE_ERROR). Ids go into Cassandra's signed bigint
shifted (``store.base.to_stored_id``), which keeps their order.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from cassandra import ConsistencyLevel, DriverException, RequestExecutionException
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.protocol import ErrorMessage
from cassandra.query import BatchStatement, BatchType

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
from .config import CassandraSettings
from .errors import FaceExists, FaceNotFound, GalleryExists, GalleryNotFound, StoreUnavailable
from .meta import MetaRules

logger = logging.getLogger(__name__)
T = TypeVar("T")

# ErrorMessage: a server error the driver has no class for, such as Cassandra 5's CAS_WRITE_UNKNOWN
# ("CAS operation result is unknown"): a conditional write of unknown outcome under load.
_DRIVER_ERRORS = (DriverException, RequestExecutionException, NoHostAvailable, ErrorMessage, OSError)
_META_RETRIES = 8
# Faces per conditional batch: one Paxos round for all of them, and ~32 KiB of rows, under Cassandra's
# default batch_size_fail_threshold (50 KiB).
_ROWS_PER_BATCH = 32


def _level(name: str) -> int:
    level: int = getattr(ConsistencyLevel, name)
    return level


class CassandraFaceStore:
    def __init__(
        self,
        settings: CassandraSettings,
        num_shards: int,
        change_log_retention_s: float = CHANGE_LOG_RETENTION_S,
        meta_rules: MetaRules | None = None,
    ):
        self.settings = settings
        self._reopen_args = (settings, num_shards, change_log_retention_s, meta_rules)
        self.change_log_retention_s = change_log_retention_s
        self.meta_rules = meta_rules or MetaRules()
        self.num_shards, self.keyspace = num_shards, settings.keyspace
        self.max_in_flight, self.page_size = settings.max_in_flight, settings.page_size
        self._read, self._write = _level(settings.read_consistency), _level(settings.write_consistency)
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=self._write,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=settings.request_timeout_s,
        )
        self._cluster = Cluster(
            list(settings.hosts),
            port=settings.port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            # After an outage, find the node again within seconds, not minutes.
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
            connect_timeout=settings.request_timeout_s,
            protocol_version=5,
        )
        try:
            self._session = self._cluster.connect()
            self._create_schema(settings.replication_factor)
            self._prepare()
            self._check_layout()
        except BaseException as error:
            self._cluster.shutdown()
            if isinstance(error, _DRIVER_ERRORS):
                where = f"{settings.hosts}:{settings.port}"
                raise StoreUnavailable(f"cannot reach Cassandra at {where}: {error}") from None
            raise

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Crossing to another process (a Ray actor) connects anew there.
        return CassandraFaceStore, self._reopen_args

    # ---- schema -------------------------------------------------------------------------------

    def _create_schema(self, replication_factor: int) -> None:
        execute = self._session.execute
        execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.keyspace} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
        )
        execute(f"CREATE TABLE IF NOT EXISTS {self.keyspace}.layout (key text PRIMARY KEY, value text)")
        execute(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.galleries "
            "(name text PRIMARY KEY, created_at double, dim int, model text)"
        )
        execute(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.faces (gallery text, shard int, id bigint, "
            "facen blob, meta text, features text, created_at double, PRIMARY KEY ((gallery, shard), id)) "
            "WITH CLUSTERING ORDER BY (id ASC)"
        )
        execute(
            f"CREATE TABLE IF NOT EXISTS {self.keyspace}.face_changes (gallery text, shard int, "
            "changed_at timestamp, id bigint, PRIMARY KEY ((gallery, shard), changed_at, id))"
        )

    def _prepare(self) -> None:
        ks, prepare = self.keyspace, self._session.prepare
        face_get = (
            f"SELECT id, facen, meta, features, created_at FROM {ks}.faces WHERE gallery = ? AND shard = ? AND id = ?"
        )
        self._q = {
            "layout_get": prepare(f"SELECT value FROM {ks}.layout WHERE key = ?"),
            "layout_put": prepare(f"INSERT INTO {ks}.layout (key, value) VALUES (?, ?) IF NOT EXISTS"),
            "gallery_get": prepare(f"SELECT name, created_at, dim, model FROM {ks}.galleries WHERE name = ?"),
            "gallery_all": prepare(f"SELECT name, created_at, dim, model FROM {ks}.galleries"),
            "gallery_put": prepare(f"INSERT INTO {ks}.galleries (name, created_at) VALUES (?, ?) IF NOT EXISTS"),
            "gallery_dim": prepare(f"UPDATE {ks}.galleries SET dim = ?, model = ? WHERE name = ? IF dim = null"),
            "gallery_del": prepare(f"DELETE FROM {ks}.galleries WHERE name = ?"),
            "partition_del": prepare(f"DELETE FROM {ks}.faces WHERE gallery = ? AND shard = ?"),
            "face_put": prepare(
                f"INSERT INTO {ks}.faces (gallery, shard, id, facen, meta, features, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
            ),
            "face_get": prepare(face_get),
            "face_get_settled": prepare(face_get),  # the same read at LOCAL_SERIAL (below)
            "face_meta": prepare(
                f"UPDATE {ks}.faces SET meta = ? WHERE gallery = ? AND shard = ? AND id = ? IF meta = ?"
            ),
            "face_del": prepare(f"DELETE FROM {ks}.faces WHERE gallery = ? AND shard = ? AND id = ? IF EXISTS"),
            "scan": prepare(
                f"SELECT id, facen, meta, features, created_at FROM {ks}.faces "
                "WHERE gallery = ? AND shard = ? AND id > ? LIMIT ?"
            ),
            "scan_first": prepare(
                f"SELECT id, facen, meta, features, created_at FROM {ks}.faces "
                "WHERE gallery = ? AND shard = ? AND id >= ? LIMIT ?"
            ),
            "count": prepare(f"SELECT COUNT(*) FROM {ks}.faces WHERE gallery = ? AND shard = ?"),
            "change_put": prepare(
                f"INSERT INTO {ks}.face_changes (gallery, shard, changed_at, id) VALUES (?, ?, ?, ?) USING TTL ?"
            ),
            "changes": prepare(f"SELECT id FROM {ks}.face_changes WHERE gallery = ? AND shard = ? AND changed_at >= ?"),
            "changes_del": prepare(f"DELETE FROM {ks}.face_changes WHERE gallery = ? AND shard = ?"),
        }
        for name in ("layout_get", "gallery_get", "gallery_all", "face_get", "scan", "scan_first", "count", "changes"):
            self._q[name].consistency_level = self._read
        self._q["face_get_settled"].consistency_level = ConsistencyLevel.LOCAL_SERIAL
        for name in ("scan", "scan_first", "changes"):
            self._q[name].fetch_size = self.page_size

    def _check_layout(self) -> None:
        self._session.execute(self._q["layout_put"], ("store_id", uuid.uuid4().hex))
        self.store_id = self._session.execute(self._q["layout_get"], ("store_id",)).one().value
        self._session.execute(self._q["layout_put"], ("num_shards", str(self.num_shards)))
        stored = self._session.execute(self._q["layout_get"], ("num_shards",)).one()
        if stored is not None and int(stored.value) != self.num_shards:
            raise ValueError(
                f"keyspace {self.keyspace} was laid out for {stored.value} shards, not "
                f"{self.num_shards}: keep index.num_shards as it was, or use a new keyspace"
            )

    # ---- helpers ------------------------------------------------------------------------------

    def _run(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except _DRIVER_ERRORS as error:
            logger.warning("Cassandra failed: %s: %s", type(error).__name__, error)
            raise StoreUnavailable(f"the face store is unavailable ({type(error).__name__})") from None

    def _gallery(self, name: str) -> GalleryRecord:
        row = self._session.execute(self._q["gallery_get"], (name,)).one()
        if row is None:
            raise GalleryNotFound(name)
        return GalleryRecord(row.name, row.created_at, row.dim, row.model)

    @staticmethod
    def _record(gallery: str, row: Any) -> FaceRecord:
        return FaceRecord(
            gallery,
            from_stored_id(row.id),
            np.frombuffer(row.facen, dtype="<f4").copy(),
            json.loads(row.meta),
            json.loads(row.features),
            row.created_at,
        )

    def _key(self, gallery: str, face_id: int) -> tuple[str, int, int]:
        return gallery, shard_of(gallery, face_id, self.num_shards), to_stored_id(face_id)

    # ---- galleries ----------------------------------------------------------------------------

    def create_gallery(self, name: str) -> GalleryRecord:
        check_gallery_name(name)

        def work() -> GalleryRecord:
            record = GalleryRecord(name, time.time())
            if not self._session.execute(self._q["gallery_put"], (name, record.created_at)).was_applied:
                raise GalleryExists(name)
            return record

        return self._run(work)

    def get_gallery(self, name: str) -> GalleryRecord:
        return self._run(lambda: self._gallery(name))

    def list_galleries(self) -> list[GalleryRecord]:
        rows = self._run(lambda: list(self._session.execute(self._q["gallery_all"])))
        return sorted((GalleryRecord(r.name, r.created_at, r.dim, r.model) for r in rows), key=lambda g: g.name)

    def delete_gallery(self, name: str) -> None:
        def work() -> None:
            self._gallery(name)
            partitions = [(name, shard) for shard in range(self.num_shards)]
            self._concurrently(self._q["partition_del"], partitions)
            self._concurrently(self._q["changes_del"], partitions)
            self._session.execute(self._q["gallery_del"], (name,))

        self._run(work)

    def _concurrently(self, statement: Any, parameters: list[tuple[Any, ...]]) -> list[Any]:
        """Run one statement for many parameter tuples, ``max_in_flight`` at a time; raise the first failure."""
        results = execute_concurrent_with_args(
            self._session, statement, parameters, concurrency=self.max_in_flight, raise_on_first_error=True
        )
        return [result for _, result in results]

    # ---- faces --------------------------------------------------------------------------------

    def _fix_dim(self, gallery: GalleryRecord, dim: int, model: str | None) -> GalleryRecord:
        """Bind an empty gallery to the first face's length and model; a concurrent first add may win."""
        if gallery.dim is None:
            applied = self._session.execute(self._q["gallery_dim"], (dim, model, gallery.name))
            if applied.was_applied:
                return GalleryRecord(gallery.name, gallery.created_at, dim, model)
            return self._gallery(gallery.name)
        return gallery

    def add_faces(self, faces: Sequence[FaceRecord]) -> list[FacegridError | None]:
        def work() -> list[FacegridError | None]:
            results: list[FacegridError | None] = [None] * len(faces)
            galleries: dict[str, GalleryRecord | FacegridError] = {}
            rows, positions, seen = [], [], set()
            for position, face in enumerate(faces):
                try:
                    gallery = galleries.get(face.gallery)
                    if gallery is None:
                        try:
                            gallery = galleries[face.gallery] = self._gallery(face.gallery)
                        except GalleryNotFound as error:
                            gallery = galleries[face.gallery] = error
                    if isinstance(gallery, FacegridError):
                        raise gallery
                    face_id = check_face_id(face.face_id)
                    vector = check_facen(face.facen, gallery, face.model)
                    meta = self.meta_rules.check(face.meta, new_face=True)
                    if gallery.dim is None:
                        gallery = galleries[face.gallery] = self._fix_dim(gallery, vector.size, face.model)
                        vector = check_facen(face.facen, gallery, face.model)
                    if (face.gallery, face_id) in seen:
                        # Two rows of one key in one conditional batch would both pass: the later one
                        # conflicts, as it would had it come in a later call.
                        raise FaceExists(face.gallery, face_id)
                    seen.add((face.gallery, face_id))
                    rows.append(
                        (
                            *self._key(face.gallery, face_id),
                            vector.astype("<f4").tobytes(),
                            json.dumps(meta),
                            json.dumps(face.attributes),
                            face.created_at or time.time(),
                        )
                    )
                    positions.append(position)
                except FacegridError as error:
                    results[position] = error
            self._note_changes([row[:3] for row in rows])
            for row, existed in self._insert_new(rows):
                if existed:
                    results[positions[row]] = FaceExists(rows[row][0], from_stored_id(rows[row][2]))
            return results

        return self._run(work)

    def _note_changes(self, keys: list[tuple[str, int, int]]) -> None:
        """Log the (gallery, shard, stored id) keys about to be written, one unlogged batch per partition."""
        now, ttl = int(time.time() * 1000), max(1, int(self.change_log_retention_s))
        partitions: dict[tuple[str, int], list[int]] = {}
        for gallery, shard, row_id in keys:
            partitions.setdefault((gallery, shard), []).append(row_id)
        batches = []
        for (gallery, shard), row_ids in partitions.items():
            for start in range(0, len(row_ids), _ROWS_PER_BATCH * 4):
                batch = BatchStatement(BatchType.UNLOGGED)
                for row_id in row_ids[start : start + _ROWS_PER_BATCH * 4]:
                    batch.add(self._q["change_put"], (gallery, shard, now, row_id, ttl))
                batches.append((batch, None))
        execute_concurrent(self._session, batches, concurrency=self.max_in_flight, raise_on_first_error=True)

    def _insert_new(self, rows: list[tuple[Any, ...]]) -> Iterator[tuple[int, bool]]:
        """Insert rows that do not exist yet, as conditional batches per partition; yields (row index,
        existed) for every row. A batch with an existing row is not applied at all: Cassandra names the
        existing rows, and the batch is sent again without them."""
        pending: dict[tuple[str, int], list[int]] = {}
        for index, row in enumerate(rows):
            pending.setdefault((row[0], row[1]), []).append(index)
        chunks = [
            indexes[i : i + _ROWS_PER_BATCH]
            for indexes in pending.values()
            for i in range(0, len(indexes), _ROWS_PER_BATCH)
        ]
        while chunks:
            batches = []
            for chunk in chunks:
                batch = BatchStatement()
                for index in chunk:
                    batch.add(self._q["face_put"], rows[index])
                batches.append((batch, None))
            outcomes = execute_concurrent(
                self._session, batches, concurrency=self.max_in_flight, raise_on_first_error=True
            )
            retry = []
            for chunk, (_, result) in zip(chunks, outcomes):
                if result.was_applied:
                    yield from ((index, False) for index in chunk)
                    continue
                existing = {row.id for row in result if row.id is not None}
                for index in chunk:
                    if rows[index][2] in existing:
                        yield index, True
                remaining = [index for index in chunk if rows[index][2] not in existing]
                if remaining:
                    retry.append(remaining)
            chunks = retry

    def get_face(self, gallery: str, face_id: int) -> FaceRecord:
        def work() -> FaceRecord:
            self._gallery(gallery)
            row = self._session.execute(self._q["face_get"], self._key(gallery, check_face_id(face_id))).one()
            if row is None:
                raise FaceNotFound(gallery, face_id)
            return self._record(gallery, row)

        return self._run(work)

    def get_faces(self, gallery: str, face_ids: Sequence[int], settled: bool = False) -> dict[int, FaceRecord]:
        # A face write is a lightweight transaction: one that timed out may sit accepted but uncommitted, which
        # a plain read does not see and the next transaction on its partition commits. A SERIAL read finishes
        # or supersedes it first, so what it finds is final.
        statement = self._q["face_get_settled" if settled else "face_get"]

        def work() -> dict[int, FaceRecord]:
            self._gallery(gallery)
            results = self._concurrently(statement, [self._key(gallery, i) for i in face_ids])
            found = {}
            for rows in results:
                row = rows.one()
                if row is not None:
                    found[from_stored_id(row.id)] = self._record(gallery, row)
            return found

        return self._run(work)

    def update_meta(self, gallery: str, face_id: int, meta: dict[str, Any]) -> FaceRecord:
        self.meta_rules.check(meta, new_face=False)

        def work() -> FaceRecord:
            self._gallery(gallery)
            key = self._key(gallery, check_face_id(face_id))
            self._note_changes([key])
            for _ in range(_META_RETRIES):
                row = self._session.execute(self._q["face_get"], key).one()
                if row is None:
                    raise FaceNotFound(gallery, face_id)
                face = self._record(gallery, row)
                merged = self.meta_rules.check({**face.meta, **meta}, new_face=False)
                if self._session.execute(self._q["face_meta"], (json.dumps(merged), *key, row.meta)).was_applied:
                    return FaceRecord(gallery, face_id, face.facen, merged, face.attributes, face.created_at)
            raise StoreUnavailable(f"face {face_id}: meta kept changing under {_META_RETRIES} attempts")

        return self._run(work)

    def delete_face(self, gallery: str, face_id: int) -> None:
        def work() -> None:
            self._gallery(gallery)
            key = self._key(gallery, check_face_id(face_id))
            self._note_changes([key])
            if not self._session.execute(self._q["face_del"], key).was_applied:
                raise FaceNotFound(gallery, face_id)

        self._run(work)

    def scan_partition(
        self, gallery: str, shard: int, after_id: int | None = None, limit: int = 1000
    ) -> list[FaceRecord]:
        if after_id is None:
            statement, bound = self._q["scan_first"], SMALLEST_STORED_ID
        else:
            statement, bound = self._q["scan"], to_stored_id(after_id)
        rows = self._run(lambda: list(self._session.execute(statement, (gallery, shard, bound, limit))))
        return [self._record(gallery, row) for row in rows]

    def changed_since(self, gallery: str, shard: int, since: float) -> set[int] | None:
        if since < time.time() - self.change_log_retention_s:
            return None
        bound = int(since * 1000)  # a CQL timestamp: milliseconds, as the notes were written
        rows = self._run(lambda: list(self._session.execute(self._q["changes"], (gallery, shard, bound))))
        return {from_stored_id(row.id) for row in rows}

    def prune_changes(self, gallery: str, shard: int) -> None:
        """Nothing to do: the log's rows expire by their TTL."""

    def count_faces(self, gallery: str) -> int:
        def work() -> int:
            self._gallery(gallery)
            results = self._concurrently(self._q["count"], [(gallery, s) for s in range(self.num_shards)])
            return int(sum(rows.one()[0] for rows in results))

        return self._run(work)

    def close(self) -> None:
        self._cluster.shutdown()
