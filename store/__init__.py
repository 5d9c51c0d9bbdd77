"""State outside the index: the ``FaceStore`` (galleries and faces, durable) and the ``DetectionCache``.

Each has an embedded implementation (SQLite; one Ray actor) and a cluster one (Cassandra; memcached)
behind the same protocol; ``store.backends`` opens the one the settings name.
"""

from .base import FaceRecord, FaceStore, GalleryRecord, add_face, shard_of
from .errors import (
    CacheUnavailable,
    FaceExists,
    FacegridError,
    FaceNotFound,
    GalleryExists,
    GalleryNotFound,
    InvalidValue,
    ShardUnavailable,
    StoreUnavailable,
)
from .sqlite import SqliteFaceStore

__all__ = [
    "CacheUnavailable",
    "FaceExists",
    "FaceNotFound",
    "FaceRecord",
    "FaceStore",
    "FacegridError",
    "GalleryExists",
    "GalleryNotFound",
    "GalleryRecord",
    "InvalidValue",
    "ShardUnavailable",
    "SqliteFaceStore",
    "StoreUnavailable",
    "add_face",
    "shard_of",
]
