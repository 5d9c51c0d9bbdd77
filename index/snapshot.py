"""Index snapshots: one shard replica's galleries saved to disk, so a restart loads them instead of
rebuilding every index from the face store.

A replica's snapshots live in a directory of their own::

    <snapshot_dir>/<replica name>/CURRENT          "snap-<ns> <sha256 of its manifest>"
    <snapshot_dir>/<replica name>/snap-<ns>/       manifest.json and, per gallery, <gallery>.faiss,
                                                   <gallery>.ids.npy, <gallery>.alive.npy, <gallery>.meta.json

A snapshot is written whole into a temporary directory, synced, renamed, and only then named in
CURRENT (itself replaced atomically), so a save killed half-way leaves the previous snapshot in force.
The manifest records each file's sha256, the store the snapshot came from, the time it was taken (its
stamp) and how its indexes were built; a file that does not match its checksum, another store, or other
build settings make ``load`` return None with the reason logged, and the shard rebuilds from the store.
Each replica has its own directory so that replicas of one shard never write over each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import IndexConfig
from .gallery_index import GalleryIndex

FORMAT = 1
_CHUNK = 8 * 2**20

logger = logging.getLogger(__name__)


@dataclass
class Snapshot:
    stamp: float  # time.time() when the state was captured
    galleries: dict[str, GalleryIndex]
    generations: dict[str, float]  # each gallery's created_at in the store it came from


def build_settings(config: IndexConfig) -> dict[str, Any]:
    """The settings an index's structure depends on: a snapshot built under others is not reused."""
    return {
        name: getattr(config, name)
        for name in (
            "kind",
            "approximate_min_faces",
            "hnsw_m",
            "hnsw_ef_construction",
            "hnsw_storage",
            "ivf_lists_per_sqrt",
        )
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


class SnapshotDirectory:
    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, snapshot: Snapshot, shard: int, store_id: str, config: IndexConfig) -> Path:
        """Write ``snapshot`` and make it the current one; returns its directory."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"snap-{time.time_ns()}"
        work = self.path / f"tmp-{name}-{os.getpid()}"
        work.mkdir()
        try:
            galleries = {}
            for gallery, index in snapshot.galleries.items():
                files = index.save(work, gallery)
                galleries[gallery] = {
                    "generation": snapshot.generations[gallery],
                    "dim": index.dim,
                    "kind": index.kind,
                    "faces": index.count,
                    "files": {file.name: _sha256(file) for file in files},
                }
                for file in files:
                    _sync_file(file)
            manifest = {
                "format": FORMAT,
                "shard": shard,
                "store_id": store_id,
                "stamp": snapshot.stamp,
                "build": build_settings(config),
                "galleries": galleries,
            }
            manifest_bytes = json.dumps(manifest, indent=1).encode()
            (work / "manifest.json").write_bytes(manifest_bytes)
            _sync_file(work / "manifest.json")
            _sync_directory(work)
            final = self.path / name
            work.rename(final)
            pointer = self.path / f"CURRENT.{os.getpid()}"
            pointer.write_text(f"{name} {hashlib.sha256(manifest_bytes).hexdigest()}\n")
            _sync_file(pointer)
            pointer.replace(self.path / "CURRENT")
            _sync_directory(self.path)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._remove_all_but(name)
        return final

    def _remove_all_but(self, current: str) -> None:
        for entry in self.path.iterdir():
            if entry.is_dir() and entry.name != current:
                shutil.rmtree(entry, ignore_errors=True)

    def load(self, shard: int, store_id: str, config: IndexConfig) -> Snapshot | None:
        """The current snapshot, checked whole; None (and why, in the log) when there is none to trust."""
        try:
            return self._load(shard, store_id, config)
        except Unusable as why:
            logger.warning(
                "shard %d: index snapshot in %s not used, rebuilding from the store: %s", shard, self.path, why
            )
            return None

    def _load(self, shard: int, store_id: str, config: IndexConfig) -> Snapshot | None:
        pointer = self.path / "CURRENT"
        if not pointer.exists():
            return None
        try:
            name, manifest_sha = pointer.read_text().split()
            directory = self.path / name
            manifest_bytes = (directory / "manifest.json").read_bytes()
            if hashlib.sha256(manifest_bytes).hexdigest() != manifest_sha:
                raise Unusable("its manifest does not match the checksum in CURRENT")
            manifest = json.loads(manifest_bytes)
        except (OSError, ValueError) as error:
            raise Unusable(f"cannot read it ({error})") from None
        if manifest.get("format") != FORMAT or manifest.get("shard") != shard:
            raise Unusable(f"it is format {manifest.get('format')} of shard {manifest.get('shard')}")
        if manifest["store_id"] != store_id:
            raise Unusable("it was taken from another face store")
        if manifest["build"] != build_settings(config):
            raise Unusable(f"it was built with {manifest['build']}, the settings now say {build_settings(config)}")
        for gallery in manifest["galleries"].values():
            for file, expected in gallery["files"].items():
                try:
                    if _sha256(directory / file) != expected:
                        raise Unusable(f"{file} does not match its checksum (torn or damaged)")
                except OSError as error:
                    raise Unusable(f"cannot read {file} ({error})") from None
        try:
            galleries = {
                name: GalleryIndex.load(directory, name, entry["dim"], entry["kind"], config)
                for name, entry in manifest["galleries"].items()
            }
        except (OSError, ValueError, RuntimeError) as error:  # FAISS raises RuntimeError on a bad file
            raise Unusable(f"cannot load it ({error})") from None
        return Snapshot(
            manifest["stamp"], galleries, {name: entry["generation"] for name, entry in manifest["galleries"].items()}
        )


class Unusable(Exception):
    """Why a snapshot on disk cannot be trusted."""
