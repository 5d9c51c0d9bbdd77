"""One gallery's part of one shard: a FAISS index of unit vectors plus the columns its filters need.

Faces live in slots: the FAISS index holds slot i at position i, ``ids[i]`` is its face id and the meta
columns hold its filterable values. Deleting a face clears its slot's ``alive`` bit (FAISS flat and HNSW
indexes cannot remove in place cheaply); searches skip dead slots with an ID selector, and once a
configured share of slots is dead the index is rebuilt from the live ones.

Filtered search stays exact: the filter becomes a mask of passing slots, applied before the top-k
(index/matvec.py for flat galleries; for HNSW and IVF handed to FAISS as an ``IDSelectorBitmap``), so
the result is the true top-k among passing faces however few pass, not a fixed top-k filtered afterwards.
A large flat gallery answers batches smaller than ``blas_threshold`` by a product over 8-bit codes and an
exact re-rank (index/coarse_scan.py); a small one keeps no codes and answers batches of up to 3 queries one
query at a time with numpy matrix-vector products; larger batches go through FAISS's BLAS path, each where
it is faster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from . import coarse_scan, matvec
from .config import IndexConfig
from .filters import FaceFilter, MetaColumn

if TYPE_CHECKING:
    from .torch_search import TorchFlatMirror

_INITIAL_CAPACITY = 1024
# A gallery too small for codes answers batches from this many queries through FAISS's BLAS path: below it,
# numpy matrix-vector products one query at a time are faster (python -m bench.search --only paths).
SMALL_GALLERY_BLAS_FROM = 4
_MIN_RECENT = 4096


# FAISS's stubs lack SearchParametersHNSW and the keyword arguments of the search-parameter classes.
_search_params: Any = faiss


class SlotLookup:
    """Face id -> slot. A dict costs ~100 bytes a face, a fifth of a 128-d vector; this keeps a sorted
    numpy run of (id, slot) plus a small dict of recent adds, merged into the run once it grows past
    1 % of the faces, so lookups stay O(log n) and memory about 12 bytes a face."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.uint64)
        self.slots = np.zeros(0, np.int32)  # -1 once removed; int32 keeps the lookup at 12 bytes a face
        self.recent: dict[int, int] = {}
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def _find(self, face_id: int) -> int | None:
        position = int(np.searchsorted(self.ids, np.uint64(face_id)))
        if position < len(self.ids) and int(self.ids[position]) == face_id and self.slots[position] >= 0:
            return position
        return None

    def get(self, face_id: int) -> int | None:
        face_id = int(face_id)
        if face_id in self.recent:
            return self.recent[face_id]
        position = self._find(face_id)
        return None if position is None else int(self.slots[position])

    def __contains__(self, face_id: int) -> bool:
        return self.get(face_id) is not None

    def add(self, face_ids: np.ndarray, slots: np.ndarray) -> None:
        if len(face_ids) >= _MIN_RECENT:
            self._merge(np.asarray(face_ids, np.uint64), np.asarray(slots, np.int32))
        else:
            self.recent.update(zip(np.asarray(face_ids).tolist(), np.asarray(slots).tolist()))
            if len(self.recent) > max(_MIN_RECENT, len(self.ids) // 100):
                self._merge(np.zeros(0, np.uint64), np.zeros(0, np.int32))
        self.live += len(face_ids)

    def _merge(self, face_ids: np.ndarray, slots: np.ndarray) -> None:
        keep = self.slots >= 0
        recent_ids = np.fromiter(self.recent.keys(), np.uint64, len(self.recent))
        recent_slots = np.fromiter(self.recent.values(), np.int32, len(self.recent))
        ids = np.concatenate([self.ids[keep], recent_ids, face_ids])
        all_slots = np.concatenate([self.slots[keep], recent_slots, slots])
        order = np.argsort(ids, kind="stable")
        self.ids, self.slots, self.recent = ids[order], all_slots[order], {}

    def pop(self, face_id: int) -> int | None:
        face_id = int(face_id)
        if face_id in self.recent:
            self.live -= 1
            return self.recent.pop(face_id)
        position = self._find(face_id)
        if position is None:
            return None
        slot, self.slots[position] = int(self.slots[position]), -1
        self.live -= 1
        return slot

    def nbytes(self) -> int:
        return self.ids.nbytes + self.slots.nbytes + 100 * len(self.recent)


def _gpu_count() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # faiss-cpu builds have no GPU functions
        return 0


class GalleryIndex:
    def __init__(self, dim: int, config: IndexConfig, torch_device: str | None = None):
        """``torch_device``: where flat searches run through torch (index/torch_search.py), e.g. "cuda"
        for a shard given a GPU; None keeps them on FAISS."""
        self.dim, self.config, self.torch_device = dim, config, torch_device
        self._empty()

    def _empty(self) -> None:
        self.kind = "flat"
        # Any: FAISS's stubs type each index class apart and lack most search parameters.
        self.index: Any = faiss.IndexFlatIP(self.dim)
        self.ids = np.zeros(_INITIAL_CAPACITY, np.uint64)
        self.alive = np.zeros(_INITIAL_CAPACITY, bool)
        self.meta: list[dict[str, Any] | None] = []  # None for empty meta keeps memory down
        self.slot_of = SlotLookup()
        self.columns: dict[str, MetaColumn] = {}
        self.size = 0  # slots used, dead ones included
        self.codes: coarse_scan.CoarseCodes | None = None  # a flat gallery's 8-bit codes, once large enough
        self._gpu_index: Any = None  # FAISS's GPU copy, made on first use, then grown with each add
        self._torch: TorchFlatMirror | None = None  # the torch copy, likewise

    # ---- writes -------------------------------------------------------------------------------

    def _grow(self, needed: int) -> None:
        capacity = len(self.ids)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        self.ids = np.concatenate([self.ids, np.zeros(capacity - len(self.ids), np.uint64)])
        self.alive = np.concatenate([self.alive, np.zeros(capacity - len(self.alive), bool)])
        for column in self.columns.values():
            column.grow(capacity)

    def _column(self, name: str) -> MetaColumn:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = MetaColumn(len(self.ids))
            for slot, meta in enumerate(self.meta):
                if meta and name in meta:
                    column.set(slot, meta[name])
        return column

    def add(self, face_ids: list[int], vectors: np.ndarray, metas: list[dict[str, Any]]) -> None:
        """Append faces (ids not already present: the store guarantees it)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        start, count = self.size, len(face_ids)
        self._grow(start + count)
        self.index.add(vectors)
        self.ids[start : start + count] = np.array(face_ids, dtype=np.uint64)
        self.alive[start : start + count] = True
        self.slot_of.add(self.ids[start : start + count], np.arange(start, start + count))
        for offset, meta in enumerate(metas):
            self.meta.append(dict(meta) if meta else None)
            for name, column in self.columns.items():
                column.set(start + offset, meta.get(name) if meta else None)
        self.size += count
        self._code(vectors)
        # The GPU copies take only the new rows; deletes leave them be (dead slots are masked or
        # searched on the CPU), and a compaction starts them again.
        if self._torch is not None:
            self._torch.append(vectors)
        if self._gpu_index is not None:
            self._gpu_index.add(vectors)
        self._maybe_go_approximate()

    def _code(self, added: np.ndarray) -> None:
        """Keep a flat gallery's codes up to date with an add: trained once it is large enough, trained again
        on all its faces each time it doubles (so ranges follow the faces), else just extended."""
        if not self._keeps_codes():
            return
        if self.codes is None or self.size >= 2 * self.codes.trained_on:
            self.codes = coarse_scan.CoarseCodes(self._flat_vectors())
        else:
            self.codes.add(added)

    def _keeps_codes(self) -> bool:
        """Codes serve a large flat gallery searched on the CPU; a GPU search has no use for them."""
        on_cpu = self.torch_device is None and not self._gpu_enabled()
        return self.kind == "flat" and on_cpu and self.size >= coarse_scan.MIN_FACES

    def search_on(self, torch_device: str | None) -> None:
        """Search flat galleries through torch on this device from now on (None: on the CPU)."""
        self.torch_device = torch_device
        if torch_device is not None:
            self.codes = None

    def remove(self, face_id: int) -> bool:
        slot = self.slot_of.pop(face_id)
        if slot is None:
            return False
        self.alive[slot] = False
        self.meta[slot] = None
        for column in self.columns.values():
            column.set(slot, None)
        if self.size >= 1024 and self.dead_fraction >= self.config.compact_dead_fraction:
            self.compact()
        return True

    def update_meta(self, face_id: int, meta: dict[str, Any]) -> bool:
        """Replace the meta of a face with ``meta`` (the merged result, as the store keeps it)."""
        slot = self.slot_of.get(int(face_id))
        if slot is None:
            return False
        self.meta[slot] = dict(meta) if meta else None
        for name, column in self.columns.items():
            column.set(slot, meta.get(name))
        return True

    @property
    def count(self) -> int:
        return len(self.slot_of)

    @property
    def dead_fraction(self) -> float:
        return 1.0 - self.count / max(self.size, 1)

    def _flat_vectors(self) -> np.ndarray:
        """A flat index's own float32 storage, as a numpy view (no copy); valid until the next add."""
        return faiss.rev_swig_ptr(self.index.get_xb(), self.size * self.dim).reshape(self.size, self.dim)

    def _vectors(self) -> np.ndarray:
        vectors: np.ndarray = self.index.reconstruct_n(0, self.size)
        return vectors

    def compact(self) -> None:
        """Rebuild the index from the live slots only (re-training an approximate one)."""
        live = np.flatnonzero(self.alive[: self.size])
        vectors = self._vectors()[live]
        ids = self.ids[live].tolist()
        metas = [self.meta[slot] or {} for slot in live]
        self._empty()
        self.add(ids, vectors, metas)

    # ---- approximate indexes ------------------------------------------------------------------

    def _maybe_go_approximate(self) -> None:
        if self.config.kind == "flat" or self.kind != "flat":
            return
        if self.count < self.config.approximate_min_faces:
            return
        vectors = self._vectors()
        self._build_approximate(vectors, self.config.kind)
        self.index.add(vectors)
        self.kind = self.config.kind
        self._gpu_index = self._torch = self.codes = None  # these serve flat galleries only

    def _build_approximate(self, training: np.ndarray, kind: str) -> None:
        if kind == "hnsw" and self.config.hnsw_storage == "bf16":
            index = faiss.index_factory(self.dim, f"HNSW{self.config.hnsw_m}_SQbf16,RFlat", faiss.METRIC_INNER_PRODUCT)
            self._graph_index(index).hnsw.efConstruction = self.config.hnsw_ef_construction
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.hnsw_ef_construction
        else:
            lists = max(16, int(self.config.ivf_lists_per_sqrt * np.sqrt(len(training))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, lists, faiss.METRIC_INNER_PRODUCT)
            sample = training[np.random.default_rng(0).permutation(len(training))[: lists * 64]]
            index.train(sample)
            index.make_direct_map()  # keeps reconstruct() working, for compaction
        self.index = index

    @staticmethod
    def _graph_index(index: Any) -> Any:
        """The HNSW index itself, inside the re-ranking wrapper when there is one."""
        return faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index

    @staticmethod
    def hnsw_parameters(index: Any, config: IndexConfig, selector: Any = None) -> Any:
        """Search parameters of an HNSW index as built here (re-ranked when it walks bf16 copies)."""
        walk = _search_params.SearchParametersHNSW(sel=selector, efSearch=config.hnsw_ef_search)
        if isinstance(index, faiss.IndexRefine):
            return _search_params.IndexRefineSearchParameters(
                k_factor=config.hnsw_rerank_factor, base_index_params=walk
            )
        return walk

    def _search_parameters(self, selector: Any) -> Any:
        if self.kind == "hnsw":
            return self.hnsw_parameters(self.index, self.config, selector)
        if self.kind == "ivf":
            return _search_params.SearchParametersIVF(sel=selector, nprobe=self.config.ivf_nprobe)
        return _search_params.SearchParameters(sel=selector) if selector is not None else None

    # ---- reads --------------------------------------------------------------------------------

    def passing(self, face_filter: FaceFilter | None) -> np.ndarray:
        """Boolean mask over slots: alive and passing the filter."""
        mask: np.ndarray = self.alive[: self.size].copy()
        if face_filter is not None and not face_filter.is_empty:
            mask &= face_filter.mask(self.ids[: self.size], self._column)
        return mask

    def search(
        self, queries: np.ndarray, top_k: int, face_filter: FaceFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, face ids) per query among live faces passing the filter; missing results
        have score -inf and id 0, and callers cut them by score."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        top_k = max(1, min(top_k, self.size))
        if self.size == 0:
            return np.full((len(queries), 0), -np.inf, np.float32), np.zeros((len(queries), 0), np.uint64)
        filtered = face_filter is not None and not face_filter.is_empty
        passing = self.passing(face_filter) if filtered or self.count < self.size else None
        if self.kind == "flat" and self.torch_device is not None:
            scores, slots = self._torch_mirror().search(queries, top_k, passing)
        elif self.kind == "flat" and not self._gpu_enabled() and len(queries) < self.blas_from():
            scan = matvec.top_k_each if self.codes is None else self.codes.top_k_each
            scores, slots = scan(self._flat_vectors(), queries, top_k, passing)
        elif passing is not None:
            bitmap = np.packbits(passing, bitorder="little")
            selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
            scores, slots = self.index.search(queries, top_k, params=self._search_parameters(selector))
            del selector, bitmap
        elif self.kind == "flat" and self._gpu_enabled():
            scores, slots = self._gpu().search(queries, top_k)
        else:
            scores, slots = self.index.search(queries, top_k, params=self._search_parameters(None))
        found = slots >= 0
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        ids = np.where(found, self.ids[np.maximum(slots, 0)], np.uint64(0))
        return scores, ids

    def blas_from(self) -> int:
        """Batches of this many queries and more go to FAISS's BLAS path, smaller ones to the codes or,
        in a gallery too small for codes, to numpy matrix-vector products."""
        return self.config.blas_threshold if self.codes is not None else SMALL_GALLERY_BLAS_FROM

    def list_ids(
        self, face_filter: FaceFilter | None, after_id: int | None, limit: int, descending: bool = False
    ) -> np.ndarray:
        """Face ids passing the filter, sorted by id, strictly after ``after_id`` in that order."""
        mask = self.passing(face_filter)
        ids = self.ids[: self.size][mask]
        if after_id is not None:
            ids = ids[ids < np.uint64(after_id)] if descending else ids[ids > np.uint64(after_id)]
        if len(ids) > limit:
            part = np.partition(ids, len(ids) - limit if descending else limit - 1)
            ids = part[len(ids) - limit :] if descending else part[:limit]
        ids = np.sort(ids)
        return ids[::-1] if descending else ids

    def memory_bytes(self) -> int:
        """Bytes held for search: vectors (or the approximate structure), ids, and the alive bits."""
        vectors = self.size * self.dim * 4
        if self.kind == "hnsw":
            graph = self._graph_index(self.index)
            vectors += 4 * (graph.hnsw.neighbors.size() + graph.hnsw.levels.size())
            if graph is not self.index:
                vectors += self.size * graph.storage.sa_code_size()
        elif self.kind == "ivf":
            vectors += self.size * 16 + self.index.nlist * self.dim * 4  # list ids + direct map + centroids
        if self.codes is not None:
            vectors += self.codes.nbytes()
        return int(vectors + self.ids.nbytes + self.alive.nbytes + self.slot_of.nbytes())

    def vector(self, face_id: int) -> np.ndarray | None:
        """The stored unit vector of a face, or None when the face is not here."""
        slot = self.slot_of.get(int(face_id))
        if slot is None:
            return None
        vector: np.ndarray = self.index.reconstruct(slot)
        return vector

    # ---- snapshots ----------------------------------------------------------------------------

    def save(self, directory: Path, stem: str) -> list[Path]:
        """Write the index, its slots' ids and alive bits, and its metas under ``stem``; returns the files.
        Filter columns are not saved: they are rebuilt from the metas when a filter first needs them."""
        files = [
            directory / f"{stem}.faiss",
            directory / f"{stem}.ids.npy",
            directory / f"{stem}.alive.npy",
            directory / f"{stem}.meta.json",
        ]
        faiss.write_index(self.index, str(files[0]))
        np.save(files[1], self.ids[: self.size])
        np.save(files[2], self.alive[: self.size])
        files[3].write_text(json.dumps(self.meta))
        return files

    @classmethod
    def load(cls, directory: Path, stem: str, dim: int, kind: str, config: IndexConfig) -> "GalleryIndex":
        gallery = cls(dim, config)
        gallery.index = faiss.read_index(str(directory / f"{stem}.faiss"))
        gallery.kind = kind
        ids = np.load(directory / f"{stem}.ids.npy", allow_pickle=False)
        alive = np.load(directory / f"{stem}.alive.npy", allow_pickle=False)
        gallery.meta = json.loads((directory / f"{stem}.meta.json").read_text())
        if not gallery.index.ntotal == len(ids) == len(alive) == len(gallery.meta):
            raise ValueError(
                f"gallery {stem}: {gallery.index.ntotal} vectors, {len(ids)} ids, {len(alive)} "
                f"alive bits and {len(gallery.meta)} metas"
            )
        gallery.size = len(ids)
        gallery._grow(gallery.size)
        gallery.ids[: gallery.size], gallery.alive[: gallery.size] = ids, alive
        live = np.flatnonzero(alive)
        gallery.slot_of.add(ids[live], live)
        gallery._code(np.zeros((0, dim), np.float32))  # codes are quick to make again, so not saved
        return gallery

    # ---- GPU ----------------------------------------------------------------------------------

    def _gpu_enabled(self) -> bool:
        return self.config.gpu_search == "faiss" and _gpu_count() > 0

    def _gpu(self) -> Any:
        """FAISS's GPU copy of the flat index, for unfiltered searches of galleries with no dead slots
        (FAISS GPU indexes take no ID selectors, so the others are searched on the CPU index)."""
        if self._gpu_index is None:
            if not hasattr(self, "_gpu_resources"):
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
        return self._gpu_index

    def _torch_mirror(self) -> TorchFlatMirror:
        if self._torch is None:
            from .torch_search import TorchFlatMirror

            assert self.torch_device is not None  # only a shard given a torch device searches through torch
            self._torch = TorchFlatMirror(self.dim, self.torch_device)
            if self.size:
                self._torch.append(self._vectors())
        return self._torch
