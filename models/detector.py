"""Face detection: the ``Detector`` protocol, its result type, and the MTCNN cascade.

The cascade (Zhang et al., 2016) is written here, over any ``Runner`` of P-Net, R-Net and O-Net, so
that the same code runs the exported ONNX graphs in service and the torch modules in checks:

1. P-Net slides over an image pyramid and proposes 12x12 windows (per scale, then across scales, NMS);
2. R-Net rescores and refines the proposals from 24x24 crops;
3. O-Net scores 48x48 crops, refines the boxes and places five landmarks.

Crops of stages 2 and 3 from every image of a batch go through the network together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import cv2
import numpy as np

from .config import DetectorConfig
from .nms import batched_nms
from .runtime import Runner

# How many crops go through R-Net/O-Net in one call: bounds memory on photos with many candidates.
MAX_CROPS_PER_CALL = 256
# How many same-sized images share one P-Net call per pyramid scale: 8 Full-HD frames at the first
# scale of a 20-pixel minimum face are ~70 MB of float input.
MAX_IMAGES_PER_PNET_CALL = 8
# Where the P-Net runner wants few distinct input shapes (onnxruntime on CUDA: runtime.OnnxRunner), each
# pyramid level is padded with zeros up to a multiple of this many pixels, so that levels of many photo
# sizes come in few shapes (docs/benchmarks.md). Cells whose window reaches the padding are dropped;
# only the last row and column of cells, whose pooling window the unpadded level cuts short, can score
# differently (tests/test_pipeline.py checks the faces stay the same).
PNET_SIZE_STEP = 32


@dataclass(frozen=True, eq=False)
class Detection:
    """One face: box (x1, y1, x2, y2) in pixels, score in [0, 1], and five (x, y) landmarks:
    left eye, right eye, nose tip, left and right mouth corners (left = smaller x in the image)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


class Detector(Protocol):
    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each HxWx3 uint8 RGB image, highest score first."""
        ...


def _squared(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next stage's crops are square)."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    centre_x, centre_y = boxes[:, 0] + width / 2, boxes[:, 1] + height / 2
    return np.stack([centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2], 1)


def _calibrated(boxes: np.ndarray, regression: np.ndarray) -> np.ndarray:
    """Apply each net's box regression: offsets are in units of the box's width and height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    calibrated: np.ndarray = boxes + regression * size
    return calibrated


