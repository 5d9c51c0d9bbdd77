"""Image in, faces out: detection, alignment, feature vectors and attributes, one code path.

The stages are three functions: a detector's ``detect_batch``, ``cut_chips`` (align each face once per
network that will read it) and ``describe`` (one forward pass per network over the chips of many
images). The Serve deployments run the first two in the Detector replica and the third in the Extractor
replica; ``FacePipeline`` composes the same three in one process for the eval command, the benchmarks
and the tests, so what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .align import align_faces, template_for
from .attributes import INPUT_SIZE as ATTRIBUTE_SIZE
from .attributes import AttributeModel, FaceAttributes
from .config import ExtractorConfig, ModelConfig
from .detector import Detection, Detector, MtcnnDetector
from .export import onnx_path
from .extractor import ArcFaceExtractor, ChipGeometry, DlibExtractor, Extractor, SFaceExtractor, geometry_for
from .runtime import OnnxRunner
from .scrfd import ScrfdDetector
from .yunet import YunetDetector


class ModelsNotReadyError(RuntimeError):
    """The converted model files are missing: set-up has not run for this data directory."""


ATTRIBUTES_OFF = "attributes were asked, but the attribute networks are switched off (models.attributes=false)"
ATTRIBUTE_TEMPLATE = template_for(ATTRIBUTE_SIZE)


@dataclass
class FaceChips:
    """One image's aligned chips: per extractor (by model name) and for the attribute networks."""

    facens: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (N, S, S, 3) uint8
    attributes: np.ndarray | None = None  # (N, 112, 112, 3) uint8


@dataclass
class Descriptions:
    """One image's vectors (per model, (N, dim) float32 unit rows) and attributes (N, or none asked)."""

    facens: dict[str, np.ndarray] = field(default_factory=dict)
    attributes: list[FaceAttributes] = field(default_factory=list)


def cut_chips(
    image: np.ndarray, detections: Sequence[Detection], geometries: Sequence[ChipGeometry], attributes: bool
) -> FaceChips:
    """Chips of every face for each extractor geometry given (none: no vectors asked) and, if asked,
    for the attribute networks."""
    landmarks = [d.landmarks for d in detections]
    return FaceChips(
        {g.model: align_faces(image, landmarks, g.size, g.template) for g in geometries},
        align_faces(image, landmarks, ATTRIBUTE_SIZE, ATTRIBUTE_TEMPLATE) if attributes else None,
    )


def _per_group(network: Callable[[np.ndarray], Any] | None, groups: Sequence[np.ndarray | None]) -> list[Any]:
    """One call of ``network`` over the chips of every group that has some, its rows split back by group."""
    asked = [group for group in groups if group is not None]
    if not asked:
        return [None] * len(groups)
    if network is None:
        raise RuntimeError("chips were cut for a network that is not loaded here")
    output = network(np.concatenate(asked))
    results: list[Any] = []
    at = 0
    for group in groups:
        results.append(None if group is None else output[at : at + len(group)])
        at += 0 if group is None else len(group)
    return results


def describe(
    extractors: Mapping[str, Extractor], attribute_model: AttributeModel | None, chips: Sequence[FaceChips]
) -> list[Descriptions]:
    """Vectors and attributes for the chips of many images (a group per image or per request): one
    forward pass per network over all groups, split back by group."""
    if attribute_model is None and any(group.attributes is not None for group in chips):
        raise RuntimeError(ATTRIBUTES_OFF)
    unknown = {model for group in chips for model in group.facens} - set(extractors)
    if unknown:
        raise RuntimeError(f"no extractor named {', '.join(sorted(unknown))} is loaded here")
    results = [Descriptions() for _ in chips]
    for model, extractor in extractors.items():
        for result, vectors in zip(results, _per_group(extractor.extract, [g.facens.get(model) for g in chips])):
            if vectors is not None:
                result.facens[model] = vectors
    attributes = _per_group(attribute_model.predict if attribute_model else None, [g.attributes for g in chips])
    for result, found in zip(results, attributes):
        result.attributes = [] if found is None else list(found)
    return results


