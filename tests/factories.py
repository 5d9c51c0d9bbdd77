"""Synthetic gallery data that resembles face embeddings, and an exact reference to check indexes against;
for the tests and the benchmarks (bench/ imports it from here).

Face embeddings are not uniform noise on the sphere. On ../shared/faces the dlib extractor gives
same-person cosines of 0.964 on average and different-person cosines of 0.833: every face is near a
common direction, people differ along a few dominant directions (a decaying spectrum), and photos of
one person scatter a little around that person. ``clustered_unit_vectors`` draws data with those
statistics (defaults: same-person 0.962, different-person 0.831 at 128-d), so approximate indexes meet
the crowded neighbourhoods they meet in service rather than well-separated random clusters.
"""

from __future__ import annotations

import numpy as np

from index import FaceFilter

IDENTITY_SCALE = 0.40  # how far people sit from the common direction
FACE_SCALE = 0.20  # how far one person's photos scatter
SPECTRUM_DECAY = 0.5  # identity variance along direction j falls as j ** -decay


def clustered_unit_vectors(
    count: int, dim: int = 128, faces_per_identity: int = 5, seed: int = 0, chunk: int = 1_000_000
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    identities = max(1, count // faces_per_identity)
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    spectrum = np.arange(1, dim + 1, dtype=np.float32) ** -SPECTRUM_DECAY
    spectrum /= np.linalg.norm(spectrum)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    centres = np.empty((identities, dim), np.float32)
    for start in range(0, identities, chunk):
        stop = min(start + chunk, identities)
        offsets = (rng.standard_normal((stop - start, dim), dtype=np.float32) * spectrum) @ basis.T
        block = common + np.float32(IDENTITY_SCALE) * offsets
        centres[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        owner = rng.integers(0, identities, stop - start)
        spread = np.float32(FACE_SCALE / np.sqrt(dim))
        block = centres[owner] + rng.standard_normal((stop - start, dim), dtype=np.float32) * spread
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def queries_near(vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Queries that are new photos of people in the gallery: a stored vector plus fresh photo noise."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    spread = np.float32(FACE_SCALE / np.sqrt(vectors.shape[1]))
    noisy = picked + rng.standard_normal(picked.shape, dtype=np.float32) * spread
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


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


# Filters of every kind the API offers, each narrowing a random_meta gallery differently.
FILTERS = [
    None,
    FaceFilter(id_gte=100, id_lte=900),
    FaceFilter(id_in=(3, 17, 400, 401, 999_999)),
    FaceFilter(meta_in=(("name", ("ann", "eve")),)),
    FaceFilter(meta_in=(("cam", ("3",)),), meta_gte=(("name", "c"),)),
    FaceFilter(meta_gte=(("cam", "2"),), meta_lte=(("cam", 4),)),
    FaceFilter(meta_subset=(("tags", ("vip", "staff")),)),
    FaceFilter(meta_in=(("tags", ("banned",)),), id_lte=300),
    FaceFilter(meta_in=(("name", ("nobody",)),)),
]


class Reference:
    """Exact search by brute force over what the index should hold."""

    def __init__(self):
        self.faces: dict[int, tuple[np.ndarray, dict]] = {}

    def top(self, query, top_k, face_filter):
        hits = [
            (float(vector @ query), face_id)
            for face_id, (vector, meta) in self.faces.items()
            if face_filter is None or face_filter.matches(face_id, meta)
        ]
        hits.sort(reverse=True)
        return hits[:top_k]
