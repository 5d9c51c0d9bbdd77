"""Set-up: pinned packages, hash checks, clear failures, and idempotence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import weights
from models.export import NETS, onnx_path, prepare_models
from models.nets.tfjs import WeightFormatError, read_weight_map
from models.weights import FACENET_PYTORCH, SetupError, WeightFile, WeightPackage, fetch_weights, weights_dir


def test_every_pinned_weight_file_is_present_with_its_hash(model_config):
    directory = weights_dir(model_config.data_dir)
    for package in weights.PACKAGES:
        for weight in package.files:
            assert weights.sha256_of(directory / weight.name) == weight.sha256


def test_a_second_setup_reuses_the_converted_models(model_config):
    before = {name: onnx_path(model_config.data_dir, name).stat().st_mtime_ns for name in NETS}
    messages = []
    prepare_models(model_config.data_dir, log=messages.append)
    assert not any(message.startswith(("fetching", "converting")) for message in messages)
    assert before == {name: onnx_path(model_config.data_dir, name).stat().st_mtime_ns for name in NETS}


def test_a_corrupted_weight_file_is_fetched_again(model_config, tmp_path):
    source = weights_dir(model_config.data_dir)
    target = weights_dir(tmp_path)
    target.mkdir(parents=True)
    for package in weights.PACKAGES:
        for weight in package.files:
            (target / weight.name).write_bytes((source / weight.name).read_bytes())
    (target / "pnet.pt").write_bytes(b"not the weights")
    fetch_weights(tmp_path, log=lambda message: None)
    assert weights.verified(target / "pnet.pt", FACENET_PYTORCH.files[0].sha256)


@pytest.mark.network
def test_a_wrong_hash_stops_setup_naming_the_file(tmp_path, monkeypatch):
    tampered = WeightPackage(
        "pypi", FACENET_PYTORCH.spec, (WeightFile("pnet.pt", "facenet_pytorch/data/pnet.pt", "0" * 64),)
    )
    monkeypatch.setattr(weights, "PACKAGES", (tampered,))
    with pytest.raises(SetupError, match=r"pnet\.pt .*expected 0{64}"):
        fetch_weights(tmp_path, log=lambda message: None)
    assert not (weights_dir(tmp_path) / "pnet.pt").exists()


def test_missing_npm_is_reported_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "PACKAGES", (weights.FACE_API,))
    monkeypatch.setattr(weights.shutil, "which", lambda name: None)
    with pytest.raises(SetupError, match="install Node.js and npm"):
        fetch_weights(tmp_path, log=lambda message: None)


def _manifest(tmp_path, entries, blob: bytes):
    (tmp_path / "m.bin").write_bytes(blob)
    (tmp_path / "m.json").write_text(json.dumps([{"paths": ["m.bin"], "weights": entries}]))
    return tmp_path / "m.json"


def test_tfjs_quantised_and_plain_tensors_decode_to_their_values(tmp_path):
    quantised = np.array([0, 1, 255], np.uint8)
    plain = np.array([1.5, -2.0], np.float32)
    path = _manifest(
        tmp_path,
        [
            {
                "name": "q",
                "shape": [3],
                "dtype": "float32",
                "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0},
            },
            {"name": "p", "shape": [2, 1], "dtype": "float32"},
        ],
        quantised.tobytes() + plain.tobytes(),
    )
    tensors = read_weight_map(path)
    np.testing.assert_allclose(tensors["q"], [-1.0, -0.5, 126.5])
    np.testing.assert_array_equal(tensors["p"], plain.reshape(2, 1))


def test_tfjs_shard_shorter_than_its_manifest_is_refused(tmp_path):
    path = _manifest(tmp_path, [{"name": "p", "shape": [4], "dtype": "float32"}], b"\0" * 8)
    with pytest.raises(WeightFormatError, match="ends inside tensor p"):
        read_weight_map(path)
