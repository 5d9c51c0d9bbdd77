"""The store package's settings: where faces are kept (SQLite or Cassandra) and detections cached.

They are sections of facegrid's one settings object (serve_app/config.py ``Settings.store`` and ``.cache``),
defined here beside the code that reads them, as models/ and index/ define theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.config import default_data_dir

from .base import CHANGE_LOG_RETENTION_S


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


ConsistencyName = Literal["ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE"]


class CassandraSettings(_Section):
    hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"], description="Contact points.")
    port: int = Field(9042, ge=1, le=65535, description="CQL native port.")
    keyspace: str = Field("facegrid", pattern=r"^[a-z][a-z0-9_]{0,47}$", description="Created when missing.")
    replication_factor: int = Field(1, ge=1, description="1 for one node; 3 for a three-node cluster.")
    read_consistency: ConsistencyName = Field("LOCAL_QUORUM", description="Reads (QUORUM of RF=1 is ONE).")
    write_consistency: ConsistencyName = Field("LOCAL_QUORUM", description="Writes.")
    max_in_flight: int = Field(64, ge=1, description="Bulk writes/reads in flight at once per store client.")
    request_timeout_s: float = Field(10, gt=0, description="One CQL request.")
    page_size: int = Field(5000, ge=100, description="Rows per page when scanning a partition.")


class StoreSettings(_Section):
    kind: Literal["embedded", "cassandra"] = Field("embedded", description="embedded: SQLite file; cassandra.")
    path: Path = Field(
        default_factory=lambda: default_data_dir() / "faces.db", description="SQLite file of the embedded face store."
    )
    busy_timeout_s: float = Field(30, gt=0, description="How long a write waits for another writer's lock.")
    change_log_retention_s: float = Field(
        CHANGE_LOG_RETENTION_S,
        gt=0,
        description="How long the store keeps its log of changed faces, from which "
        "index snapshots are brought up to date; a snapshot older "
        "than this is rebuilt from the faces.",
    )
    cassandra: CassandraSettings = Field(default_factory=CassandraSettings)


class CacheSettings(_Section):
    kind: Literal["embedded", "memcached"] = Field(
        "embedded", description="embedded: one Ray actor shared by all replicas; memcached: the servers below."
    )
    servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:11211"], description="memcached host:port.")
    timeout_s: float = Field(1.0, gt=0, description="memcached connect and request timeout.")
    ttl_s: float = Field(3600, gt=0, description="How long a detection stays retrievable.")
    max_entries: int = Field(100_000, ge=1, description="Embedded cache: most detections kept (LRU).")
