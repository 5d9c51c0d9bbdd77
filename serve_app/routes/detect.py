"""``POST /v2/detect`` and ``GET /v2/detect/<id>``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request

from models.attributes import ATTRIBUTE_NAMES
from models.attributes import INPUT_SIZE as ATTRIBUTE_SIZE
from models.deployments import DescribeRequest, DetectRequest
from models.pipeline import FaceChips
from store.cache import find_detection, new_detection_id

from .. import images
from ..errors import BadParam, NotImplementedHere, RouteNotFound
from ..face_wire import encode_facen
from ..queries import DetectQuery
from ..schemas import DetectResponse, FaceDetection
from ..services import Services, ServicesDep
from ..stages import DETECTOR, EXTRACTOR, Journey

router = APIRouter(tags=["detection"])


def _bbox(box: np.ndarray, width: int, height: int, offset=(0, 0)) -> dict:
    left, top, right, bottom = box.tolist()
    dx, dy = offset
    return {
        "left": int(round(max(left, 0) + dx)),
        "top": int(round(max(top, 0) + dy)),
        "right": int(round(min(right, width) + dx)),
        "bottom": int(round(min(bottom, height) + dy)),
    }


@dataclass(frozen=True)
class DetectOptions:
    """The query of one detect request, read and checked before anything else happens."""

    detector: str
    want_facen: bool
    return_facen: bool
    features_asked: frozenset
    attributes_asked: frozenset
    autorotate: bool
    with_landmarks: bool
    roi: str | None

    @property
    def wants_attributes(self) -> bool:
        return bool(self.features_asked or self.attributes_asked)

    @property
    def wants_vectors(self) -> bool:
        return self.want_facen or self.return_facen

    @property
    def model_stages(self) -> tuple[str, ...]:
        return ((DETECTOR,) if self.detector == "nnd" else ()) + (
            (EXTRACTOR,) if self.wants_vectors or self.wants_attributes else ()
        )

    @classmethod
    def read(cls, query: DetectQuery, settings) -> "DetectOptions":
        """The options of ``query``, with the checks that need this deployment's settings or two parameters."""
        if query.return_facen and not settings.limits.allow_return_facen:
            raise BadParam("return_facen is not allowed by this server's configuration", "return_facen", "true")
        features = frozenset(name for name in ATTRIBUTE_NAMES if getattr(query, name))
        attributes = frozenset(query.attribute)
        both = features & attributes
        if both:
            raise BadParam("an attribute was asked both as a flag and as attribute=", "attribute", sorted(both)[0])
        options = cls(
            query.detector,
            query.facen,
            query.return_facen,
            features,
            attributes,
            query.autorotate,
            query.landmarks,
            query.roi,
        )
        if options.wants_attributes and not settings.models.attributes:
            raise NotImplementedHere("this deployment runs without the attribute networks (models.attributes=false)")
        return options


@router.post(
    "/v2/detect",
    responses={200: {"model": DetectResponse}},
    summary="Find faces in a photo; optionally extract feature vectors and attributes",
)
async def detect(request: Request, query: Annotated[DetectQuery, Query()], services: ServicesDep) -> dict:
    options = DetectOptions.read(query, services.settings)
    with services.traffic.journey(options.model_stages) as journey:
        return await _detect(request, services, options, journey)


async def _detect(request: Request, services: Services, options: DetectOptions, journey: Journey) -> dict:
    settings = services.settings
    data = await images.image_bytes(request, settings.limits, settings.url_fetch)
    # Decoding takes milliseconds of CPU; off the event loop, refusals and other requests are not held up.
    decoded = await services.in_thread(images.decode, data, settings.limits)
    rgb = decoded.rgb
    height, width = rgb.shape[:2]
    roi = images.clip_roi(options.roi, width, height)
    offset = (0, 0)
    if roi is not None:
        rgb, offset = rgb[roi[1] : roi[3], roi[0] : roi[2]], (roi[0], roi[1])

    orientation = decoded.orientation
    if options.detector == "normalized":
        boxes = [(np.array([0, 0, rgb.shape[1], rgb.shape[0]], np.float32), 1.0, None)]
        chips = FaceChips(
            {g.model: images.chip(rgb, g.size)[None] for g in services.geometries} if options.wants_vectors else {},
            images.chip(rgb, ATTRIBUTE_SIZE)[None] if options.wants_attributes else None,
        )
    else:
        turns = (0, 1, 2, 3) if options.autorotate else (0,)
        candidates = [images.rotated(rgb, t) for t in turns]
        # Batching hint: each request yet to call the Detector will send as many calls as this one.
        coming = journey.calling(DETECTOR) * len(candidates)
        found = await asyncio.gather(
            *(
                services.call_model(
                    services.detector.detect,
                    DetectRequest(candidate, options.wants_vectors, options.wants_attributes, coming),
                )
                for candidate in candidates
            )
        )
        # With autorotate the orientation with the most (then the most confident) faces wins.
        best = max(
            range(len(turns)), key=lambda i: (len(found[i].detections), sum(d.score for d in found[i].detections), -i)
        )
        if options.autorotate:
            rgb, orientation = candidates[best], images.ORIENTATION_OF_TURNS[turns[best]]
            offset = (0, 0) if turns[best] else offset
        result = found[best]
        boxes = [(d.box, d.score, d.landmarks) for d in result.detections]
        chips = result.chips

    facens: dict[str, np.ndarray] = {}
    attributes: list = []
    if boxes and (options.wants_vectors or options.wants_attributes):
        described = await services.call_model(
            services.extractor.describe, DescribeRequest(chips, journey.calling(EXTRACTOR))
        )
        facens, attributes = described.facens, described.attributes
    else:
        journey.passed(EXTRACTOR)  # no faces, or no vectors asked: no call

    faces, cached = [], {}
    primary = services.primary_model
    for index, (box, score, landmarks) in enumerate(boxes):
        face: dict = {"bbox": _bbox(box, rgb.shape[1], rgb.shape[0], offset), "detection_score": round(score, 5)}
        if options.features_asked:
            face["features"] = attributes[index].features(options.features_asked)
        if options.attributes_asked:
            face["attributes"] = attributes[index].attributes(options.attributes_asked)
        if options.with_landmarks and landmarks is not None:
            face["landmarks"] = [[round(float(x) + offset[0], 2), round(float(y) + offset[1], 2)] for x, y in landmarks]
        if options.want_facen:
            face["id"] = new_detection_id()
            # The primary model's vector where every client looks for it; the other models' beside it.
            cached[face["id"]] = {
                **face,
                "facen": encode_facen(facens[primary][index]),
                "model": primary,
                "facens": {
                    model: encode_facen(vectors[index]) for model, vectors in facens.items() if model != primary
                },
            }
        if options.return_facen:
            face["facen"] = encode_facen(facens[primary][index])
        faces.append(face)
    if cached:
        await services.cache.put_many(cached, settings.cache.ttl_s)
    return {"orientation": orientation, "faces": faces}


@router.get(
    "/v2/detect/{detection_id}",
    responses={200: {"model": FaceDetection}},
    summary="A cached detection (made with facen=true)",
)
async def get_detection(detection_id: str, services: ServicesDep) -> dict:
    record = await find_detection(services.cache, detection_id)
    if record is None:
        raise RouteNotFound(f"detection {detection_id[:40]!r} does not exist or has expired")
    face = {key: value for key, value in record.items() if key not in ("facen", "facens", "model")}
    face["id"] = detection_id
    if services.settings.limits.allow_return_facen:
        face["facen"] = record["facen"]
    return face
