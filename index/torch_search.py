"""Exact flat search on a GPU through torch: a gallery's vectors kept in GPU memory, one matrix product
and one top-k per batch of queries.

Why this exists beside FAISS's own GPU index: FAISS's GPU build on PyPI (``faiss-gpu-cu13-cuvs``) is made
only for CPython 3.12 on glibc >= 2.39 and brings its own CUDA 13 packages, so many GPU nodes cannot
install it, while torch with CUDA is already there for the models. An exact inner-product scan needs
nothing FAISS adds: cuBLAS runs the product at the GPU's memory speed. It also takes filters, as a mask
over slots, where FAISS's GPU indexes take no ID selector.

The copy on the GPU grows with the gallery: an add copies only its own rows (capacity doubles when it
runs out), a delete changes nothing there (dead slots are masked out like filtered ones), and only a
compaction, which renumbers the slots, copies the gallery again.
"""

from __future__ import annotations

import numpy as np

# Scores computed at once: queries x slots, bounded so that a large batch over a large gallery is done
# in slices instead of asking the GPU for gigabytes of scores.
_MAX_SCORES = 2**28


def torch_device(gpu_search: str, gpus: float) -> str | None:
    """The device flat galleries are searched on: "cuda" when torch search is chosen and this process
    was given a GPU, else None (FAISS on the CPU). Imports torch only where a GPU was asked for."""
    if gpu_search != "torch" or gpus <= 0:
        return None
    import torch

    return "cuda" if torch.cuda.is_available() else None


class TorchFlatMirror:
    def __init__(self, dim: int, device: str):
        import torch

        self.torch, self.dim, self.device = torch, dim, torch.device(device)
        self.vectors = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self.size = 0
        self.rows_copied = 0  # rows sent to the device since it was made (tests: no whole copies)

    def append(self, vectors: np.ndarray) -> None:
        count = len(vectors)
        if self.size + count > self.vectors.shape[0]:
            capacity = max(1024, self.vectors.shape[0])
            while capacity < self.size + count:
                capacity *= 2
            grown = self.torch.empty((capacity, self.dim), dtype=self.torch.float32, device=self.device)
            grown[: self.size] = self.vectors[: self.size]  # a copy on the device, not from the host
            self.vectors = grown
        rows = self.torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.vectors[self.size : self.size + count] = rows.to(self.device)
        self.size += count
        self.rows_copied += count

    def search(
        self, queries: np.ndarray, top_k: int, passing: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots) of the top_k slots per query, best first; with ``passing``, a boolean mask over
        the slots, only those; slots not found are -1 with score -inf."""
        torch = self.torch
        top_k = max(1, min(top_k, self.size))
        mask = None if passing is None else torch.from_numpy(np.ascontiguousarray(passing)).to(self.device)
        scores_out, slots_out = [], []
        step = max(1, _MAX_SCORES // max(self.size, 1))
        with torch.inference_mode():
            gallery = self.vectors[: self.size]
            for start in range(0, len(queries), step):
                batch = torch.from_numpy(np.ascontiguousarray(queries[start : start + step], np.float32))
                scores = batch.to(self.device) @ gallery.T
                if mask is not None:
                    scores.masked_fill_(~mask, float("-inf"))
                best = torch.topk(scores, top_k, dim=1)
                scores_out.append(best.values.cpu().numpy())
                slots_out.append(best.indices.cpu().numpy())
        scores, slots = np.concatenate(scores_out), np.concatenate(slots_out).astype(np.int64)
        return scores, np.where(np.isfinite(scores), slots, -1)
