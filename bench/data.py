"""Synthetic gallery data that resembles face embeddings, for index tests and benchmarks.

Face embeddings are not uniform noise: photos of one person cluster tightly, people spread over the
sphere, and a gallery holds many people with a few photos each. ``clustered_unit_vectors`` draws a
centre per identity and scatters each identity's vectors around it, which gives approximate indexes
the structure (and the difficulty: many close neighbours) they meet in service.
"""

from __future__ import annotations

import numpy as np


def clustered_unit_vectors(count: int, dim: int = 128, faces_per_identity: int = 5, spread: float = 0.35,
                           seed: int = 0, chunk: int = 1_000_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    identities = max(1, count // faces_per_identity)
    centres = rng.standard_normal((identities, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        owner = rng.integers(0, identities, stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        block = centres[owner] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def queries_near(vectors: np.ndarray, count: int, spread: float = 0.35, seed: int = 1) -> np.ndarray:
    """Queries that are new photos of people in the gallery: a stored vector plus fresh noise."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    noisy = picked + rng.standard_normal(picked.shape, dtype=np.float32) * (spread / np.sqrt(vectors.shape[1]))
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def random_meta(count: int, seed: int = 2) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = np.array(["ann", "bob", "cid", "dee", "eve", "fay"])
    tags = ["vip", "staff", "guest", "banned"]
    metas = []
    for i in range(count):
        meta = {"cam": int(rng.integers(0, 10)), "name": str(names[rng.integers(0, len(names))])}
        if rng.random() < 0.7:
            meta["tags"] = sorted({tags[t] for t in rng.integers(0, len(tags), rng.integers(1, 3))})
        if rng.random() < 0.1:
            del meta["cam"]
        metas.append(meta)
    return metas
