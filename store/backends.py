"""The configured backends: ``open_store`` and ``open_cache`` read the store package's settings and
return the embedded implementation or the cluster one (Cassandra, memcached)."""

from __future__ import annotations

from .base import FaceStore
from .cache import ActorDetectionCache, DetectionCache, MemcachedDetectionCache
from .config import CacheSettings, StoreSettings
from .meta import MetaRules


def open_store(settings: StoreSettings, num_shards: int, meta_rules: MetaRules) -> FaceStore:
    """The FaceStore ``settings`` name: embedded SQLite by default, Cassandra on a cluster."""
    if settings.kind == "cassandra":
        from .cassandra import CassandraFaceStore  # the driver is imported only where it is used

        return CassandraFaceStore(settings.cassandra, num_shards, settings.change_log_retention_s, meta_rules)
    from .sqlite import SqliteFaceStore

    return SqliteFaceStore(
        settings.path, num_shards, settings.busy_timeout_s, settings.change_log_retention_s, meta_rules
    )


def open_cache(settings: CacheSettings) -> DetectionCache:
    """The DetectionCache ``settings`` name: one embedded actor by default, memcached on a cluster."""
    if settings.kind == "memcached":
        return MemcachedDetectionCache(settings.servers, settings.timeout_s)
    return ActorDetectionCache(settings.max_entries, detached=True)
