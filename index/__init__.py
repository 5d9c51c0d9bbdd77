"""Galleries' vectors in FAISS, split across ``IndexShard`` actors and searched through ``ShardRouter``."""

from . import coarse_scan, huge_pages, matvec
from .config import IndexConfig
from .filters import FaceFilter
from .gallery_index import GalleryIndex
from .router import ShardRouter
from .shard import IndexShard, shard_actor

__all__ = [
    "FaceFilter",
    "GalleryIndex",
    "IndexConfig",
    "IndexShard",
    "ShardRouter",
    "coarse_scan",
    "huge_pages",
    "matvec",
    "shard_actor",
]