@dataclass(frozen=True, eq=False)
class Face:
    box: np.ndarray  # x1, y1, x2, y2 in pixels of the input image
    score: float
    landmarks: np.ndarray  # (5, 2)
    facens: dict[str, np.ndarray]  # model -> unit float32 vector, when extraction was asked
    attributes: FaceAttributes | None
    primary: str | None = None  # the model of ``facen``

    @property
    def facen(self) -> np.ndarray | None:
        return self.facens.get(self.primary) if self.primary else None


class FacePipeline:
    """``extractors``: the primary one first (its vectors are ``Face.facen``), then any others served."""

    def __init__(
        self, detector: Detector, extractors: Extractor | Sequence[Extractor], attributes: AttributeModel | None = None
    ):
        listed = list(extractors) if isinstance(extractors, Sequence) else [extractors]
        self.detector, self.attribute_model = detector, attributes
        self.extractors = {extractor.name: extractor for extractor in listed}
        self.extractor = listed[0]
        self.geometries = [ChipGeometry(e.name, e.input_size, e.template) for e in listed]

    def describe_faces(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[Sequence[Detection]],
        extract: bool = True,
        attributes: bool = False,
    ) -> list[list[Face]]:
        """Feature vectors and attributes for given detections, batched across all images."""
        if attributes and self.attribute_model is None:
            raise RuntimeError(ATTRIBUTES_OFF)
        chips = [
            cut_chips(image, found, self.geometries if extract else (), attributes)
            for image, found in zip(images, detections)
        ]
        described = describe(self.extractors, self.attribute_model, chips)
        return [
            [
                Face(
                    d.box,
                    d.score,
                    d.landmarks,
                    {m: v[i] for m, v in about.facens.items()},
                    about.attributes[i] if about.attributes else None,
                    self.extractor.name,
                )
                for i, d in enumerate(found)
            ]
            for found, about in zip(detections, described)
        ]

    def detect(self, images: Sequence[np.ndarray], extract: bool = True, attributes: bool = False) -> list[list[Face]]:
        """Faces in each HxWx3 uint8 RGB image, highest detection score first."""
        return self.describe_faces(images, self.detector.detect_batch(images), extract, attributes)


def _runner(config: ModelConfig, name: str) -> OnnxRunner:
    path = onnx_path(config.data_dir, name)
    if not path.is_file():
        raise ModelsNotReadyError(f"{path} is missing: run `facegrid setup` (data dir {config.data_dir})")
    return OnnxRunner(path, config.device, config.num_threads, config.spin_wait)


def load_detector(config: ModelConfig) -> Detector:
    if config.detector.kind == "scrfd":
        assert config.detector.onnx_path is not None  # DetectorConfig refuses scrfd without one
        runner = OnnxRunner(config.detector.onnx_path, config.device, config.num_threads, config.spin_wait)
        return ScrfdDetector(runner, config.detector)
    if config.detector.kind == "yunet":
        return YunetDetector(_runner(config, "yunet"), config.detector)
    pnet, rnet, onet = (_runner(config, f"mtcnn_{n}") for n in ("pnet", "rnet", "onet"))
    return MtcnnDetector(pnet, rnet, onet, config.detector)


def load_extractor(config: ModelConfig, extractor: ExtractorConfig | None = None) -> Extractor:
    """The configured extractor (default: the primary one), named as ``geometry_for`` names it."""
    extractor = extractor or config.extractor
    name = geometry_for(extractor).model
    if extractor.kind == "arcface":
        assert extractor.onnx_path is not None  # ExtractorConfig refuses arcface without one
        runner = OnnxRunner(extractor.onnx_path, config.device, config.num_threads, config.spin_wait)
        return ArcFaceExtractor(runner, name, extractor.match_threshold)
    if extractor.kind == "sface":
        return SFaceExtractor(_runner(config, "sface"), extractor.match_threshold, name)
    return DlibExtractor(_runner(config, "dlib_resnet"), extractor.match_threshold, name)


def load_extractors(config: ModelConfig) -> list[Extractor]:
    """Every extractor the deployment serves, the primary one first."""
    return [load_extractor(config, extractor) for extractor in config.extractors]


def load_attributes(config: ModelConfig) -> AttributeModel | None:
    if not config.attributes:
        return None
    return AttributeModel(_runner(config, "age_gender"), _runner(config, "expression"))


def load_pipeline(config: ModelConfig | None = None) -> FacePipeline:
    config = config or ModelConfig()
    return FacePipeline(load_detector(config), load_extractors(config), load_attributes(config))
