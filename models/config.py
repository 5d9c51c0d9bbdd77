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


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["mtcnn", "scrfd"] = Field("mtcnn", description="Detector family.")
    onnx_path: Path | None = Field(
        None, description="SCRFD only: the InsightFace SCRFD ONNX file (e.g. det_10g.onnx).")
    min_face_px: int = Field(50, ge=12, description="Smallest face side, in pixels, that is searched for.")
    score_threshold: float = Field(
        0.9, ge=0, le=1, description="Faces scoring below this are dropped (MTCNN: O-Net probability).")
    stage_thresholds: tuple[float, float, float] = Field(
        (0.6, 0.7, 0.7), description="MTCNN: P-Net, R-Net and O-Net candidate thresholds.")
    pyramid_factor: float = Field(0.709, gt=0.1, lt=1, description="MTCNN: scale step of the image pyramid.")
    nms_iou: float = Field(0.4, gt=0, le=1, description="SCRFD: IoU above which overlapping boxes merge.")
    input_size_px: int = Field(640, ge=32, description="SCRFD: the network's square input side.")

    @model_validator(mode="after")
    def _scrfd_needs_a_file(self) -> "DetectorConfig":
        if self.kind == "scrfd" and self.onnx_path is None:
            raise ValueError("detector.kind=scrfd needs detector.onnx_path (an InsightFace SCRFD .onnx file)")
        return self


class ExtractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["dlib", "arcface"] = Field("dlib", description="Extractor family.")
    onnx_path: Path | None = Field(
        None, description="ArcFace only: the InsightFace recognition ONNX file (e.g. w600k_r50.onnx).")
    name: str | None = Field(None, description="Model name reported in attributes; defaults by kind.")
    match_threshold: float | None = Field(
        None, ge=0, le=1, description="Recommended confidence for a match; defaults to the model's own.")

    @model_validator(mode="after")
    def _arcface_needs_a_file(self) -> "ExtractorConfig":
        if self.kind == "arcface" and self.onnx_path is None:
            raise ValueError("extractor.kind=arcface needs extractor.onnx_path (an InsightFace .onnx file)")
        return self


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir,
                           description="Where set-up caches downloaded weights and converted ONNX files.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    attributes: bool = Field(True, description="Load the age/gender and expression networks.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime has its CUDA provider and a GPU is visible.")
    num_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads per session; 0 = its default.")
    spin_wait: bool = Field(
        False, description="Let onnxruntime's threads busy-wait for work between operators. Off: model replicas "
                            "share cores with each other and the ingress, and spinning threads take CPU from "
                            "them (bench/serving.py measures both).")
