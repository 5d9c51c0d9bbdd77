"""Feature extraction: aligned chips in, unit-length float32 vectors ("facen") out, plus calibration.

``confidence`` on the wire is a similarity in [0, 1], monotonic in the cosine of two facens. Each
extractor carries its calibration and a recommended match threshold.

SFace (default): the class-balanced logistic fit described below, made with ``facegrid eval --fit`` on
../shared/faces through the default detector (YuNet), over every pair of its single-person photos:

    confidence = 1 / (1 + exp(-25.7 * (cosine - 0.4028)))

Recommended match threshold: confidence >= 0.6 (cosine >= 0.419), the confidence clients of the dlib
default already use. SFace's published operating point (cosine 0.363, set on LFW) accepts more pairs
of different people there, most of them East-Asian; 0.419 lies between it and the lowest same-person
cosine seen, rather than at the edge of these few photos. docs in the README give the figures.

dlib ResNet (the default before 0.2), fitted with ``facegrid eval --fit`` on ../shared/faces (all 2,485
pairs of the 71 single-person photos then there; 128-d unit vectors). Same-person cosines there run
0.915..0.99, different-person ones 0.70..0.928. The calibration is a class-balanced logistic fit of
P(same | cosine) with Platt's target smoothing (without it the fit diverges on nearly separable pairs):

    confidence = 1 / (1 + exp(-122.5 * (cosine - 0.9104)))

Recommended match threshold: confidence >= 0.6 (cosine >= 0.9137): 99.6 % verification accuracy on
those pairs, every same-person pair accepted. It sits next to dlib's own published operating point
(Euclidean 0.6 on raw descriptors, whose norms are about 1.5: cosine about 0.92, LFW 99.38 %), which is
why it is expected to carry over to other photos rather than being tuned to these few.

ArcFace-family models (InsightFace ONNX files): their weights are not installed here, so no fit was
possible; confidence is the cosine mapped linearly, ``(1 + cosine) / 2``, and the threshold must be set
by the operator (``extractor.match_threshold``); run ``facegrid eval`` on your own labelled photos to
choose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from .align import arcface_template_for, template_for
from .config import ExtractorConfig
from .runtime import Runner

DLIB_SLOPE = 122.5
DLIB_MIDPOINT = 0.9104
DLIB_MATCH_THRESHOLD = 0.6
SFACE_SLOPE = 25.7
SFACE_MIDPOINT = 0.4028
SFACE_MATCH_THRESHOLD = 0.6


@dataclass(frozen=True)
class LogisticCalibration:
    slope: float
    midpoint: float

    def confidence(self, cosine: ArrayLike) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.slope * (np.asarray(cosine, np.float64) - self.midpoint)))

    def cosine_for(self, confidence: float) -> float:
        confidence = min(max(confidence, 1e-12), 1 - 1e-12)
        return float(self.midpoint + np.log(confidence / (1 - confidence)) / self.slope)


@dataclass(frozen=True)
class LinearCalibration:
    def confidence(self, cosine: ArrayLike) -> np.ndarray:
        return np.clip((1.0 + np.asarray(cosine, np.float64)) / 2.0, 0.0, 1.0)

    def cosine_for(self, confidence: float) -> float:
        return 2.0 * confidence - 1.0


Calibration = LogisticCalibration | LinearCalibration  # cosine -> confidence


class Extractor(Protocol):
    name: str
    dim: int
    input_size: int
    template: np.ndarray
    match_threshold: float
    calibration: Calibration

    def extract(self, chips: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB aligned chips -> (N, dim) float32 unit vectors."""
        ...

    def confidence(self, cosine: ArrayLike) -> np.ndarray: ...


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def to_nchw(chips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(chips).transpose(0, 3, 1, 2), dtype=np.float32)


