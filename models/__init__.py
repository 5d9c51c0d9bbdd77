"""Face models: detection with five landmarks, alignment, feature vectors, attributes.

Callers use this face; the networks, weight formats and runtimes live in the submodules.
"""

from .attributes import AttributeModel, FaceAttributes
from .config import DetectorConfig, ExtractorConfig, ModelConfig
from .detector import Detection, Detector, MtcnnDetector
from .extractor import Extractor
from .pipeline import Face, FacePipeline, ModelsNotReadyError, load_pipeline

__all__ = [
    "AttributeModel",
    "Detection",
    "Detector",
    "DetectorConfig",
    "Extractor",
    "ExtractorConfig",
    "Face",
    "FaceAttributes",
    "FacePipeline",
    "ModelConfig",
    "ModelsNotReadyError",
    "MtcnnDetector",
    "load_pipeline",
]
