"""Fitting photos of any size into a detector's square input, and mapping its answers back.

A photo is resized, keeping its aspect ratio, into a square canvas (zeros elsewhere), so that photos of
every size from many requests stack into one batch of one shape. A photo that leaves room is centred: a
face cut off by the photo's edge (a tight crop) then has blank context around it rather than the end of
the input, which YuNet placed landmarks badly against. Points map back exactly: subtract the offset,
divide by the scale along their own axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    canvas: np.ndarray  # side x side x 3 uint8
    scale_x: float  # canvas pixels per photo pixel, along x
    scale_y: float
    left: int  # where the photo's top-left pixel lies on the canvas
    top: int

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(..., 2k) x, y, x, y... in canvas pixels -> photo pixels."""
        pairs = points.shape[-1] // 2
        offsets = np.tile(np.array([self.left, self.top], np.float32), pairs)
        scales = np.tile(np.array([self.scale_x, self.scale_y], np.float32), pairs)
        return (points - offsets) / scales


def letterbox(image: np.ndarray, side: int) -> Letterbox:
    height, width = image.shape[:2]
    # Never enlarged: a photo that is all face (a 150x150 crop) keeps its size; stretched to fill the
    # canvas, its face would be larger than YuNet's largest anchors.
    fit = min(1.0, side / max(height, width))
    new_width, new_height = max(1, round(width * fit)), max(1, round(height * fit))
    resized = image if fit == 1.0 else cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
    left, top = (side - new_width) // 2, (side - new_height) // 2
    canvas = np.zeros((side, side, 3), np.uint8)
    canvas[top : top + new_height, left : left + new_width] = resized
    return Letterbox(canvas, new_width / width, new_height / height, left, top)


def planar_batch(canvases: Sequence[np.ndarray], bgr: bool = False) -> np.ndarray:
    """HxWx3 uint8 canvases -> one float32 NxCxHxW batch, channels reversed for a BGR network. Filled one
    plane at a time: numpy's transpose-then-cast of the whole batch walks memory with a 3-byte stride and
    took four times as long, a fifth of YuNet's time per photo on the CPU."""
    height, width = canvases[0].shape[:2]
    batch = np.empty((len(canvases), 3, height, width), np.float32)
    for row, canvas in enumerate(canvases):
        for plane in range(3):
            batch[row, plane] = canvas[:, :, 2 - plane if bgr else plane]
    return batch
