"""Face sources: ``detection:<id>``, ``face:<gallery>/<id>`` and (ext) ``facen:<base64>``.

Resolving one gives the vector and the features/attributes that travel with it when a face is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from store.errors import FaceNotFound, GalleryNotFound

from .errors import BadParam, SourceGalleryNotFound, SourceNotFound
from .faces import decode_facen
from .params import face_id
from .services import Services


@dataclass
class ResolvedSource:
    facen: np.ndarray
    features: dict = field(default_factory=dict)     # {"features": {...}, "attributes": {...}}


async def resolve(source: str | None, services: Services, param: str) -> ResolvedSource:
    if not source:
        raise BadParam(f"{param} is required: detection:<id>, face:<gallery>/<id> or facen:<base64>", param, "")
    kind, _, rest = source.partition(":")
    if kind == "detection" and rest:
        record = await services.cache.get(rest)
        if record is None:
            raise SourceNotFound(f"detection {rest!r} does not exist or has expired")
        return ResolvedSource(decode_facen(record["facen"], param),
                              {"features": record.get("features", {}), "attributes": record.get("attributes", {})})
    if kind == "face" and "/" in rest:
        gallery, _, raw_id = rest.rpartition("/")
        try:
            record = await services.in_thread(services.store.get_face, gallery, face_id(raw_id, param))
        except GalleryNotFound:
            raise SourceGalleryNotFound(f"gallery {gallery!r} does not exist") from None
        except FaceNotFound:
            raise SourceNotFound(f"face {raw_id} does not exist in gallery {gallery!r}") from None
        return ResolvedSource(record.facen, record.features)
    if kind == "facen" and rest:
        return ResolvedSource(decode_facen(rest, param))
    raise BadParam(f"{param} must be detection:<id>, face:<gallery>/<id> or facen:<base64>", param, source)
