"""Accuracy of the face pipeline on a labelled folder (``labels.csv`` as in ../shared/faces).

``labels.csv`` columns used: ``file``, ``identity`` (a person's name, or ``multi`` / ``unknown``) and
``faces_in_image``. Reported:

- face-count accuracy: share of images where the number of faces found equals ``faces_in_image``;
- verification over every pair of single-person photos (the largest face of each): accuracy at the
  extractor's recommended threshold, ROC AUC, and the best threshold on these pairs;
- rank-1 identification: each photo whose person has another photo is matched against all the others
  (leave-one-out); correct when the nearest one is the same person;
- with ``fit=True``, a class-balanced logistic fit of P(same | cosine), the calibration's source.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .images import read_image
from .pipeline import FacePipeline

GROUP_LABELS = {"multi", "unknown", ""}


@dataclass
class EvalReport:
    images: int
    face_count_correct: int
    identities: int
    identity_photos: int
    same_pairs: int
    different_pairs: int
    threshold: float
    verification_accuracy: float
    true_accept_rate: float
    true_reject_rate: float
    roc_auc: float
    best_threshold: float
    best_accuracy: float
    rank1_probes: int
    rank1_accuracy: float
    face_count_misses: list[str] = field(default_factory=list)
    calibration_fit: dict[str, Any] | None = None
    subset: str = ""  # the file-name prefixes of the photos reported apart
    subset_pairs: int = 0  # pairs with both photos in the subset
    subset_verification_accuracy: float = float("nan")
    subset_false_accepts: list[str] = field(default_factory=list)

    @property
    def face_count_accuracy(self) -> float:
        return self.face_count_correct / max(self.images, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "face_count_accuracy": self.face_count_accuracy}

    def lines(self) -> list[str]:
        return [
            f"images                      {self.images}",
            f"face-count accuracy         {self.face_count_accuracy:.4f} ({self.face_count_correct}/{self.images})",
            f"identity photos             {self.identity_photos} of {self.identities} people",
            f"pairs (same / different)    {self.same_pairs} / {self.different_pairs}",
            f"verification accuracy       {self.verification_accuracy:.4f} at confidence >= {self.threshold:.3f}",
            f"  true accept / true reject {self.true_accept_rate:.4f} / {self.true_reject_rate:.4f}",
            f"ROC AUC                     {self.roc_auc:.4f}",
            f"best threshold on this set  {self.best_threshold:.3f} (accuracy {self.best_accuracy:.4f})",
            f"rank-1 identification       {self.rank1_accuracy:.4f} over {self.rank1_probes} probes",
            *(f"face-count miss             {miss}" for miss in self.face_count_misses),
            *(
                [
                    f"subset {self.subset}: {self.subset_pairs} pairs, verification accuracy "
                    f"{self.subset_verification_accuracy:.4f}",
                    *(f"  false accept              {pair}" for pair in self.subset_false_accepts),
                ]
                if self.subset
                else []
            ),
            *([f"calibration fit             {self.calibration_fit}"] if self.calibration_fit else []),
        ]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve = P(a random positive scores above a random negative), ties half."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties so equal scores count one half.
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


def fit_logistic(cosines: np.ndarray, same: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Class-balanced logistic regression of same ~ cosine by Newton's method, with Platt's smoothed
    targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keep the slope finite on separable pairs.
    Returns (slope, midpoint). Two parameters: scikit-learn would be a dependency for one small fit."""
    x = np.stack([cosines, np.ones_like(cosines)], 1)
    positives, negatives = same.sum(), (~same).sum()
    targets = np.where(same, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    weights = np.where(same, 0.5 / positives, 0.5 / negatives)
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-x @ beta))
        gradient = x.T @ (weights * (targets - p))
        hessian = (x * (weights * p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        beta += np.linalg.solve(hessian, gradient)
    return float(beta[0]), float(-beta[1] / beta[0])


def evaluate(pipeline: FacePipeline, folder: Path, fit: bool = False, subset: tuple[str, ...] = ()) -> EvalReport:
    """``subset``: file-name prefixes of photos whose pairs among themselves are also reported apart."""
    folder = Path(folder)
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="")))
    correct, misses, vectors, names, files = 0, [], [], [], []
    for row in rows:
        image = read_image(folder / row["file"])
        faces = pipeline.detect([image], extract=True)[0]
        expected = int(row["faces_in_image"])
        if len(faces) == expected:
            correct += 1
        else:
            misses.append(f"{row['file']}: found {len(faces)}, labelled {expected}")
        if row["identity"] not in GROUP_LABELS and faces:
            largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            assert largest.facen is not None  # detected with extract=True
            vectors.append(largest.facen)
            names.append(row["identity"])
            files.append(row["file"])

    embeddings, identities = np.stack(vectors), np.array(names)
    similarity = embeddings @ embeddings.T
    upper = np.triu_indices(len(identities), 1)
    cosines = similarity[upper]
    same: np.ndarray = identities[upper[0]] == identities[upper[1]]
    confidence = pipeline.extractor.confidence(cosines)
    threshold = pipeline.extractor.match_threshold
    accepted = confidence >= threshold

    candidates = np.unique(confidence)
    accuracies = [((confidence >= t) == same).mean() for t in candidates]
    best = int(np.argmax(accuracies))

    np.fill_diagonal(similarity, -np.inf)
    counts = {name: (identities == name).sum() for name in set(names)}
    probes = np.array([counts[name] > 1 for name in names])
    nearest = similarity.argmax(1)
    rank1 = (identities[nearest] == identities)[probes]

    in_subset = np.array([bool(subset) and file.startswith(subset) for file in files])
    both = in_subset[upper[0]] & in_subset[upper[1]]
    subset_false_accepts = [
        f"{files[i]} ~ {files[j]}: confidence {confidence[k]:.3f}"
        for k, (i, j) in enumerate(zip(*upper))
        if both[k] and accepted[k] and not same[k]
    ]

    calibration = None
    if fit:
        slope, midpoint = fit_logistic(cosines.astype(np.float64), same)
        calibration = {
            "slope": round(slope, 3),
            "midpoint": round(midpoint, 4),
            "best_cosine": round(float(pipeline.extractor.calibration.cosine_for(candidates[best])), 4),
        }

    return EvalReport(
        images=len(rows),
        face_count_correct=correct,
        identities=len(counts),
        identity_photos=len(names),
        same_pairs=int(same.sum()),
        different_pairs=int((~same).sum()),
        threshold=float(threshold),
        verification_accuracy=float((accepted == same).mean()),
        true_accept_rate=float(accepted[same].mean()) if same.any() else float("nan"),
        true_reject_rate=float((~accepted[~same]).mean()),
        roc_auc=roc_auc(cosines, same),
        best_threshold=float(candidates[best]),
        best_accuracy=float(accuracies[best]),
        rank1_probes=int(probes.sum()),
        rank1_accuracy=float(rank1.mean()) if len(rank1) else float("nan"),
        face_count_misses=misses,
        calibration_fit=calibration,
        subset=",".join(subset),
        subset_pairs=int(both.sum()),
        subset_verification_accuracy=float((accepted[both] == same[both]).mean()) if both.any() else float("nan"),
        subset_false_accepts=subset_false_accepts,
    )
