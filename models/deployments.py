"""Ray Serve deployments of the models: thin wrappers that batch requests from many clients.

``Detector`` finds faces and cuts the aligned chips the later stages need (the image stays here; only
small chips travel on). ``Extractor`` turns chips into facens and attributes. Both load their ONNX
sessions once in ``__init__`` and group concurrent calls with ``@serve.batch``; batch size and wait
are hot-tunable through ``user_config``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from ray import serve
from ray.util import metrics

from .align import align_faces, template_for
from .attributes import INPUT_SIZE as ATTRIBUTE_SIZE
from .attributes import FaceAttributes
from .config import ModelConfig
from .detector import Detection
from .extractor import geometry_for
from .pipeline import describe_chips, load_attributes, load_detector, load_extractor


@dataclass
class DetectRequest:
    image: np.ndarray                  # HxWx3 uint8 RGB
    extractor_chips: bool = False      # cut chips for the extractor
    attribute_chips: bool = False      # cut chips for the attribute networks


@dataclass
class DetectedFaces:
    detections: list[Detection]
    extractor_chips: np.ndarray | None = None
    attribute_chips: np.ndarray | None = None


@dataclass
class DescribeRequest:
    extractor_chips: np.ndarray | None     # (N, S, S, 3) or None
    attribute_chips: np.ndarray | None     # (N, 112, 112, 3) or None


@dataclass
class Descriptions:
    facens: np.ndarray | None = None
    attributes: list[FaceAttributes] = field(default_factory=list)


BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64]


def _batch_size_histogram() -> metrics.Histogram:
    return metrics.Histogram("facegrid_model_batch_size", "Requests per model batch.",
                             boundaries=BATCH_SIZE_BOUNDARIES, tag_keys=("deployment",))


def _apply_batching(method, user_config: dict) -> None:
    if "max_batch_size" in user_config:
        method.set_max_batch_size(int(user_config["max_batch_size"]))
    if "batch_wait_timeout_s" in user_config:
        method.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))


@serve.deployment(name="Detector")
class Detector:
    def __init__(self, config: ModelConfig):
        self.detector = load_detector(config)
        self.chip_size, self.template = geometry_for(config.extractor)
        self.attribute_template = template_for(ATTRIBUTE_SIZE)
        self.batch_sizes = _batch_size_histogram()

    def reconfigure(self, user_config: dict) -> None:
        _apply_batching(self.detect, user_config)

    def _run(self, requests: list[DetectRequest]) -> list[DetectedFaces]:
        found = self.detector.detect_batch([r.image for r in requests])
        results = []
        for request, detections in zip(requests, found):
            results.append(DetectedFaces(
                detections,
                align_faces(request.image, [d.landmarks for d in detections], self.chip_size, self.template)
                if request.extractor_chips else None,
                align_faces(request.image, [d.landmarks for d in detections], ATTRIBUTE_SIZE,
                            self.attribute_template)
                if request.attribute_chips else None))
        return results

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def detect(self, requests: list[DetectRequest]) -> list[DetectedFaces]:
        # The cascade is CPU-bound; a worker thread keeps the replica's event loop answering.
        self.batch_sizes.observe(len(requests), tags={"deployment": "Detector"})
        return await asyncio.to_thread(self._run, requests)

    def ping(self) -> bool:
        return True


@serve.deployment(name="Extractor")
class Extractor:
    def __init__(self, config: ModelConfig):
        self.extractor = load_extractor(config)
        self.attribute_model = load_attributes(config)
        self.batch_sizes = _batch_size_histogram()

    def reconfigure(self, user_config: dict) -> None:
        _apply_batching(self.describe, user_config)

    def _run(self, requests: list[DescribeRequest]) -> list[Descriptions]:
        facens, attributes = describe_chips(self.extractor, self.attribute_model,
                                            [r.extractor_chips for r in requests],
                                            [r.attribute_chips for r in requests])
        return [Descriptions(f, [] if a is None else a) for f, a in zip(facens, attributes)]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def describe(self, requests: list[DescribeRequest]) -> list[Descriptions]:
        self.batch_sizes.observe(len(requests), tags={"deployment": "Extractor"})
        return await asyncio.to_thread(self._run, requests)

    def ping(self) -> bool:
        return True
