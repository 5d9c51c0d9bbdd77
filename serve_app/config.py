"""facegrid's settings: one pydantic-settings object, read from a YAML file and the environment.

Precedence, highest first: constructor arguments, ``FACEGRID_*`` environment variables (nested fields
with ``__``, e.g. ``FACEGRID_MODELS__DETECTOR__MIN_FACE_PX=40``), the YAML file named by ``--config`` or
``FACEGRID_CONFIG``, then the defaults, which run on one machine with nothing else installed.
Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

from models.config import ModelConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGRID_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the HTTP API listens on (FindFace: loopback).")
    port: int = Field(18411, ge=1, le=65535, description="Port of the /v2 API.")
    models: ModelConfig = Field(default_factory=ModelConfig, description="Detector, extractor, attributes.")


def load_settings(config_path: Path | None = None, **overrides) -> Settings:
    """Settings from the YAML file ``config_path`` (else ``FACEGRID_CONFIG``, else none), the environment
    and ``overrides``. Returns a plain ``Settings``, so it pickles across Ray processes."""
    path = config_path or os.environ.get("FACEGRID_CONFIG")
    if not path:
        return Settings(**overrides)
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class _WithYaml(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, **_unused):
            return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=Path(path))

    merged = _WithYaml(**overrides)
    return Settings.model_validate(merged.model_dump())
