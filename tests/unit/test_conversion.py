"""The ported networks compute what their sources compute."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.export import NETS, build_torch, onnx_path
from models.nets.expression import EXPRESSION_LABELS
from models.nets.tfjs import read_weight_map
from models.runtime import OnnxRunner, TorchRunner
from models.weights import weights_dir
from tests.unit.tf_reference import dlib_descriptor


@pytest.mark.parametrize("name", sorted(NETS))
def test_onnx_graph_matches_its_torch_module(model_config, name):
    spec = NETS[name]
    height, width = spec.input_hw or (97, 131)
    batch = np.random.default_rng(0).uniform(0, 255, (3, 3, height, width)).astype(np.float32)
    expected = TorchRunner(build_torch(model_config.data_dir, name))(batch)
    actual = OnnxRunner(onnx_path(model_config.data_dir, name), "cpu")(batch)
    assert len(actual) == len(spec.outputs)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_dlib_port_matches_an_independent_tensorflow_layout_reference(model_config, character_crops):
    crops = np.stack([np.asarray(Image.open(path).convert("RGB")) for _, path in character_crops[:2]])
    reference = dlib_descriptor(
        crops, read_weight_map(weights_dir(model_config.data_dir) / "face_recognition_model-weights_manifest.json")
    )
    ported = OnnxRunner(onnx_path(model_config.data_dir, "dlib_resnet"), "cpu")(
        crops.transpose(0, 3, 1, 2).astype(np.float32)
    )[0]
    np.testing.assert_allclose(ported, reference, rtol=1e-3, atol=1e-4)


def test_dlib_port_keeps_dlibs_own_operating_point(model_config, character_crops):
    """dlib's published rule: raw descriptors of one person lie within Euclidean 0.6 of each other."""
    runner = OnnxRunner(onnx_path(model_config.data_dir, "dlib_resnet"), "cpu")
    crops = np.stack([np.asarray(Image.open(path).convert("RGB")) for _, path in character_crops])
    raw = runner(crops.transpose(0, 3, 1, 2).astype(np.float32))[0]
    names = np.array([name for name, _ in character_crops])
    distance = np.linalg.norm(raw[:, None] - raw[None], axis=2)
    upper = np.triu_indices(len(names), 1)
    same = names[upper[0]] == names[upper[1]]
    accuracy = ((distance[upper] < 0.6) == same).mean()
    assert accuracy >= 0.98


def _as_faceapi_batch(path) -> np.ndarray:
    """face-api.js's own preprocessing for its tests: pad to a centred square with black, resize to 112."""
    image = np.asarray(Image.open(path).convert("RGB"))
    height, width = image.shape[:2]
    side = max(height, width)
    canvas = np.zeros((side, side, 3), np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = image
    resized = np.asarray(Image.fromarray(canvas).resize((112, 112), Image.Resampling.BILINEAR))
    return resized[None].transpose(0, 3, 1, 2).astype(np.float32)


@pytest.mark.parametrize(
    "photo, expression, gender, ages",
    [
        ("faceapi_test_angry_cropped.jpg", "angry", 0, (36, 42)),
        ("faceapi_test_surprised_cropped.jpg", "surprised", 1, (24, 28)),
    ],
)
def test_attribute_ports_reproduce_face_api_reference_outputs(model_config, faces_dir, photo, expression, gender, ages):
    """face-api.js's own tests expect these results from these two photos (../shared/faces/attributes.csv)."""
    batch = _as_faceapi_batch(faces_dir / photo)
    (probabilities,) = OnnxRunner(onnx_path(model_config.data_dir, "expression"), "cpu")(batch)
    age, gender_probabilities = OnnxRunner(onnx_path(model_config.data_dir, "age_gender"), "cpu")(batch)
    assert probabilities[0][EXPRESSION_LABELS.index(expression)] > 0.95
    assert gender_probabilities[0].argmax() == gender
    assert ages[0] <= age[0] <= ages[1]