def crop_resized(image: np.ndarray, box: np.ndarray, side: int) -> np.ndarray:
    """The box's pixels (zero outside the image), resized to side x side."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    height, width = image.shape[:2]
    if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
        canvas = image[y1:y2, x1:x2]  # most boxes: a view, no copy
    else:
        canvas = np.zeros((y2 - y1, x2 - x1, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            canvas[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    shrinking = canvas.shape[0] > side
    return cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _to_batch(crops: list[np.ndarray]) -> np.ndarray:
    return np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)


def _padded_to_step(batch: np.ndarray, step: int) -> np.ndarray:
    """The NCHW batch with zero rows and columns added below and right, up to multiples of ``step``."""
    height, width = batch.shape[2:]
    extra_rows, extra_columns = -height % step, -width % step
    if not extra_rows and not extra_columns:
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, extra_rows), (0, extra_columns)))


def _pnet_cells(pixels: int) -> int:
    """P-Net's output cells along a side of ``pixels``: a 3x3 convolution, 2x2 max-pooling that keeps a
    partial last window, then two more 3x3 convolutions, none of them padded."""
    return math.ceil((pixels - 2) / 2) - 4


def _suppress_nested(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Drop a box mostly inside a better one (overlap over the smaller area): IoU-based NMS keeps a
    small box nested in a large one, which O-Net sometimes emits for one face. torchvision has no
    intersection-over-minimum NMS, and the final set is a handful of boxes, so numpy does it."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for index in order:
        inside = False
        for kept in keep:
            left, top = np.maximum(boxes[index, :2], boxes[kept, :2])
            right, bottom = np.minimum(boxes[index, 2:], boxes[kept, 2:])
            overlap = max(right - left, 0) * max(bottom - top, 0)
            if overlap / max(min(areas[index], areas[kept]), 1e-9) > threshold:
                inside = True
                break
        if not inside:
            keep.append(int(index))
    return np.array(keep, dtype=np.int64)


class MtcnnDetector:
    def __init__(self, pnet: Runner, rnet: Runner, onet: Runner, config: DetectorConfig | None = None):
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.config = config or DetectorConfig()

    def pyramid_scales(self, height: int, width: int) -> list[float]:
        first = 12.0 / self.config.min_face_px
        scales: list[float] = []
        shortest = min(height, width) * first
        while shortest >= 12:
            scales.append(first * self.config.pyramid_factor ** len(scales))
            shortest *= self.config.pyramid_factor
        return scales

    def _propose(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stage 1 on images of one size: squared candidate boxes and their scores, per image. Images of
        one size (frames of one camera) share the pyramid, so each scale is one P-Net call for them all."""
        height, width = images[0].shape[:2]
        found: list[tuple[list[np.ndarray], ...]] = [([], [], [], []) for _ in images]
        levels: list[tuple[float, list[np.ndarray]]] = []  # (scale, the images at that scale)
        for scale_id, scale in enumerate(self.pyramid_scales(height, width)):
            size = (math.ceil(width * scale), math.ceil(height * scale))
            # Area-averaging reads every source pixel, so resizing each level from the full image cost a third
            # of detection; the smallest level already made that is still twice as large serves as well.
            source = next((level for level_scale, level in reversed(levels) if level_scale >= 2 * scale), images)
            scaled = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in source]
            levels.append((scale, scaled))
            batch = _to_batch(scaled)
            if getattr(self.pnet, "fixed_shapes", False):
                batch = _padded_to_step(batch, PNET_SIZE_STEP)
            regression, probability = self.pnet(batch)
            rows, columns = _pnet_cells(size[1]), _pnet_cells(size[0])  # the map of the unpadded level
            for index, (boxes, scores, regressions, scale_ids) in enumerate(found):
                ys, xs = np.nonzero(probability[index, :rows, :columns] >= self.config.stage_thresholds[0])
                if len(ys) == 0:
                    continue
                # Each output cell sees a 12x12 window of the scaled image, at a stride of 2.
                boxes.append(np.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], 1).astype(np.float32) / scale)
                scores.append(probability[index, ys, xs])
                regressions.append(regression[index][:, ys, xs].T)
                scale_ids.append(np.full(len(ys), scale_id))
        return [self._candidates(*parts) for parts in found]

    @staticmethod
    def _candidates(
        box_parts: list[np.ndarray],
        score_parts: list[np.ndarray],
        regression_parts: list[np.ndarray],
        scale_id_parts: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        if not box_parts:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        boxes, scores = np.concatenate(box_parts), np.concatenate(score_parts)
        regressions, scale_ids = np.concatenate(regression_parts), np.concatenate(scale_id_parts)
        keep = batched_nms(boxes, scores, scale_ids, 0.5)
        boxes, scores, regressions = boxes[keep], scores[keep], regressions[keep]
        keep = batched_nms(boxes, scores, np.zeros(len(boxes)), 0.7)
        return _squared(_calibrated(boxes[keep], regressions[keep])), scores[keep]

    def _propose_all(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stage 1 on every image, same-sized images together (at most MAX_IMAGES_PER_PNET_CALL)."""
        proposals: list[Any] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(index)
        for members in by_size.values():
            for start in range(0, len(members), MAX_IMAGES_PER_PNET_CALL):
                group = members[start : start + MAX_IMAGES_PER_PNET_CALL]
                for index, proposal in zip(group, self._propose([images[i] for i in group])):
                    proposals[index] = proposal
        return proposals

    def _run_crops(
        self, runner: Runner, images: Sequence[np.ndarray], boxes: np.ndarray, owners: np.ndarray, side: int
    ) -> tuple[np.ndarray, ...]:
        crops = [crop_resized(images[owner], box, side) for box, owner in zip(boxes, owners)]
        chunks = [
            runner(_to_batch(crops[start : start + MAX_CROPS_PER_CALL]))
            for start in range(0, len(crops), MAX_CROPS_PER_CALL)
        ]
        return tuple(np.concatenate(parts) for parts in zip(*chunks))

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = [[] for _ in images]
        proposals = self._propose_all(images)
        boxes = np.concatenate([p[0] for p in proposals]) if proposals else np.zeros((0, 4))
        owners: np.ndarray = (
            np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(proposals)]) if proposals else np.zeros(0, int)
        )
        if len(boxes) == 0:
            return results

        regression, probability = self._run_crops(self.rnet, images, boxes, owners, 24)
        passed = probability >= self.config.stage_thresholds[1]
        boxes, owners, scores, regression = boxes[passed], owners[passed], probability[passed], regression[passed]
        keep = batched_nms(boxes, scores, owners, 0.7)
        boxes = _squared(_calibrated(boxes[keep], regression[keep]))
        owners = owners[keep]
        if len(boxes) == 0:
            return results

        regression, probability, points = self._run_crops(self.onet, images, boxes, owners, 48)
        threshold = max(self.config.stage_thresholds[2], self.config.min_score)
        passed = probability >= threshold
        boxes, owners, scores = boxes[passed], owners[passed], probability[passed]
        regression, points = regression[passed], points[passed]
        sizes = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
        landmarks = np.stack([points[:, :5], points[:, 5:]], 2) * sizes[:, None, :] + boxes[:, None, :2]
        boxes = _calibrated(boxes, regression)
        keep = batched_nms(boxes, scores, owners, 0.7)
        for owner in np.unique(owners[keep]):
            mine = keep[owners[keep] == owner]
            for index in mine[_suppress_nested(boxes[mine], scores[mine], 0.7)]:
                results[owner].append(
                    Detection(
                        boxes[index].astype(np.float32), float(scores[index]), landmarks[index].astype(np.float32)
                    )
                )
        return results
