"""``GET|POST /v2/verify?face1=<source>&face2=<source>``."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request

from .. import params
from ..errors import BadParam
from ..schemas import VerifyResponse
from ..services import current
from ..sources import common_model, resolve, vector_for

router = APIRouter(tags=["verification"])


@router.api_route("/v2/verify", methods=["GET", "POST"], responses={200: {"model": VerifyResponse}},
                  summary="How alike two faces are")
async def verify(request: Request) -> dict:
    services = current()
    query = request.query_params
    threshold = None
    if query.get("threshold") is not None:
        threshold = params.number(query["threshold"], "threshold", 0.0, 1.0)
    first, second = await asyncio.gather(resolve(query.get("face1"), services, "face1"),
                                         resolve(query.get("face2"), services, "face2"))
    model = common_model(first, second, services)
    _, one = vector_for(first, model, services, "face1")
    _, other = vector_for(second, model, services, "face2")
    if one.size != other.size:
        raise BadParam(f"face1 is {one.size}-d and face2 {other.size}-d", "face2", query.get("face2"))
    calibration, recommended = services.model_calibration(model)
    confidence = float(calibration.confidence(float(np.dot(one, other))))
    threshold = recommended if threshold is None else threshold
    return {"confidence": round(confidence, 6), "verified": confidence >= threshold}
