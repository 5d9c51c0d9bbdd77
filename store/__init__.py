"""State outside the index: the ``FaceStore`` (galleries and faces, durable) and the ``DetectionCache``.

Each has an embedded implementation (SQLite; one Ray actor) and a cluster one (Cassandra; memcached)
behind the same protocol; ``store.backends`` opens the one the settings name.
"""

from .base import FaceRecord, FaceStore, GalleryRecord, add_face, shard_of
from .errors import (
    CacheUnavailable,
    FaceExists,
    FaceNotFound,
    GalleryExists,
    GalleryNotFound,
    InvalidValue,
    StoreUnavailable,
)
from .sqlite import SqliteFaceStore

__all__ = [
    "CacheUnavailable",
    "FaceExists",
    "FaceNotFound",
    "FaceRecord",
    "FaceStore",
    "GalleryExists",
    "GalleryNotFound",
    "GalleryRecord",
    "InvalidValue",
    "SqliteFaceStore",
    "StoreUnavailable",
    "add_face",
    "shard_of",
]
