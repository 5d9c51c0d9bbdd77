"""Faces in a gallery: add (one or many), get, patch meta, delete.

A face is written to the store first (durable, whole or not at all), then indexed. If indexing fails
the face is still acknowledged: it is in the store, and its shard picks it up when it rebuilds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request

from facegrid.errors import FacegridError
from index.errors import ShardUnavailable
from store.base import FaceRecord, check_gallery_name
from store.errors import StoreUnavailable

from .. import params
from ..bodies import json_body
from ..errors import BadParam, describe
from ..face_wire import face_object
from ..queries import AddFaceQuery
from ..schemas import AddFace, BulkAdd, BulkResults, Face, PatchFace
from ..services import Services, ServicesDep
from ..sources import resolve, vector_for_gallery

router = APIRouter(tags=["faces"])
log = logging.getLogger("facegrid")


async def _index(services, records: list[FaceRecord]) -> None:
    try:
        await services.router.add(records)
    except ShardUnavailable as error:
        log.warning("faces stored but not yet indexed (their shard will load them on restart): %s", error)


async def _store(services: Services, gallery: str, records: list[FaceRecord]) -> list[FacegridError | None]:
    """``store.add_faces``; when the store fails without saying whether the writes landed, the index is
    brought in line with it later (ShardRouter.refresh_later)."""
    try:
        return await services.in_thread(services.store.add_faces, records)
    except StoreUnavailable:
        services.router.refresh_later(gallery, [record.face_id for record in records])
        raise


@router.post(
    "/v2/galleries/{gallery}/faces/{face_id}",
    responses={200: {"model": Face}},
    summary="Add a face from a detection, a stored face or a raw facen",
)
async def add_face(
    gallery: str, face_id: str, request: Request, query: Annotated[AddFaceQuery, Query()], services: ServicesDep
) -> dict:
    check_gallery_name(gallery)
    number = params.face_id(face_id)
    body = await json_body(request, AddFace, services.settings.limits.max_body_bytes, required=False)
    source = body.source or query.source
    gallery_record = await services.in_thread(services.store.get_gallery, gallery)
    resolved = await resolve(source, services, "from")
    model, vector = vector_for_gallery(resolved, gallery_record, services, "from")
    record = FaceRecord(gallery, number, vector, body.meta, resolved.attributes, time.time(), model)
    (error,) = await _store(services, gallery, [record])
    if error is not None:
        raise error
    await _index(services, [record])
    return face_object(record, services.settings.limits.allow_return_facen)


@router.post(
    "/v2/galleries/{gallery}/faces",
    responses={200: {"model": BulkResults}},
    summary="(ext) Add many faces; one result per item",
)
async def add_faces(gallery: str, request: Request, services: ServicesDep) -> dict:
    limits = services.settings.limits
    check_gallery_name(gallery)
    body = await json_body(request, BulkAdd, limits.max_body_bytes)
    if len(body.faces) > limits.max_bulk_faces:
        raise BadParam(f"at most {limits.max_bulk_faces} faces per request", "faces", len(body.faces))
    gallery_record = await services.in_thread(services.store.get_gallery, gallery)

    async def prepare(position: int, item):
        param = f"faces.{position}"
        try:
            number = params.face_id(str(item.id), f"{param}.id")
            resolved = await resolve(item.source, services, f"{param}.from")
            model, vector = vector_for_gallery(resolved, gallery_record, services, f"{param}.from")
            return FaceRecord(gallery, number, vector, item.meta, resolved.attributes, time.time(), model)
        except FacegridError as error:
            return error

    prepared = await asyncio.gather(*(prepare(i, item) for i, item in enumerate(body.faces)))
    records = [p for p in prepared if isinstance(p, FaceRecord)]
    stored = iter(await _store(services, gallery, records))
    results, indexed = [], []
    for item in prepared:
        error = item if not isinstance(item, FaceRecord) else next(stored)
        if error is None:
            indexed.append(item)
            results.append(face_object(item, limits.allow_return_facen))
        else:
            results.append(describe(error)[1])
    if indexed:
        await _index(services, indexed)
    return {"results": results}


@router.get("/v2/galleries/{gallery}/faces/{face_id}", responses={200: {"model": Face}}, summary="A stored face")
async def get_face(gallery: str, face_id: str, services: ServicesDep) -> dict:
    record = await services.in_thread(services.store.get_face, gallery, params.face_id(face_id))
    return face_object(record, services.settings.limits.allow_return_facen)


@router.patch(
    "/v2/galleries/{gallery}/faces/{face_id}",
    responses={200: {"model": Face}},
    summary="Replace the listed meta keys of a face, keeping the others",
)
async def patch_face(gallery: str, face_id: str, request: Request, services: ServicesDep) -> dict:
    number = params.face_id(face_id)
    body = await json_body(request, PatchFace, services.settings.limits.max_body_bytes)
    record = await services.in_thread(services.store.update_meta, gallery, number, body.meta)
    try:
        await services.router.update_meta(gallery, number, record.meta)
    except ShardUnavailable as error:
        log.warning("meta stored but not yet indexed: %s", error)
    return face_object(record, services.settings.limits.allow_return_facen)


@router.delete("/v2/galleries/{gallery}/faces/{face_id}", summary="Delete a face")
async def delete_face(gallery: str, face_id: str, services: ServicesDep) -> dict:
    number = params.face_id(face_id)
    await services.in_thread(services.store.delete_face, gallery, number)
    await services.router.remove(gallery, number)
    return {}
