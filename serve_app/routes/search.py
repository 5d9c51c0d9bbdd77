"""Listing and similarity search: ``GET /v2/galleries/<gallery>/faces`` and (ext) ``GET /v2/faces``.

Without ``looks_like`` a listing pages by id (keyset: the cursor holds the last id). With it, the shards
return the exact top results among faces passing the filters; the cursor holds how many were already
returned, and the next page asks the shards for that many more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from starlette.datastructures import QueryParams

from store.errors import GalleryNotFound

from .. import params, queries
from ..errors import BadParam
from ..face_wire import face_object
from ..queries import ListQuery, SearchQuery
from ..schemas import FaceList
from ..services import Services, ServicesDep
from ..sources import ResolvedSource, resolve, vector_for_gallery

router = APIRouter(tags=["search"])


def _sort(query: ListQuery, searching: bool) -> str:
    sort = query.sort or ("-confidence" if searching else "-id")
    if sort == "-confidence" and not searching:
        raise BadParam("sort must be id or -id without looks_like", "sort", sort)
    return sort


async def _hits(
    services: Services, gallery: str, source: ResolvedSource, top_k: int, face_filter, threshold: float | None
) -> list[tuple[str, int, float]]:
    """(gallery, face id, confidence) of the gallery's best matches: the source's vector of the gallery's
    model, and that model's calibration, so galleries of different models rank on one scale."""
    record = await services.in_thread(services.store.get_gallery, gallery)
    model, vector = vector_for_gallery(source, record, services, "looks_like")
    calibration = services.model_calibration(model)[0]
    min_cosine = -np.inf if threshold is None else float(calibration.cosine_for(threshold))
    found = await services.router.search(gallery, vector, top_k, face_filter, min_cosine)
    return [(gallery, face_id, float(calibration.confidence(score))) for face_id, score in found]


async def _render(services: Services, hits: Sequence[tuple[str, int, float | None]]) -> list[dict]:
    by_gallery: dict[str, list[int]] = {}
    for gallery, face_id, _ in hits:
        by_gallery.setdefault(gallery, []).append(face_id)
    records = {}
    for gallery, ids in by_gallery.items():
        for face_id, record in (await services.in_thread(services.store.get_faces, gallery, ids)).items():
            records[(gallery, face_id)] = record
    allow = services.settings.limits.allow_return_facen
    # A face deleted between the index answer and the store read is left out rather than half-shown.
    return [face_object(records[(g, i)], allow, confidence) for g, i, confidence in hits if (g, i) in records]


async def _search(services: Services, galleries: list[str], query: ListQuery, raw: QueryParams) -> dict:
    limits = services.settings.limits
    limit = query.page_size(limits.default_limit, limits.max_limit)
    sort = _sort(query, searching=True)
    cursor = params.decode_cursor(query.page, ["offset"])
    offset = int(cursor["offset"]) if cursor else 0
    if not 0 <= offset <= 100_000:
        raise BadParam("page is not a cursor this server issued", "page", query.page)
    source = await resolve(query.looks_like, services, "looks_like")
    face_filter = queries.face_filter(query, raw)
    per_gallery = await asyncio.gather(
        *(_hits(services, g, source, offset + limit, face_filter, query.threshold) for g in galleries)
    )
    hits = sorted((hit for part in per_gallery for hit in part), key=lambda hit: -hit[2])
    page = hits[offset : offset + limit]
    more = len(hits) >= offset + limit  # the shards had at least this many: there may be more
    if sort != "-confidence":
        page.sort(key=lambda hit: (hit[1], hit[0]), reverse=sort == "-id")
    return {
        "faces": await _render(services, page),
        "next_page": params.encode_cursor({"offset": offset + limit}) if more and page else None,
    }


@router.get(
    "/v2/galleries/{gallery}/faces",
    responses={200: {"model": FaceList}},
    summary="List a gallery's faces by id, or search it by similarity (looks_like)",
    description=queries.META_FILTERS_TEXT,
)
async def list_faces(
    gallery: str, request: Request, query: Annotated[ListQuery, Query()], services: ServicesDep
) -> dict:
    if query.looks_like is not None:
        return await _search(services, [gallery], query, request.query_params)
    limits = services.settings.limits
    limit = query.page_size(limits.default_limit, limits.max_limit)
    sort = _sort(query, searching=False)
    face_filter = queries.face_filter(query, request.query_params)
    if query.threshold is not None:
        raise BadParam("threshold applies to a search (looks_like)", "threshold", str(query.threshold))
    cursor = params.decode_cursor(query.page, ["after", "sort"])
    if cursor and cursor["sort"] != sort:
        raise BadParam("page was issued for another sort", "page", query.page)
    after = params.face_id(str(cursor["after"]), "page") if cursor else None
    await services.in_thread(services.store.get_gallery, gallery)
    ids = await services.router.list_ids(gallery, face_filter, after, limit + 1, sort == "-id")
    page, more = ids[:limit], len(ids) > limit
    faces = await _render(services, [(gallery, face_id, None) for face_id in page])
    next_page = params.encode_cursor({"after": page[-1], "sort": sort}) if more else None
    return {"faces": faces, "next_page": next_page}


@router.get(
    "/v2/faces",
    responses={200: {"model": FaceList}},
    summary="(ext) Search several galleries at once (gallery repeatable; none: all)",
    description=queries.META_FILTERS_TEXT,
)
async def search_galleries(request: Request, query: Annotated[SearchQuery, Query()], services: ServicesDep) -> dict:
    names = query.gallery or [g.name for g in await services.in_thread(services.store.list_galleries)]
    for name in names:
        try:
            await services.in_thread(services.store.get_gallery, name)
        except GalleryNotFound:
            raise GalleryNotFound(name) from None  # GALLERY_NOT_FOUND, as for a gallery in the path
    return await _search(services, names, query, request.query_params)
