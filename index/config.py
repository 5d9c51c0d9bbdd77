"""Index settings: how galleries are split across shard actors and which FAISS index each shard keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_shards: int = Field(2, ge=1, description="Shards per gallery; fixed once faces are stored.")
    replicas_per_shard: int = Field(1, ge=1, description="Copies of each shard; reads go to any live one.")
    cpus_per_shard: float = Field(0.25, ge=0, description="Ray CPU reservation of one shard actor.")
    shard_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources a shard actor needs, to keep shards on index "
        "nodes (e.g. {facegrid_index: 1} with nodes started with it).",
    )
    threads_per_shard: int = Field(
        0,
        ge=0,
        description="BLAS and OpenMP threads inside one shard replica. 0: the node's cores shared "
        "evenly among the shard replicas placed on it (cluster/ says how they spread).",
    )
    kind: Literal["flat", "hnsw", "ivf"] = Field(
        "flat",
        description="flat: exact inner product. hnsw/ivf: approximate, once a gallery's shard holds "
        "approximate_min_faces faces (smaller ones stay exact).",
    )
    approximate_min_faces: int = Field(100_000, ge=1000, description="Faces per gallery shard before hnsw/ivf.")
    hnsw_m: int = Field(48, ge=4, description="HNSW links per node (1M faces: 48 beat 32 at equal speed).")
    hnsw_ef_construction: int = Field(160, ge=8, description="HNSW build breadth; higher: better graph, slower.")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW search breadth; higher: better recall, slower.")
    hnsw_storage: Literal["flat", "bf16"] = Field(
        "flat",
        description="What the HNSW graph walk reads. flat: the float32 vectors. bf16: half-size bfloat16 "
        "copies, the walk's candidates then re-ranked on the float32 vectors, so scores stay "
        "exact: about 1.1x the queries/s at equal recall at 5M faces, for 256 more bytes a "
        "128-d face (bench/search.py --hnsw-storage bf16).",
    )
    hnsw_rerank_factor: int = Field(2, ge=1, description="hnsw_storage=bf16: candidates re-ranked per result wanted.")
    ivf_lists_per_sqrt: float = Field(4.0, gt=0, description="IVF lists = this x sqrt(faces), at training.")
    ivf_nprobe: int = Field(64, ge=1, description="IVF lists visited per query.")
    huge_pages: bool = Field(
        True,
        description="Start shard actors with malloc on transparent huge pages (index/huge_pages.py): "
        "graph searches over large galleries miss the TLB far less.",
    )
    gpus_per_shard: float = Field(
        0,
        ge=0,
        description="GPUs (or a share of one) each shard replica reserves; with one, flat galleries are "
        "searched on it as gpu_search says.",
    )
    gpu_search: Literal["torch", "faiss", "off"] = Field(
        "torch",
        description="How a shard replica with a GPU searches flat galleries. torch: the vectors kept in "
        "GPU memory (float32), one matrix product and top-k per batch, filters as masks "
        "(index/torch_search.py); faiss: FAISS's GPU index (a FAISS GPU build, e.g. "
        "faiss-gpu-cu13-cuvs), unfiltered searches only, the rest on the CPU; off: the CPU.",
    )
    blas_threshold: int = Field(
        32,
        ge=1,
        description="Flat galleries with 8-bit codes (index/coarse_scan.py: from 16,384 faces a shard): "
        "a batch of fewer queries than this is answered from the codes and re-ranked exactly, a "
        "larger one through FAISS's BLAS path over the float32 vectors, each where it is faster "
        "(python -m bench.search --only paths). Smaller galleries switch to BLAS from 4 queries.",
    )
    hedge_after_s: float = Field(
        0.25,
        ge=0,
        description="Router: a read one replica has not answered within this also goes to the "
        "next replica (a lost node's actors hang until Ray notices and restarts them).",
    )
    shard_timeout_s: float = Field(
        15,
        gt=0,
        description="Router: a read no replica answers within this is STORAGE_ERROR 503; a write "
        "waits this long for an acknowledgement (the store already holds it).",
    )
    max_batch: int = Field(64, ge=1, description="Router: most queries sent to the shards in one batch.")
    batches_in_flight: int = Field(
        1,
        ge=1,
        description="Router: batches each shard replica is sent before the first answers; queries "
        "arriving meanwhile wait and leave together in the next batch (no fixed wait).",
    )
    snapshots: bool = Field(
        True,
        description="Shard replicas save their indexes to snapshot_dir and load them on start, replaying "
        "only what the store changed since, instead of rebuilding from the store.",
    )
    snapshot_dir: Path | None = Field(
        None,
        description="Where shard replicas keep their snapshots, a directory per replica. Not set: "
        "'index-snapshots' beside the embedded store's file, or in the data directory with "
        "Cassandra. On a cluster, a volume every index node mounts, so that a replica "
        "restarted on another node finds its snapshot (else it rebuilds from the store).",
    )
    snapshot_interval_s: float = Field(
        300,
        gt=0,
        description="A replica that took writes saves a snapshot this often; searches to it wait "
        "while it saves (about a second per 500 MB of index on one disk).",
    )
    snapshot_replay_margin_s: float = Field(
        30,
        ge=0,
        description="A snapshot is brought up to date from the store's changes since it was taken, "
        "less this: longer than a write takes from the store to its shard, plus the "
        "clock skew between nodes.",
    )
    compact_dead_fraction: float = Field(
        0.25, gt=0, lt=1, description="Rebuild a gallery index once this share of its slots are deleted faces."
    )

    # What a running service may change (the Ingress deployment's user_config "index" entry); the rest
    # decides how shards are built and placed, and changes with a restart.
    TUNABLE: ClassVar[frozenset[str]] = frozenset(
        {
            "hnsw_ef_search",
            "hnsw_rerank_factor",
            "ivf_nprobe",
            "max_batch",
            "batches_in_flight",
            "blas_threshold",
            "hedge_after_s",
            "shard_timeout_s",
        }
    )

    def current_tuning(self) -> dict[str, Any]:
        """This configuration's TUNABLE fields, by name."""
        return {name: getattr(self, name) for name in sorted(self.TUNABLE)}

    @classmethod
    def tuning(cls, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` checked as index tuning: only TUNABLE fields, each validated as in the settings."""
        unknown = set(values) - cls.TUNABLE
        if unknown:
            raise ValueError(
                f"index settings {sorted(unknown)} cannot change at run time (tunable: {sorted(cls.TUNABLE)})"
            )
        checked = cls.model_validate({**cls().model_dump(), **values})
        return {name: getattr(checked, name) for name in values}

    @model_validator(mode="after")
    def _shards_need_a_resource(self) -> "IndexConfig":
        if self.cpus_per_shard == 0 and not any(amount > 0 for amount in self.shard_resources.values()):
            raise ValueError("a shard needs cpus_per_shard > 0 or a positive entry in shard_resources")
        return self

    def shard_bundle(self) -> dict[str, float]:
        """The Ray resources one shard replica reserves."""
        wanted = {"CPU": self.cpus_per_shard, "GPU": self.gpus_per_shard, **self.shard_resources}
        return {name: amount for name, amount in wanted.items() if amount > 0}
