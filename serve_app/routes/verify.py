"""``GET|POST /v2/verify?face1=<source>&face2=<source>``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from ..errors import BadParam
from ..queries import VerifyQuery
from ..schemas import VerifyResponse
from ..services import ServicesDep
from ..sources import common_model, resolve, vector_for

router = APIRouter(tags=["verification"])


@router.get(
    "/v2/verify",
    responses={200: {"model": VerifyResponse}},
    summary="How alike two faces are",
    operation_id="verify_v2_verify_get",
)
@router.post(
    "/v2/verify",
    responses={200: {"model": VerifyResponse}},
    summary="How alike two faces are",
    operation_id="verify_v2_verify_post",
)
async def verify(query: Annotated[VerifyQuery, Query()], services: ServicesDep) -> dict:
    first, second = await asyncio.gather(
        resolve(query.face1, services, "face1"), resolve(query.face2, services, "face2")
    )
    model = common_model(first, second, services)
    _, one = vector_for(first, model, services, "face1")
    _, other = vector_for(second, model, services, "face2")
    if one.size != other.size:
        raise BadParam(f"face1 is {one.size}-d and face2 {other.size}-d", "face2", query.face2)
    calibration, recommended = services.model_calibration(model)
    confidence = float(calibration.confidence(float(np.dot(one, other))))
    threshold = recommended if query.threshold is None else query.threshold
    return {"confidence": round(confidence, 6), "verified": confidence >= threshold}
