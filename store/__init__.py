"""Durable state: the ``FaceStore`` (galleries and faces) and, later, the detection cache.

The embedded implementations are real (SQLite), so unit tests use them; cluster implementations
(Cassandra, memcached) plug in behind the same protocols.
"""

from .base import FaceRecord, FaceStore, GalleryRecord, add_face, shard_of
from .errors import (
    CacheUnavailable,
    FaceExists,
    FacegridError,
    FaceNotFound,
    GalleryExists,
    GalleryNotFound,
    InvalidFace,
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
    "InvalidFace",
    "ShardUnavailable",
    "SqliteFaceStore",
    "StoreUnavailable",
    "add_face",
    "shard_of",
]
