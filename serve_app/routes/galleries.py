"""Galleries: list with counts, create, get, delete."""

from __future__ import annotations

from fastapi import APIRouter

from store.base import check_gallery_name

from ..schemas import GalleryInfo, GalleryList, GalleryName
from ..services import ServicesDep

router = APIRouter(tags=["galleries"])


@router.get("/v2/galleries", responses={200: {"model": GalleryList}}, summary="Every gallery with its size")
async def list_galleries(services: ServicesDep) -> dict:
    galleries = await services.in_thread(services.store.list_galleries)
    counts = await services.router.counts()
    return {"galleries": [{"name": g.name, "number_of_elements": counts.get(g.name, 0)} for g in galleries]}


@router.post("/v2/galleries/{gallery}", responses={200: {"model": GalleryName}}, summary="Create a gallery")
async def create_gallery(gallery: str, services: ServicesDep) -> dict:
    check_gallery_name(gallery)
    await services.in_thread(services.store.create_gallery, gallery)
    return {"name": gallery}


@router.get("/v2/galleries/{gallery}", responses={200: {"model": GalleryInfo}}, summary="A gallery and its size")
async def get_gallery(gallery: str, services: ServicesDep) -> dict:
    record = await services.in_thread(services.store.get_gallery, gallery)
    return {
        "name": gallery,
        "number_of_elements": await services.router.count(gallery),
        "model": services.gallery_model(record),
        "dim": record.dim,
    }


@router.delete("/v2/galleries/{gallery}", summary="Delete a gallery with all its faces")
async def delete_gallery(gallery: str, services: ServicesDep) -> dict:
    await services.in_thread(services.store.delete_gallery, gallery)
    await services.router.drop_gallery(gallery)
    return {}
