"""The ``FaceStore`` protocol, its records, and the rules every implementation shares.

Layout (as on the architecture page, so the Cassandra store is a drop-in):
``galleries (name, created_at, dim, model)`` and ``faces ((gallery, shard), id, facen, meta, features,
created_at)`` (``FaceRecord.attributes`` is the features column): one partition per gallery shard, so a shard
rebuilds from a single-partition scan.
A face's shard is ``shard_of(gallery, id, num_shards)``, a stable hash (not Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from facegrid.errors import FacegridError

from .errors import InvalidValue

MAX_FACE_ID = 2**64 - 1
# Face ids are unsigned 64-bit; SQLite and Cassandra keep signed 64-bit integers, so both stores keep an id
# shifted by 2**63, which keeps the ids' order (keyset paging by id relies on it).
_STORED_ID_SHIFT = 2**63
SMALLEST_STORED_ID = -_STORED_ID_SHIFT


def to_stored_id(face_id: int) -> int:
    return face_id - _STORED_ID_SHIFT


def from_stored_id(stored: int) -> int:
    return stored + _STORED_ID_SHIFT


# How long a store keeps its change log (the faces each write touched): an index snapshot older than
# this cannot be brought up to date from it and is rebuilt from the faces instead.
CHANGE_LOG_RETENTION_S = 7 * 24 * 3600.0
GALLERY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class GalleryRecord:
    name: str
    created_at: float
    dim: int | None = None  # fixed by the first face added
    model: str | None = None  # the extractor that made its vectors, when known


@dataclass(frozen=True, eq=False)
class FaceRecord:
    gallery: str
    face_id: int
    facen: np.ndarray  # float32, unit length
    meta: dict[str, Any] = field(default_factory=dict)
    # The face attributes copied from its source, in the spec's two styles: {"features": {}, "attributes": {}}.
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    model: str | None = None  # the extractor that made facen, where known: binds an empty gallery to it


def shard_of(gallery: str, face_id: int, num_shards: int) -> int:
    digest = hashlib.blake2b(f"{gallery}\x00{face_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


def check_gallery_name(name: str) -> None:
    if not isinstance(name, str) or not GALLERY_NAME.match(name):
        raise InvalidValue("gallery names are 1-64 characters of A-Z a-z 0-9 _ -", "gallery", str(name))


def check_face_id(face_id: object) -> int:
    if isinstance(face_id, bool) or not isinstance(face_id, int) or not 0 <= face_id <= MAX_FACE_ID:
        raise InvalidValue("face ids are unsigned 64-bit integers", "id", str(face_id))
    return face_id


def unit_vector(values: Any) -> np.ndarray | None:
    """``values`` as a float32 vector of length 1; None where that cannot be (empty, not finite, zero)."""
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector)) if vector.size and np.isfinite(vector).all() else 0.0
    return vector / norm if norm > 0 and np.isfinite(norm) else None


def check_facen(facen: Any, gallery: GalleryRecord, model: str | None = None) -> np.ndarray:
    """The vector, unit length, if it fits the gallery: its length, and its model where both are known."""
    vector = np.asarray(facen, dtype=np.float32).reshape(-1)
    if gallery.model is not None and model is not None and model != gallery.model:
        raise InvalidValue(f"gallery {gallery.name!r} holds vectors of {gallery.model}, not of {model}", "facen", model)
    unit = unit_vector(vector)
    if unit is None:
        raise InvalidValue("the feature vector is empty, not finite or zero", "facen", f"dim {vector.size}")
    if gallery.dim is not None and vector.size != gallery.dim:
        raise InvalidValue(
            f"gallery {gallery.name!r} holds {gallery.dim}-d vectors, not {vector.size}-d",
            "facen",
            f"dim {vector.size}",
        )
    return unit


class FaceStore(Protocol):
    """Durable galleries and faces. Every write is durable when the call returns."""

    num_shards: int
    store_id: str  # made once when the store is first laid out: tells one store from another

    def create_gallery(self, name: str) -> GalleryRecord:
        """Raises GalleryExists."""

    def get_gallery(self, name: str) -> GalleryRecord:
        """Raises GalleryNotFound."""

    def list_galleries(self) -> list[GalleryRecord]: ...
    def delete_gallery(self, name: str) -> None:
        """Removes the gallery and every face in it. Raises GalleryNotFound."""

    def add_faces(self, faces: Sequence[FaceRecord]) -> list[FacegridError | None]:
        """Adds each face whole or not at all; one result per face (None = added)."""

    def get_face(self, gallery: str, face_id: int) -> FaceRecord:
        """Raises GalleryNotFound or FaceNotFound."""

    def get_faces(self, gallery: str, face_ids: Sequence[int], settled: bool = False) -> dict[int, FaceRecord]:
        """The faces that exist among ``face_ids``, by id. Raises GalleryNotFound. ``settled``: first finish
        or abandon any write to these faces whose outcome was left unknown (a timed-out conditional write
        may still land later), so that the answer stays true afterwards."""

    def update_meta(self, gallery: str, face_id: int, meta: dict[str, Any]) -> FaceRecord:
        """Replaces the listed meta keys, keeps the others; returns the updated face."""

    def delete_face(self, gallery: str, face_id: int) -> None:
        """Raises GalleryNotFound or FaceNotFound."""

    def scan_partition(
        self, gallery: str, shard: int, after_id: int | None = None, limit: int = 1000
    ) -> list[FaceRecord]:
        """Faces of one (gallery, shard) partition in id order, after ``after_id``."""

    def changed_since(self, gallery: str, shard: int, since: float) -> set[int] | None:
        """Ids of the (gallery, shard) partition's faces added, patched or deleted at or after the time
        ``since`` (seconds since the epoch, the writers' clocks); None when the change log no longer
        reaches back that far. Deleting a gallery deletes its log."""

    def prune_changes(self, gallery: str, shard: int) -> None:
        """Forget the (gallery, shard) partition's changes older than the log's retention."""

    def count_faces(self, gallery: str) -> int: ...
    def close(self) -> None: ...


def add_face(store: FaceStore, face: FaceRecord) -> None:
    """Add one face, raising its error instead of returning it."""
    (error,) = store.add_faces([face])
    if error is not None:
        raise error
