"""Image in, faces out: detection, alignment, feature vectors and attributes in one call.

The service splits these stages across Ray Serve deployments; this in-process pipeline is what they
compose, and what the eval command, the benchmarks and the tests drive directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .align import align_faces
from .attributes import AttributeModel, FaceAttributes
from .config import ModelConfig
from .detector import Detection, Detector, MtcnnDetector
from .export import onnx_path
from .extractor import ArcFaceExtractor, DlibExtractor, Extractor
from .runtime import OnnxRunner
from .scrfd import ScrfdDetector


class ModelsNotReadyError(RuntimeError):
    """The converted model files are missing: set-up has not run for this data directory."""


@dataclass(frozen=True, eq=False)
class Face:
    box: np.ndarray             # x1, y1, x2, y2 in pixels of the input image
    score: float
    landmarks: np.ndarray       # (5, 2)
    facen: np.ndarray | None    # unit float32 vector when extraction was asked
    attributes: FaceAttributes | None


class FacePipeline:
    def __init__(self, detector: Detector, extractor: Extractor, attributes: AttributeModel | None = None):
        self.detector, self.extractor, self.attribute_model = detector, extractor, attributes

    def chips(self, image: np.ndarray, detections: Sequence[Detection], size: int, template) -> np.ndarray:
        return align_faces(image, [d.landmarks for d in detections], size, template)

    def describe(self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]],
                 extract: bool = True, attributes: bool = False) -> list[list[Face]]:
        """Feature vectors and attributes for given detections, batched across all images."""
        counts = [len(found) for found in detections]
        facens = attrs = None
        if extract:
            chips = [self.chips(im, found, self.extractor.input_size, self.extractor.template)
                     for im, found in zip(images, detections)]
            facens = self.extractor.extract(np.concatenate(chips)) if sum(counts) else None
        if attributes:
            if self.attribute_model is None:
                raise RuntimeError("attributes were asked, but the attribute networks are not loaded")
            model = self.attribute_model
            chips = [self.chips(im, found, model.input_size, model.template) for im, found in zip(images, detections)]
            attrs = model.predict(np.concatenate(chips)) if sum(counts) else None
        results, cursor = [], 0
        for found in detections:
            faces = []
            for detection in found:
                faces.append(Face(detection.box, detection.score, detection.landmarks,
                                  None if facens is None else facens[cursor],
                                  None if attrs is None else attrs[cursor]))
                cursor += 1
            results.append(faces)
        return results

    def detect(self, images: Sequence[np.ndarray], extract: bool = True,
               attributes: bool = False) -> list[list[Face]]:
        """Faces in each HxWx3 uint8 RGB image, highest detection score first."""
        return self.describe(images, self.detector.detect_batch(images), extract, attributes)


def _runner(config: ModelConfig, name: str) -> OnnxRunner:
    path = onnx_path(config.data_dir, name)
    if not path.is_file():
        raise ModelsNotReadyError(f"{path} is missing: run `facegrid setup` (data dir {config.data_dir})")
    return OnnxRunner(path, config.device, config.num_threads, config.spin_wait)


def load_detector(config: ModelConfig) -> Detector:
    if config.detector.kind == "scrfd":
        runner = OnnxRunner(config.detector.onnx_path, config.device, config.num_threads, config.spin_wait)
        return ScrfdDetector(runner,
                             config.detector)
    return MtcnnDetector(*(_runner(config, f"mtcnn_{n}") for n in ("pnet", "rnet", "onet")), config.detector)


def load_extractor(config: ModelConfig) -> Extractor:
    if config.extractor.kind == "arcface":
        runner = OnnxRunner(config.extractor.onnx_path, config.device, config.num_threads, config.spin_wait)
        return ArcFaceExtractor(runner, config.extractor.name, config.extractor.match_threshold)
    return DlibExtractor(_runner(config, "dlib_resnet"), config.extractor.match_threshold)


def load_attributes(config: ModelConfig) -> AttributeModel | None:
    if not config.attributes:
        return None
    return AttributeModel(_runner(config, "age_gender"), _runner(config, "expression"))


def load_pipeline(config: ModelConfig | None = None) -> FacePipeline:
    config = config or ModelConfig()
    return FacePipeline(load_detector(config), load_extractor(config), load_attributes(config))
