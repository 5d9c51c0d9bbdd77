"""SCRFD detectors and ArcFace extractors given as ONNX files, as InsightFace publishes them.

Their real weights cannot be fetched here, so these tests export small graphs with the same input and
output signatures and check facegrid's loading, preprocessing and decoding against known answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.align import ARCFACE_TEMPLATE_112
from models.config import DetectorConfig, ExtractorConfig, ModelConfig
from models.extractor import geometry_for
from models.pipeline import FacePipeline, load_detector, load_extractor
from models.runtime import SHAPE_SESSION_AFTER, OnnxRunner
from models.scrfd import ScrfdDetector

SCRFD_CELLS = {8: 80, 16: 40, 32: 20}


def _export(module: nn.Module, path, example: torch.Tensor, outputs: list[str], dynamic_batch: bool) -> None:
    axes = {"input.1": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        input_names=["input.1"],
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


class _TinyArcFace(nn.Module):
    def __init__(self, side: int = 112):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.fc = nn.Linear(8 * (side // 8) ** 2, 512)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class _FixedScrfd(nn.Module):
    """Emits fixed SCRFD-shaped outputs (scores, boxes, landmarks for strides 8/16/32)."""

    def __init__(self, tensors: list[np.ndarray]):
        super().__init__()
        for index, tensor in enumerate(tensors):
            self.register_buffer(f"out{index}", torch.from_numpy(tensor))
        self.count = len(tensors)

    def forward(self, x):
        touch = x.mean() * 0
        return tuple(getattr(self, f"out{index}") + touch for index in range(self.count))


def _anchor(stride: int, x: int, y: int, anchor: int) -> int:
    return (y * SCRFD_CELLS[stride] + x) * 2 + anchor


@pytest.fixture
def scrfd_path(tmp_path):
    scores = [np.zeros((cells * cells * 2, 1), np.float32) for cells in SCRFD_CELLS.values()]
    boxes = [np.ones((cells * cells * 2, 4), np.float32) for cells in SCRFD_CELLS.values()]
    points = [np.zeros((cells * cells * 2, 10), np.float32) for cells in SCRFD_CELLS.values()]
    face = _anchor(16, 10, 12, 0)
    scores[1][face] = 0.95
    scores[1][face + 1] = 0.93  # the cell's other anchor sees the same face: NMS keeps one
    scores[2][_anchor(32, 3, 3, 0)] = 0.30  # below the threshold
    boxes[1][face] = boxes[1][face + 1] = (3, 4, 3, 5)
    points[1][face] = (-1, -1, 1, -1, 0, 0, -1, 1, 1, 1)
    path = tmp_path / "scrfd_test.onnx"
    _export(
        _FixedScrfd(scores + boxes + points),
        path,
        torch.zeros(1, 3, 640, 640),
        [f"o{i}" for i in range(9)],
        dynamic_batch=False,
    )
    return path


@pytest.mark.parametrize("shape_keyed", [False, True], ids=["one session", "a session per shape (CUDA mode)"])
def test_scrfd_outputs_decode_to_boxes_and_landmarks_in_image_pixels(scrfd_path, shape_keyed):
    config = ModelConfig(detector=DetectorConfig(kind="scrfd", onnx_path=scrfd_path))
    if shape_keyed:  # SCRFD's outputs have no batch axis: the runner must not cut them to the batch size
        detector = ScrfdDetector(OnnxRunner(scrfd_path, "cpu", fixed_shapes=True), config.detector)
    else:
        detector = load_detector(config)
    image = np.zeros((1280, 960, 3), np.uint8)  # letterboxed into 640x640 at scale 1/2, 80 px from the left
    for _ in range(SHAPE_SESSION_AFTER):
        detector.detect_batch([image])
    faces = detector.detect_batch([image])[0]
    assert len(faces) == 1
    face = faces[0]
    assert face.score == pytest.approx(0.95)
    # Anchor centre (160, 192) at stride 16; distances (3, 4, 3, 5) strides; then back: less the offset, x 2.
    np.testing.assert_allclose(face.box, (np.array([112, 128, 208, 272]) - [80, 0, 80, 0]) * 2, atol=1e-3)
    expected_points = (np.array([160, 192]) + np.array([[-1, -1], [1, -1], [0, 0], [-1, 1], [1, 1]]) * 16 - [80, 0]) * 2
    np.testing.assert_allclose(face.landmarks, expected_points, atol=1e-3)


def test_scrfd_without_landmarks_is_refused_clearly(tmp_path):
    tensors = [np.zeros((cells * cells * 2, width), np.float32) for width in (1, 4) for cells in SCRFD_CELLS.values()]
    path = tmp_path / "scrfd_no_kps.onnx"
    _export(_FixedScrfd(tensors), path, torch.zeros(1, 3, 640, 640), [f"o{i}" for i in range(6)], False)
    detector = load_detector(ModelConfig(detector=DetectorConfig(kind="scrfd", onnx_path=path)))
    with pytest.raises(ValueError, match="9-output variant with landmarks"):
        detector.detect_batch([np.zeros((64, 64, 3), np.uint8)])


def test_arcface_extractor_reads_its_shape_and_normalises_like_insightface(tmp_path):
    module = _TinyArcFace()
    path = tmp_path / "arcface_test.onnx"
    _export(module, path, torch.zeros(2, 3, 112, 112), ["embedding"], dynamic_batch=True)
    extractor = load_extractor(ModelConfig(extractor=ExtractorConfig(kind="arcface", onnx_path=path)))
    assert (extractor.dim, extractor.input_size) == (512, 112)
    chips = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    vectors = extractor.extract(chips)
    with torch.no_grad():
        reference = module((torch.from_numpy(chips).permute(0, 3, 1, 2).float() - 127.5) / 127.5).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    assert extractor.confidence(np.array([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("side", [112, 128])
def test_the_detector_aligns_chips_of_the_size_the_arcface_file_declares(tmp_path, side):
    path = tmp_path / f"arcface_{side}.onnx"
    _export(_TinyArcFace(side), path, torch.zeros(2, 3, side, side), ["embedding"], dynamic_batch=True)
    config = ExtractorConfig(kind="arcface", onnx_path=path)
    geometry = geometry_for(config)
    extractor = load_extractor(ModelConfig(extractor=config))
    assert geometry.size == extractor.input_size == side
    assert geometry.model == extractor.name == "arcface_512.v1"
    np.testing.assert_allclose(geometry.template, extractor.template)
    np.testing.assert_allclose(geometry.template, ARCFACE_TEMPLATE_112 * side / 112)


def test_pipeline_runs_mtcnn_with_an_arcface_extractor(tmp_path, model_config, load_photo):
    path = tmp_path / "arcface_test.onnx"
    _export(_TinyArcFace(), path, torch.zeros(2, 3, 112, 112), ["embedding"], dynamic_batch=True)
    config = model_config.model_copy(update={"extractor": ExtractorConfig(kind="arcface", onnx_path=path)})
    pipeline = FacePipeline(load_detector(config), load_extractor(config))
    faces = pipeline.detect([load_photo("facerec_two_people.jpg")])[0]
    assert len(faces) == 2 and all(face.facen.shape == (512,) for face in faces)


def test_a_pluggable_model_needs_its_file():
    with pytest.raises(ValidationError, match="onnx_path"):
        DetectorConfig(kind="scrfd")
    with pytest.raises(ValidationError, match="onnx_path"):
        ExtractorConfig(kind="arcface")
