"""YuNet (OpenCV Zoo, 2023mar): a single-pass face detector with five landmarks.

Every photo of a batch is letterboxed to one square side (``input_size_px``), so a batch of photos from
many requests is one network call on a GPU. A photo so large that its smallest wanted face (``min_face_px``) would
shrink there below what YuNet finds (``SMALLEST_FACE_AT_INPUT``) is also searched at a larger side, in
steps of ``input_size_px`` up to ``max_input_size_px``, and the two passes' faces are merged: the larger
side alone finds small faces but scores a face that fills the photo poorly. Photos of one side go
through the network together.

The output contract, from the model as published: for strides 8, 16 and 32, one row per cell of the
input (row-major), with a class score and an objectness score (face score = their geometric mean), a box
as the centre's offset from the cell in strides and log width/height in strides, and five landmarks as
offsets from the cell in strides. The input is BGR pixels, 0..255, unnormalised.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .config import DetectorConfig
from .detector import Detection
from .letterbox import Letterbox, letterbox, planar_batch
from .nms import batched_nms
from .runtime import Runner

STRIDES = (8, 16, 32)
# Face boxes smaller than this at the network's input are lost (its finest stride is 8 px): on dlib's group
# photo set into larger frames, boxes of 11 px and more were found, and of 9 px not.
SMALLEST_FACE_AT_INPUT = 12
# A face of ``min_face_px`` (the side of the square it fills, as MTCNN's search windows count it) gets a
# tight box (brows to chin) about half as wide: the MTCNN default, searching from 50 px windows, reported
# boxes down to 28 px on the development photos. Boxes are kept down to this share of min_face_px, so the
# detector change keeps the faces a deployment reported before.
BOX_PER_FACE_SIDE = 0.5
# How many letterboxed photos go through one call on CUDA: bounds memory (a 640x640 float input is 4.9 MB).
# On the CPU each photo goes alone: onnxruntime's CPU convolutions ran a batch of 16 at 640 px slower per
# photo than one at a time (the activations of a batch outgrow the caches), so a batch of requests is
# still one call of the Detector replica, but not one network call.
MAX_IMAGES_PER_CUDA_CALL = 32


class YunetDetector:
    def __init__(self, runner: Runner, config: DetectorConfig | None = None):
        self.runner = runner
        self.config = config or DetectorConfig(kind="yunet")
        names = list(getattr(runner, "output_names", []))
        self._outputs = {name: index for index, name in enumerate(names)}
        missing = [
            f"{part}_{stride}"
            for part in ("cls", "obj", "bbox", "kps")
            for stride in STRIDES
            if f"{part}_{stride}" not in self._outputs
        ]
        if missing:
            raise ValueError(f"not a YuNet 2023mar graph: outputs {', '.join(missing)} are missing")
        self._cells: dict[tuple[int, int], np.ndarray] = {}
        on_cuda = getattr(runner, "provider", "") == "CUDAExecutionProvider"
        self.images_per_call = MAX_IMAGES_PER_CUDA_CALL if on_cuda else 1

    @property
    def smallest_box_px(self) -> float:
        return self.config.min_face_px * BOX_PER_FACE_SIDE

    def input_sides(self, height: int, width: int) -> list[int]:
        """The letterbox sides a photo is searched at: the configured one, and for a photo so large that
        its smallest wanted face would shrink below what YuNet finds there, also a larger one."""
        base = self.config.input_size_px
        longest = max(height, width)
        wanted = longest * SMALLEST_FACE_AT_INPUT / self.smallest_box_px
        large = min(self.config.max_input_size_px, math.ceil(wanted / base) * base)
        return [base, large] if large > base else [base]

    def _cell_grid(self, side: int, stride: int) -> np.ndarray:
        """(cells, 2) x, y of every cell of a stride's output, in the network's row-major order."""
        key = (side, stride)
        if key not in self._cells:
            cells = side // stride
            ys, xs = np.mgrid[:cells, :cells]
            self._cells[key] = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        return self._cells[key]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        by_side: dict[int, list[int]] = {}
        for index, image in enumerate(images):
            for side in self.input_sides(*image.shape[:2]):
                by_side.setdefault(side, []).append(index)
        candidates: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in images]
        for side, members in sorted(by_side.items()):
            for start in range(0, len(members), self.images_per_call):
                group = members[start : start + self.images_per_call]
                boxes = [letterbox(images[i], side) for i in group]
                outputs = self.runner(planar_batch([box.canvas for box in boxes], bgr=True))
                for row, (index, box) in enumerate(zip(group, boxes)):
                    candidates[index].append(self._decode(outputs, row, side, box))
        return [self._faces(found) for found in candidates]

    def _decode(
        self, outputs: Sequence[np.ndarray], row: int, side: int, box: Letterbox
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, landmarks) above the score threshold, in photo pixels."""
        boxes, scores, points = [], [], []
        for stride in STRIDES:
            part = {name: outputs[self._outputs[f"{name}_{stride}"]][row] for name in ("cls", "obj", "bbox", "kps")}
            score = np.sqrt(np.clip(part["cls"][:, 0], 0, 1) * np.clip(part["obj"][:, 0], 0, 1))
            passed = np.nonzero(score >= self.config.min_score)[0]
            cell, regression = self._cell_grid(side, stride)[passed], part["bbox"][passed]
            centre = (cell + regression[:, :2]) * stride
            size = np.exp(regression[:, 2:]) * stride
            boxes.append(np.hstack([centre - size / 2, centre + size / 2]))
            points.append(((part["kps"][passed].reshape(-1, 5, 2) + cell[:, None, :]) * stride).reshape(-1, 10))
            scores.append(score[passed])
        return (
            box.to_photo(np.concatenate(boxes)),
            np.concatenate(scores),
            box.to_photo(np.concatenate(points)).reshape(-1, 5, 2),
        )

    def _faces(self, found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[Detection]:
        """One photo's candidates from all its passes, merged, highest score first."""
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*found))
        keep = batched_nms(boxes, scores, np.zeros(len(boxes)), self.config.nms_iou)
        return [
            Detection(boxes[i].astype(np.float32), float(scores[i]), points[i].astype(np.float32))
            for i in keep
            if max(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= self.smallest_box_px
        ]
