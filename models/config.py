"""Model settings: which detector and extractor run, where their files live, and their tunables.

This is one section of facegrid's settings object (``serve_app.config.Settings``); it lives here so the
models package can be configured and tested without the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "facegrid"


# YuNet's: every face of the development photos (../shared/faces) is found at 0.8, three are lost at 0.9.
DEFAULT_SCORE_THRESHOLDS = {"yunet": 0.8, "mtcnn": 0.9, "scrfd": 0.9}


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["yunet", "mtcnn", "scrfd"] = Field(
        "yunet", description="Detector family: yunet (single pass, batched), mtcnn (cascade), scrfd (your file)."
    )
    onnx_path: Path | None = Field(None, description="SCRFD only: the InsightFace SCRFD ONNX file (e.g. det_10g.onnx).")
    min_face_px: int = Field(50, ge=12, description="Smallest face side, in pixels, that is searched for.")
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Faces scoring below this are dropped; by kind when unset: YuNet 0.8 "
        "(geometric mean of class and objectness), MTCNN 0.9 (O-Net), SCRFD 0.9.",
    )
    stage_thresholds: tuple[float, float, float] = Field(
        (0.6, 0.7, 0.7), description="MTCNN: P-Net, R-Net and O-Net candidate thresholds."
    )
    pyramid_factor: float = Field(0.709, gt=0.1, lt=1, description="MTCNN: scale step of the image pyramid.")
    nms_iou: float = Field(0.4, gt=0, le=1, description="YuNet, SCRFD: IoU above which overlapping boxes merge.")
    input_size_px: int = Field(
        640, ge=32, multiple_of=32, description="YuNet, SCRFD: the square side every photo is letterboxed to."
    )
    max_input_size_px: int = Field(
        1920,
        ge=32,
        multiple_of=32,
        description="YuNet: the largest letterbox side, for photos so large that faces of min_face_px would "
        "shrink too small at input_size_px.",
    )

    @property
    def min_score(self) -> float:
        return DEFAULT_SCORE_THRESHOLDS[self.kind] if self.score_threshold is None else self.score_threshold

    @model_validator(mode="after")
    def _scrfd_needs_a_file(self) -> "DetectorConfig":
        if self.kind == "scrfd" and self.onnx_path is None:
            raise ValueError("detector.kind=scrfd needs detector.onnx_path (an InsightFace SCRFD .onnx file)")
        return self


class ExtractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sface", "dlib", "arcface"] = Field(
        "sface", description="Extractor family: sface (default), dlib (facegrid before 0.2), arcface (your file)."
    )
    onnx_path: Path | None = Field(
        None, description="ArcFace only: the InsightFace recognition ONNX file (e.g. w600k_r50.onnx)."
    )
    name: str | None = Field(None, description="Model name reported in attributes; defaults by kind.")
    match_threshold: float | None = Field(
        None, ge=0, le=1, description="Recommended confidence for a match; defaults to the model's own."
    )

    @model_validator(mode="after")
    def _arcface_needs_a_file(self) -> "ExtractorConfig":
        if self.kind == "arcface" and self.onnx_path is None:
            raise ValueError("extractor.kind=arcface needs extractor.onnx_path (an InsightFace .onnx file)")
        return self


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where set-up caches downloaded weights and converted ONNX files."
    )
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    extractor: ExtractorConfig = Field(
        default_factory=ExtractorConfig,
        description="The primary extractor: it fills new galleries, and return_facen and facen: answer with it.",
    )
    extra_extractors: list[ExtractorConfig] = Field(
        default_factory=list,
        description="More extractors served beside the primary one, for galleries their vectors fill (a store "
        "filled before an upgrade: add {kind: dlib}). Each detection with facen=true then runs "
        "every one of them.",
    )
    unlabelled_gallery_model: str = Field(
        "dlib_resnet.v1",
        description="The extractor whose vectors fill galleries that predate facegrid 0.2, "
        "which did not record a gallery's model (its built-in one was dlib).",
    )
    attributes: bool = Field(True, description="Load the age/gender and expression networks.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime has its CUDA provider and a GPU is visible."
    )
    num_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads per session; 0 = its default.")
    spin_wait: bool = Field(
        False,
        description="Let onnxruntime's threads busy-wait for work between operators. Off: model replicas "
        "share cores with each other and the ingress, and spinning threads take CPU from "
        "them (bench/serving.py measures both).",
    )

    @property
    def extractors(self) -> list[ExtractorConfig]:
        """Every extractor served, the primary one first."""
        return [self.extractor, *self.extra_extractors]

    @model_validator(mode="after")
    def _one_extractor_per_family(self) -> "ModelConfig":
        # Vectors are labelled with their extractor's name; two of one family would need names of their own.
        kinds = [(e.kind, e.name) for e in self.extractors]
        if len(set(kinds)) != len(kinds):
            raise ValueError("models.extra_extractors repeats an extractor (give each its own name)")
        return self
