"""What every route needs, in one object: settings, store, cache, shard router, model handles.

Model calls map Serve's back-pressure to OVER_CAPACITY and a dead or slow model to EXTRACTION_ERROR;
store calls run in a worker thread so a commit's fsync never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from fastapi import Depends, Request

from facegrid.errors import actor_lost_errors
from index.router import ShardRouter
from models.extractor import ChipGeometry, calibration_for, calibration_of_model, geometry_for
from store.base import FaceStore, GalleryRecord
from store.cache import DetectionCache

from .config import DeploymentSettings, Settings
from .errors import ExtractionFailed, OverCapacity
from .stages import StageTraffic

log = logging.getLogger("facegrid")


def _serve_errors():
    """Serve's refusal of a full queue, and what a model call raises when its replica failed or is gone."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    lost = (*actor_lost_errors(), ray_errors.RayTaskError, serve_errors.DeploymentUnavailableError)
    return serve_errors.BackPressureError, lost


def admission_limit(detector: DeploymentSettings) -> int:
    """Photo requests one Ingress replica lets in at once: all the Detector could hold at its largest."""
    return max(detector.max_replicas, 1) * (detector.max_ongoing_requests + detector.max_queued_requests)


@dataclass
class Services:
    settings: Settings
    store: FaceStore
    cache: DetectionCache
    router: ShardRouter
    detector: Any  # DeploymentHandle of models.deployments.DetectorDeployment
    extractor: Any  # DeploymentHandle of models.deployments.ExtractorDeployment

    def __post_init__(self):
        models = self.settings.models
        # Read from the configs without loading a network: the extractors live in other replicas.
        self.geometries: list[ChipGeometry] = [geometry_for(extractor) for extractor in models.extractors]
        self.primary_model = self.geometries[0].model
        self.served_models = {
            geometry.model: calibration_for(extractor.kind, extractor.match_threshold)
            for geometry, extractor in zip(self.geometries, models.extractors)
        }
        self._backpressure, self._model_errors = _serve_errors()
        from ray.util import metrics

        self.over_capacity = metrics.Counter(
            "facegrid_over_capacity_total", "Requests answered 429 OVER_CAPACITY.", tag_keys=("deployment",)
        )
        # Admission at the door (serve_app.app.EdgeMiddleware): a photo request that the Detector could not
        # even queue is refused before FastAPI routes it, and before its body is read or decoded.
        self.admission_limit = admission_limit(self.settings.serve.detector)
        self.admitted = 0
        self.traffic = StageTraffic()

    def model_calibration(self, model: str | None):
        """(calibration, recommended threshold) of a model's vectors (None: the primary model's)."""
        return calibration_of_model(model or self.primary_model, self.served_models)

    def confidence(self, cosine: float, model: str | None = None) -> float:
        return float(self.model_calibration(model)[0].confidence(cosine))

    def gallery_model(self, gallery: GalleryRecord) -> str | None:
        """The model whose vectors the gallery holds; None while it is empty."""
        if gallery.model is not None or gallery.dim is None:
            return gallery.model
        return self.settings.models.unlabelled_gallery_model

    def try_admit(self) -> bool:
        """Take one of the Detector's places for the length of a request; False (and counted) when none is free."""
        if self.admitted >= self.admission_limit:
            self.over_capacity.inc(tags={"deployment": "Ingress"})
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    async def in_thread(self, function: Callable, *args):
        return await asyncio.to_thread(function, *args)

    async def call_model(self, method, request):
        try:
            return await asyncio.wait_for(method.remote(request), self.settings.serve.request_timeout_s)
        except self._backpressure:
            self.over_capacity.inc(tags={"deployment": getattr(method, "deployment_name", "model")})
            raise OverCapacity("the model queues are full; retry later") from None
        except asyncio.TimeoutError:
            raise ExtractionFailed("the models did not answer in time") from None
        except self._model_errors as error:
            log.warning("model call failed: %s", error)
            raise ExtractionFailed("the model replicas could not answer") from None


async def services_of(request: Request) -> Services:
    """The Services of the application serving ``request`` (the Ingress replica sets them on start).
    A coroutine, so that FastAPI calls it on the event loop: a plain function it would hand to a worker
    thread on every request."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise RuntimeError("facegrid services are not installed in this application")
    return services


ServicesDep = Annotated[Services, Depends(services_of)]
