"""Exact top-k over a large flat gallery: an integer matrix product over 8-bit codes, then a float32 re-rank.

Why: a flat shard's search is bound by reading every vector once per batch and by the product itself. With
a byte per dimension, a quarter of the float32 vector, and torch's int8 matrix product (oneDNN, VNNI
where the CPU has it), one pass over a 500k-face shard answers a lone query or a batch of 16 several
times faster than numpy's matrix-vector product or FAISS's BLAS path over the float32 vectors
(``python -m bench.search --only paths`` prints them side by side). FAISS's own 8-bit scalar quantizer
scans one query at a time, and its scan was slower than this for a lone query too.

Exactness: dimension j is coded as c_j in [-127, 127] around a centre m_j in steps of s_j, trained on the
gallery's faces, so a coded value is off by at most s_j / 2 (plus how far a face added later lies outside
the trained range). A query is coded the same way, as integers v_j with one scale t per query, and its
coded score t * sum_j v_j c_j differs from q . x - q . m by at most
eps = sum_j |q_j| * err_j + ||q * s - t * v||_2 * max_i ||c_i||_2. Every face of the exact top-k then has
a coded score at least (k-th best coded score) - 2 * eps; the faces above that line are re-scored on their
float32 vectors, and the result is the exact top-k, ties to the lower slot as everywhere else. Ranges are
trained per dimension: face embeddings crowd around a common direction, so their ranges are a third of the
unit interval or less, and so is eps.
"""

from __future__ import annotations

import numpy as np

# Below this many faces a gallery keeps no codes: numpy's matrix-vector product and FAISS's BLAS path over
# its few megabytes of float32 vectors are as fast.
MIN_FACES = 16_384
# Each side of a trained range is widened by this share of its width, so that faces added later
# seldom fall outside it (they still may: the error bound then grows by how far).
_RANGE_MARGIN = 0.1
_LEVELS = 127
# Float rounding in the float64 arithmetic of the bound and the line, with room to spare.
_ROUNDING = 1e-6
# Queries per matrix product: larger batches are split, as oneDNN's int8 product is slower per query past it.
_CHUNK = 16
_MASKED = np.iinfo(np.int32).min
_ENCODE_ROWS = 65_536  # rows coded at once, to bound the float64 temporaries
_threads = 1


def use_threads(threads: int) -> None:
    """The threads torch's product may use in this process (a shard replica's share of its node)."""
    global _threads
    _threads = threads


def _first_candidates(top_k: int) -> int:
    """Coded results taken first from each query's scores: enough that the line is nearly always
    crossed at once (else more are taken from the same scores, with no second product)."""
    return 16 * top_k + 64


class CoarseCodes:
    """8-bit codes of a flat gallery's vectors, slot for slot."""

    def __init__(self, vectors: np.ndarray):
        """Trained on ``vectors`` (the gallery's faces so far), which are then coded."""
        import torch  # here, not at the top: only shards with large flat galleries need it

        torch.set_num_threads(_threads)
        self.torch = torch
        low, high = vectors.min(axis=0).astype(np.float64), vectors.max(axis=0).astype(np.float64)
        margin = _RANGE_MARGIN * (high - low) + 1e-6  # + a floor, so that no dimension has zero width
        low, high = low - margin, high + margin
        self.centre, self.step = (low + high) / 2, (high - low) / (2 * _LEVELS)
        self.low, self.high = low, high
        self.error = self.step / 2  # the largest coding error per dimension, within the range
        self.code_norm = 0.0  # the largest L2 norm of a face's codes
        self.codes = np.zeros((max(1024, len(vectors)), vectors.shape[1]), np.int8)
        self.size = 0
        self.trained_on = len(vectors)
        self.add(vectors)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        outside = np.maximum(self.low - vectors.min(axis=0), vectors.max(axis=0) - self.high)
        self.error = np.maximum(self.error, self.step / 2 + np.maximum(outside, 0))
        codes = np.concatenate(
            [self._encode(vectors[start : start + _ENCODE_ROWS]) for start in range(0, len(vectors), _ENCODE_ROWS)]
        )
        self.code_norm = max(self.code_norm, float(np.sqrt((codes.astype(np.float32) ** 2).sum(axis=1).max())))
        if self.size + len(codes) > len(self.codes):
            capacity = len(self.codes)
            while capacity < self.size + len(codes):
                capacity *= 2
            grown = np.zeros((capacity, self.codes.shape[1]), np.int8)
            grown[: self.size] = self.codes[: self.size]
            self.codes = grown
        self.codes[self.size : self.size + len(codes)] = codes
        self.size += len(codes)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        # float32 arithmetic: its rounding moves a code by at most one step near a half-step, a coding
        # error of 1e-7 or so beyond step / 2, which _ROUNDING covers.
        levels = (vectors - self.centre.astype(np.float32)) / self.step.astype(np.float32)
        codes: np.ndarray = np.clip(np.rint(levels), -_LEVELS, _LEVELS).astype(np.int8)
        return codes

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        return int(self.codes.nbytes)

    def _coded_queries(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(integer codes, scale, error bound) of each query."""
        weighted = queries.astype(np.float64) * self.step
        scale = np.abs(weighted).max(axis=1) / _LEVELS
        scale[scale == 0] = 1.0
        coded = np.rint(weighted / scale[:, None])
        residual = np.sqrt(((weighted - coded * scale[:, None]) ** 2).sum(axis=1))
        magnitude = np.abs(queries.astype(np.float64))
        bound = magnitude @ self.error + residual * self.code_norm + _ROUNDING * (1 + magnitude.sum(axis=1))
        return coded.astype(np.int8), scale, bound

    def top_k_each(
        self, vectors: np.ndarray, queries: np.ndarray, top_k: int, passing: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact (scores, slots) as ``matvec.top_k_each`` returns them, ``vectors`` being the float32
        vectors these codes were made from and ``passing`` a mask of the slots that may be returned."""
        torch, count = self.torch, self.size
        top_k = min(top_k, count)
        scores = np.full((len(queries), top_k), -np.inf, np.float32)
        slots = np.full((len(queries), top_k), -1, np.int64)
        coded, scale, bound = self._coded_queries(queries)
        gallery = torch.from_numpy(self.codes[:count])
        blocked = None if passing is None else torch.from_numpy(~passing)
        wanted = min(count, _first_candidates(top_k))
        with torch.inference_mode():
            for start in range(0, len(queries), _CHUNK):
                chunk = torch.from_numpy(coded[start : start + _CHUNK])
                products = torch._int_mm(chunk, gallery.T)  # (queries, slots), exact in int32
                if blocked is not None:
                    products.masked_fill_(blocked, _MASKED)
                best = torch.topk(products, wanted, dim=1)
                values, indices = best.values.numpy(), best.indices.numpy()
                for row in range(len(chunk)):
                    query = start + row
                    line = int(values[row, top_k - 1]) - 2 * bound[query] / scale[query]
                    line = max(line, _MASKED + 1)  # fewer than top_k pass: all that pass
                    if wanted == count or values[row, -1] < line:
                        candidates = indices[row][values[row] >= line]
                    else:  # faces not taken may still be above the line: take every one that is
                        candidates = torch.nonzero(products[row] >= line).flatten().numpy()
                    exact64 = vectors[candidates].astype(np.float64) @ queries[query].astype(np.float64)
                    exact = exact64.astype(np.float32)  # ties are ties of the float32 scores returned
                    order = np.lexsort((candidates, -exact))[:top_k]
                    scores[query, : len(order)] = exact[order]
                    slots[query, : len(order)] = candidates[order]
        return scores, slots
