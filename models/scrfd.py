"""SCRFD detectors as InsightFace publishes them (e.g. ``det_10g.onnx``, ``det_2.5g.onnx``).

The graph contract, as published: one input (N, 3, H, W) of RGB pixels normalised as (x - 127.5) / 128;
for each of the strides 8, 16 and 32 and two anchors per cell, three outputs in this order: all scores,
then all box distances, then all landmark offsets (9 outputs; models without landmarks have 6 and are
refused, since alignment needs the five points). Boxes are distances (left, top, right, bottom) from the
anchor centre and landmarks offsets from it, both in units of the stride.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .config import DetectorConfig
from .detector import Detection
from .letterbox import letterbox, planar_batch
from .nms import batched_nms
from .runtime import OnnxRunner

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


class ScrfdDetector:
    def __init__(self, runner: OnnxRunner, config: DetectorConfig):
        self.runner = runner
        self.config = config
        shape: tuple[Any, ...] = getattr(runner, "input_shape", ())
        fixed = len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int)
        self.input_size = int(shape[2]) if fixed else config.input_size_px
        self._centres: dict[int, np.ndarray] = {}

    def _anchor_centres(self, stride: int) -> np.ndarray:
        if stride not in self._centres:
            cells = self.input_size // stride
            ys, xs = np.mgrid[:cells, :cells]
            centres = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
            self._centres[stride] = np.repeat(centres, ANCHORS_PER_CELL, axis=0)
        return self._centres[stride]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect_one(image) for image in images]

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        box = letterbox(image, self.input_size)
        blob = (planar_batch([box.canvas]) - 127.5) / 128.0
        outputs = self.runner(blob)
        if len(outputs) != 3 * len(STRIDES):
            raise ValueError(
                f"SCRFD model has {len(outputs)} outputs; facegrid needs the 9-output "
                "variant with landmarks (scores, boxes, landmarks for strides 8/16/32)"
            )
        boxes, scores, points = [], [], []
        for level, stride in enumerate(STRIDES):
            level_scores = outputs[level].reshape(-1)
            distances = outputs[level + 3].reshape(-1, 4) * stride
            offsets = outputs[level + 6].reshape(-1, 5, 2) * stride
            centres = self._anchor_centres(stride)
            passed = level_scores >= self.config.min_score
            centre = centres[passed]
            boxes.append(np.hstack([centre - distances[passed, :2], centre + distances[passed, 2:]]))
            points.append(centre[:, None, :] + offsets[passed])
            scores.append(level_scores[passed])
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        all_points = np.concatenate(points)
        keep = batched_nms(all_boxes, all_scores, np.zeros(len(all_boxes)), self.config.nms_iou)
        min_side = self.config.min_face_px
        faces = []
        for index in keep:
            face = box.to_photo(all_boxes[index])
            if min(face[2] - face[0], face[3] - face[1]) < min_side:
                continue
            faces.append(
                Detection(
                    face.astype(np.float32),
                    float(all_scores[index]),
                    box.to_photo(all_points[index].reshape(-1)).reshape(5, 2).astype(np.float32),
                )
            )
        return faces
