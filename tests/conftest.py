"""Shared fixtures: the set-up models (run once per session) and the development photos.

Tests that need ../shared/faces skip cleanly where it is absent; nothing from it is copied here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.config import ModelConfig
from models.export import prepare_models
from models.images import read_image
from models.pipeline import load_pipeline
from serve_app.config import load_settings

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"


@pytest.fixture(scope="session")
def model_config() -> ModelConfig:
    config = load_settings().models
    prepare_models(config.data_dir, log=lambda message: None)
    return config


@pytest.fixture(scope="session")
def pipeline(model_config):
    return load_pipeline(model_config)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (SHARED_FACES / "labels.csv").is_file():
        pytest.skip("../shared/faces is not present")
    return SHARED_FACES


@pytest.fixture(scope="session")
def labels(faces_dir) -> list[dict]:
    return list(csv.DictReader(open(faces_dir / "labels.csv", newline="")))


@pytest.fixture(scope="session")
def load_photo(faces_dir):
    def load(name: str) -> np.ndarray:
        return read_image(faces_dir / name)
    return load


@pytest.fixture(scope="session")
def character_crops(faces_dir) -> list[tuple[str, Path]]:
    """The 40 face-api.js 150x150 crops of eight characters, five each: (identity, path)."""
    rows = csv.DictReader(open(faces_dir / "labels.csv", newline=""))
    return [(row["identity"], faces_dir / row["file"]) for row in rows
            if row["file"].startswith("faceapi_") and row["identity"] not in ("multi", "unknown")]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (start-ups are slow on 2 cores)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="facegrid-tests", logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()