class _RawPixelExtractor:
    """An extractor whose graph takes raw 0..255 RGB pixels, NCHW, and answers one vector per chip."""

    kind: str  # its calibration family (calibration_for)
    name: str
    dim: int
    input_size: int
    template: np.ndarray

    def __init__(self, runner: Runner, match_threshold: float | None = None, name: str | None = None):
        self.runner = runner
        self.name = name or self.name
        self.calibration, self.match_threshold = calibration_for(self.kind, match_threshold)

    def extract(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        return unit_rows(self.runner(to_nchw(chips))[0])

    def confidence(self, cosine: ArrayLike) -> np.ndarray:
        return self.calibration.confidence(cosine)


class DlibExtractor(_RawPixelExtractor):
    kind, name, dim, input_size = "dlib", "dlib_resnet.v1", 128, 150
    template = template_for(150)


class SFaceExtractor(_RawPixelExtractor):
    """SFace (OpenCV Zoo, 2021dec): 112x112 RGB chips on the ArcFace landmark layout (the graph normalises
    the pixels itself), 128-d output."""

    kind, name, dim, input_size = "sface", "sface_2021dec.v1", 128, 112
    template = arcface_template_for(112)


ARCFACE_SIDE = 112  # InsightFace's recognition models take 112x112 unless their file says otherwise


class ArcFaceExtractor:
    """An InsightFace ArcFace recognition model (input ``(N, 3, 112, 112)``, RGB, (x - 127.5) / 127.5)."""

    def __init__(self, runner: Runner, name: str | None = None, match_threshold: float | None = None):
        self.runner = runner
        shape = getattr(runner, "input_shape", (None, 3, ARCFACE_SIDE, ARCFACE_SIDE))
        self.input_size = int(shape[2]) if isinstance(shape[2], int) else ARCFACE_SIDE
        self.template = arcface_template_for(self.input_size)
        probe = runner(np.zeros((1, 3, self.input_size, self.input_size), np.float32))[0]
        self.dim = int(probe.shape[1])
        self.name = name or f"arcface_{self.dim}.v1"
        self.calibration, self.match_threshold = calibration_for("arcface", match_threshold)

    def extract(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        return unit_rows(self.runner((to_nchw(chips) - 127.5) / 127.5)[0])

    def confidence(self, cosine: ArrayLike) -> np.ndarray:
        return self.calibration.confidence(cosine)


def calibration_for(kind: str, match_threshold: float | None = None) -> tuple[Calibration, float]:
    """(calibration, recommended threshold) of an extractor family, known without loading it."""
    if kind == "arcface":
        return LinearCalibration(), 0.65 if match_threshold is None else match_threshold
    if kind == "sface":
        return (
            LogisticCalibration(SFACE_SLOPE, SFACE_MIDPOINT),
            SFACE_MATCH_THRESHOLD if match_threshold is None else match_threshold,
        )
    return (
        LogisticCalibration(DLIB_SLOPE, DLIB_MIDPOINT),
        DLIB_MATCH_THRESHOLD if match_threshold is None else match_threshold,
    )


def _first_input_and_output(path: Path | None) -> tuple[Any, Any]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    first = next(node for node in graph.input if node.name not in weights)
    return first.type.tensor_type.shape.dim, graph.output[0].type.tensor_type.shape.dim


def calibration_of_model(
    name: str, served: dict[str, tuple[Calibration, float]] | None = None
) -> tuple[Calibration, float]:
    """(calibration, recommended threshold) for vectors of the named model: a served extractor's own, a
    built-in family's by its name, else the linear map (an ArcFace file no longer configured)."""
    if served and name in served:
        return served[name]
    kind = {DlibExtractor.name: "dlib", SFaceExtractor.name: "sface"}.get(name, "arcface")
    return calibration_for(kind)


@dataclass(frozen=True, eq=False)
class ChipGeometry:
    """What an extractor needs of the Detector: chips of this side, landmarks on this template. ``model`` is
    the extractor's name, which its vectors carry into galleries."""

    model: str
    size: int
    template: np.ndarray


def geometry_for(config: ExtractorConfig) -> ChipGeometry:
    """The configured extractor's name and chip geometry, read without starting it: the Detector aligns
    chips for an Extractor that lives in another replica."""
    if config.kind == "arcface":
        input_dims, output_dims = _first_input_and_output(config.onnx_path)
        side = (input_dims[2].dim_value if len(input_dims) == 4 else 0) or ARCFACE_SIDE
        dim = output_dims[-1].dim_value if len(output_dims) >= 2 else 0
        name = config.name or f"arcface_{dim or 'n'}.v1"
        return ChipGeometry(name, side, arcface_template_for(side))
    family = {"sface": SFaceExtractor, "dlib": DlibExtractor}[config.kind]
    return ChipGeometry(config.name or family.name, family.input_size, family.template)
