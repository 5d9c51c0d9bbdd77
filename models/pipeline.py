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


ATTRIBUTES_OFF = "attributes were asked, but the attribute networks are switched off (models.attributes=false)"


def _per_group(network, groups: Sequence[np.ndarray | None]) -> list:
    """One call of ``network`` over the chips of every group that has some, its rows split back by group."""
    asked = [group for group in groups if group is not None]
    output = network(np.concatenate(asked)) if asked else None
    results, at = [], 0
    for group in groups:
        results.append(None if group is None else output[at:at + len(group)])
        at += 0 if group is None else len(group)
    return results


def describe_chips(extractor: Extractor, attribute_model: AttributeModel | None,
                   facen_chips: Sequence[np.ndarray | None], attribute_chips: Sequence[np.ndarray | None]):
    """Facens and attributes for groups of aligned chips (a group per image or per request; None where a
    group asks for none): one forward pass per network over all groups, split back by group. Returns
    (facens per group, attributes per group)."""
    if attribute_model is None and any(group is not None for group in attribute_chips):
        raise RuntimeError(ATTRIBUTES_OFF)
    return (_per_group(extractor.extract, facen_chips),
            _per_group(attribute_model.predict if attribute_model else None, attribute_chips))


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
        if attributes and self.attribute_model is None:
            raise RuntimeError(ATTRIBUTES_OFF)
        facen_chips = [self.chips(image, found, self.extractor.input_size, self.extractor.template) if extract
                       else None for image, found in zip(images, detections)]
        model = self.attribute_model
        attribute_chips = [self.chips(image, found, model.input_size, model.template) if attributes else None
                           for image, found in zip(images, detections)]
        facens, attrs = describe_chips(self.extractor, model, facen_chips, attribute_chips)
        return [[Face(d.box, d.score, d.landmarks, None if f is None else f[i], None if a is None else a[i])
                 for i, d in enumerate(found)] for found, f, a in zip(detections, facens, attrs)]

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
