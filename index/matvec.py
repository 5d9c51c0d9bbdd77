"""Exact top-k over a flat gallery's float32 vectors, one matrix-vector product per query.

Galleries too small to keep codes (under ``coarse_scan.MIN_FACES`` faces, a few megabytes of vectors)
answer batches under ``gallery_index.SMALL_GALLERY_BLAS_FROM`` queries with it; larger galleries search
their codes (index/coarse_scan.py). Filters and deleted faces become a mask of passing slots, applied
before the top-k, so the result stays the exact top-k among the faces that pass.
"""

from __future__ import annotations

import numpy as np


def top_k_each(
    vectors: np.ndarray, queries: np.ndarray, top_k: int, passing: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, slots), each ``len(queries) x top_k``, best first (ties: lower slot first); missing
    results (fewer than ``top_k`` slots pass) have score -inf and slot -1, as FAISS returns them."""
    count = len(vectors)
    top_k = min(top_k, count)
    scores = np.full((len(queries), top_k), -np.inf, np.float32)
    slots = np.full((len(queries), top_k), -1, np.int64)
    blocked = None if passing is None else ~passing
    for row, query in enumerate(queries):
        similarity = vectors @ query
        if blocked is not None:
            np.copyto(similarity, -np.inf, where=blocked)
        if top_k == 1:
            best = np.array([int(np.argmax(similarity))])
        else:
            candidates = np.argpartition(similarity, count - top_k)[count - top_k :]
            best = candidates[np.lexsort((candidates, -similarity[candidates]))]
        best = best[similarity[best] > -np.inf]  # sorted best first, so the found ones lead
        scores[row, : len(best)] = similarity[best]
        slots[row, : len(best)] = best
    return scores, slots
