"""Ray Serve deployments of the models: thin wrappers that batch requests from many clients.

``DetectorDeployment`` runs the pipeline's detection and ``cut_chips`` (the image stays here; only small
chips travel on). ``ExtractorDeployment`` runs the pipeline's ``describe`` on them. Both load their ONNX
sessions once in ``__init__`` and group concurrent calls with ``@serve.batch``; batch size and wait
are hot-tunable through ``user_config``, and each request says how busy its caller is (``LoadAwareBatching``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve
from ray.util import metrics

from .config import ModelConfig
from .detector import Detection
from .extractor import geometry_for
from .pipeline import Descriptions, FaceChips, cut_chips, describe, load_attributes, load_detector, load_extractors


@dataclass
class DetectRequest:
    image: np.ndarray  # HxWx3 uint8 RGB
    extractor_chips: bool = False  # cut chips for every extractor served
    attribute_chips: bool = False  # cut chips for the attribute networks
    coming: int = 1  # the caller's requests yet to send a call here, this one included


@dataclass
class DetectedFaces:
    detections: list[Detection]
    chips: FaceChips = field(default_factory=FaceChips)


@dataclass
class DescribeRequest:
    chips: FaceChips
    coming: int = 1  # the caller's requests yet to send a call here, this one included


BATCH_SIZE_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64]
# Until the app builder's user_config arrives (serve_app.app.deployment_options sets both from the settings).
DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_S = 16, 0.05


def _batch_size_histogram() -> metrics.Histogram:
    return metrics.Histogram(
        "facegrid_model_batch_size",
        "Requests per model batch.",
        boundaries=BATCH_SIZE_BOUNDARIES,
        tag_keys=("deployment",),
    )


class LoadAwareBatching:
    """Fits a ``@serve.batch`` method's batching to the caller's load, one request at a time.

    Replicas that share cores with the ingress and the HTTP proxy see requests arrive one by one even under
    load, so a short fixed wait makes batches of about one request (docs/benchmarks.md), and a longer fixed
    wait fills batches but holds a lone request for the whole wait. So each call carries how many of its
    caller's requests have yet to send their call here, itself included (serve_app.stages). With the calls
    already queued here, that is the batch worth waiting for: the batch waits (up to ``batch_wait_timeout_s``)
    only when others are coming, and closes as soon as they have arrived. Calls already sent are not counted
    by the caller: a call that has run and is on its way back would otherwise be waited for in vain.
    serve.batch reads both settings when a batch's first call arrives.
    """

    def __init__(self, method: Any, deployment: str):  # method: a @serve.batch method (it has set_max_batch_size)
        self.method, self.deployment = method, deployment
        self.max_batch_size, self.wait_s = DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_S
        self.batch_size_set = DEFAULT_MAX_BATCH_SIZE
        self.queued: set[int] = set()  # ids of the calls that have arrived and are not in a running batch
        self.batches_by_size: Counter[int] = Counter()
        self.batch_sizes = _batch_size_histogram()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.max_batch_size = int(user_config.get("max_batch_size", self.max_batch_size))
        self.wait_s = float(user_config.get("batch_wait_timeout_s", self.wait_s))

    @contextlib.contextmanager
    def arriving(self, call: DetectRequest | DescribeRequest) -> Iterator[None]:
        """Around one call's wait for its batch. A call cancelled while queued (its caller timed out or hung
        up) never reaches ``run``: serve.batch drops it, so it leaves the count here."""
        expected = max(1, min(self.max_batch_size, call.coming + len(self.queued)))
        if expected != self.batch_size_set:  # the setter also re-checks the replica's config
            self.method.set_max_batch_size(expected)
            self.batch_size_set = expected
        self.method.set_batch_wait_timeout_s(self.wait_s if expected > 1 else 0.0)
        self.queued.add(id(call))
        try:
            yield
        finally:
            self.queued.discard(id(call))

    async def run(self, work: Callable[[list[Any]], list[Any]], requests: list[Any]) -> list[Any]:
        """``work(requests)`` in a worker thread (the models are CPU-bound; the event loop keeps answering)."""
        self.queued.difference_update(id(request) for request in requests)
        self.batch_sizes.observe(len(requests), tags={"deployment": self.deployment})
        self.batches_by_size[len(requests)] += 1
        return await asyncio.to_thread(work, requests)


class _BatchedModel:
    """What both model deployments answer besides their model calls."""

    batching: LoadAwareBatching

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.batching.reconfigure(user_config)

    def ping(self) -> bool:
        return True

    def batch_counts(self) -> dict[int, int]:
        """Batches run so far, by size (the Prometheus histogram's raw counts, for bench.serving)."""
        return dict(self.batching.batches_by_size)


@serve.deployment(name="Detector")
class DetectorDeployment(_BatchedModel):
    def __init__(self, config: ModelConfig):
        self.detector = load_detector(config)
        self.geometries = [geometry_for(extractor) for extractor in config.extractors]
        self.batching = LoadAwareBatching(self._detect_batch, "Detector")

    def _run(self, requests: list[DetectRequest]) -> list[DetectedFaces]:
        found = self.detector.detect_batch([r.image for r in requests])
        return [
            DetectedFaces(
                detections,
                cut_chips(
                    request.image,
                    detections,
                    self.geometries if request.extractor_chips else (),
                    request.attribute_chips,
                ),
            )
            for request, detections in zip(requests, found)
        ]

    async def detect(self, request: DetectRequest) -> DetectedFaces:
        with self.batching.arriving(request):
            return await self._detect_batch(request)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _detect_batch(self, requests: list[DetectRequest]) -> list[DetectedFaces]:
        return await self.batching.run(self._run, requests)


@serve.deployment(name="Extractor")
class ExtractorDeployment(_BatchedModel):
    def __init__(self, config: ModelConfig):
        self.extractors = {extractor.name: extractor for extractor in load_extractors(config)}
        self.attribute_model = load_attributes(config)
        self.batching = LoadAwareBatching(self._describe_batch, "Extractor")

    def _run(self, requests: list[DescribeRequest]) -> list[Descriptions]:
        return describe(self.extractors, self.attribute_model, [r.chips for r in requests])

    async def describe(self, request: DescribeRequest) -> Descriptions:
        with self.batching.arriving(request):
            return await self._describe_batch(request)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _describe_batch(self, requests: list[DescribeRequest]) -> list[Descriptions]:
        return await self.batching.run(self._run, requests)
