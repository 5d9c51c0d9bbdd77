"""A shard replica's start, rebuilt from the store vs loaded from its snapshot, side by side in one run.

    python -m bench.restart [--flat-faces 1000000] [--hnsw-faces 300000] [--changes 1000]

For each index kind: N faces x 128-d in an embedded store with one shard; a shard started from the store
(the rebuild, for HNSW the graph build too) saves its snapshot (timed); then ``--changes`` faces are
deleted and as many added in the store, and a second shard starts from the snapshot, replaying them
(timed). It checks that the loaded shard holds what the store holds. In one process, on the machine's
cores (index.threads_per_shard: 0), without Ray: bench/search_http.py times the same over HTTP.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from index import IndexConfig
from index.shard import IndexShard
from store import FaceRecord, SqliteFaceStore
from tests.factories import clustered_unit_vectors

DIM = 128


def fill(store: SqliteFaceStore, vectors: np.ndarray) -> None:
    store.create_gallery("bench")
    for start in range(0, len(vectors), 5000):
        store.add_faces([FaceRecord("bench", start + i + 1, v) for i, v in enumerate(vectors[start : start + 5000])])


def measure(kind: str, faces: int, changes: int, scratch: Path) -> dict:
    vectors = clustered_unit_vectors(faces + changes, DIM, seed=30)
    store = SqliteFaceStore(scratch / f"{kind}.db", num_shards=1)
    fill(store, vectors[:faces])
    config = IndexConfig(num_shards=1, kind=kind, snapshot_replay_margin_s=0)
    snapshots = scratch / f"{kind}-snapshots"
    started = time.perf_counter()
    rebuilt = IndexShard(0, store, config, snapshots)
    figures = {"rebuild_s": time.perf_counter() - started, "kind": rebuilt.galleries["bench"].kind}
    saved = rebuilt.save_snapshot()
    assert saved is not None  # a snapshot directory was given
    figures["save_s"] = saved["seconds"]
    figures["snapshot_bytes"] = sum(f.stat().st_size for f in snapshots.rglob("*") if f.is_file())
    del rebuilt
    for face_id in range(1, changes + 1):
        store.delete_face("bench", face_id)
    store.add_faces([FaceRecord("bench", faces + i + 1, v) for i, v in enumerate(vectors[faces:])])
    started = time.perf_counter()
    loaded = IndexShard(0, store, config, snapshots)
    figures["load_s"] = time.perf_counter() - started
    assert loaded.started_from == "snapshot" and loaded.replayed == 2 * changes, loaded.replayed
    assert loaded.count("bench") == faces
    probe = vectors[faces : faces + 8]
    assert (loaded.galleries["bench"].search(probe, 1)[1][:, 0] == np.arange(faces + 1, faces + 9)).all()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flat-faces", type=int, default=1_000_000)
    parser.add_argument("--hnsw-faces", type=int, default=300_000)
    parser.add_argument("--changes", type=int, default=1000, help="faces deleted, and as many added, after the save")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp())
    print(f"shard start, one shard in-process; {args.changes} deletes + {args.changes} adds replayed after the save")
    print("   kind   faces        rebuild from the store   save snapshot (size)    load + replay   rebuild/load")
    for kind, faces in (("flat", args.flat_faces), ("hnsw", args.hnsw_faces)):
        if not faces:
            continue
        f = measure(kind, faces, args.changes, scratch)
        print(
            f"   {f['kind']:5s}  {faces:>9,}    {f['rebuild_s']:10.1f} s          {f['save_s']:6.1f} s "
            f"({f['snapshot_bytes'] / 2**20:,.0f} MiB)   {f['load_s']:8.1f} s      "
            f"{f['rebuild_s'] / f['load_s']:6.1f}x"
        )


if __name__ == "__main__":
    main()
