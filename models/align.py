"""Five-point alignment: a similarity transform from detected landmarks to a fixed template, then a warp.

The template for the dlib descriptor was measured, not copied: MTCNN's landmarks on the 40 face-api.js
150x150 character crops in ../shared/faces (the crops that network's demo feeds it) were averaged
(``measure_template``), then made left-right symmetric about the chip's centre line. The attribute
networks were trained on the same kind of crop at 112x112, so they use the same template scaled.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

# (x, y) on a 150x150 chip: left eye, right eye, nose tip, left and right mouth corners.
DLIB_TEMPLATE_150 = np.array(
    [
        [45.9, 42.9],
        [104.1, 42.9],
        [75.0, 79.9],
        [49.1, 104.2],
        [100.9, 104.2],
    ],
    dtype=np.float32,
)

# ArcFace-family models are trained on 112x112 crops with this landmark layout; it is part of the
# published model contract (InsightFace), so it is a fact about those models, not a choice here.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def template_for(size: int) -> np.ndarray:
    """The dlib template scaled to a square chip of ``size`` pixels."""
    return DLIB_TEMPLATE_150 * (size / 150.0)


def arcface_template_for(size: int) -> np.ndarray:
    """The ArcFace template scaled to a square chip of ``size`` pixels."""
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``source`` points onto ``target``
    (Umeyama, 1991), as a 2x3 matrix. OpenCV's estimateAffinePartial2D solves the same problem but only
    robustly (RANSAC/LMEDS), which on five exact points drops some of them; least squares uses all five."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    reflection = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection[1, 1] = -1
    rotation = u @ reflection @ vt
    scale = np.trace(np.diag(singular) @ reflection) / source_centred.var(0).sum()
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def align(image: np.ndarray, landmarks: np.ndarray, size: int, template: np.ndarray | None = None) -> np.ndarray:
    """The face warped so that its landmarks land on ``template`` (default: dlib's, scaled to size)."""
    matrix = similarity_transform(landmarks, template_for(size) if template is None else template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_faces(
    image: np.ndarray, landmark_sets: Iterable[np.ndarray], size: int, template: np.ndarray | None = None
) -> np.ndarray:
    """Every face's aligned chip, stacked (N, size, size, 3); an empty stack when there is no face."""
    chips = [align(image, landmarks, size, template) for landmarks in landmark_sets]
    return np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)


def measure_template(landmark_sets: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Mean landmark layout of faces that already fill ``size``x``size`` crops, mirrored into symmetry."""
    mean = np.mean(np.stack(list(landmark_sets)), axis=0)
    mirrored = mean[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    template: np.ndarray = ((mean + mirrored) / 2).astype(np.float32)
    return template
