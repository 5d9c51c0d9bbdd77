"""Face sources: ``detection:<id>``, ``face:<gallery>/<id>`` and (ext) ``facen:<base64>``.

Resolving one gives its vectors, each labelled with the model that made it (a detection holds one per
extractor served; a raw facen's model is unknown), and the features/attributes that travel with it when
a face is added. ``vector_for`` then takes the one a gallery's model can be compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from store.base import GalleryRecord
from store.cache import find_detection
from store.errors import FaceNotFound, GalleryNotFound

from .errors import BadParam, SourceGalleryNotFound, SourceNotFound
from .face_wire import decode_facen
from .params import face_id
from .services import Services

# The shape of a source, for the query models and the OpenAPI document; ``resolve`` reads the parts (an id
# of another shape than the server issues is SOURCE_NOT_FOUND there, not BAD_PARAM, like any unknown one).
SOURCE_PATTERN = r"^(detection:|face:[\s\S]+/|facen:)[\s\S]+$"


@dataclass
class ResolvedSource:
    facens: dict[str | None, np.ndarray]  # model (None: unknown) -> unit vector
    attributes: dict = field(default_factory=dict)  # both styles, as FaceRecord.attributes
    text: str = ""  # the source as given, for errors

    @property
    def models(self) -> set[str]:
        return {model for model in self.facens if model is not None}


async def resolve(source: str | None, services: Services, param: str) -> ResolvedSource:
    if not source:
        raise BadParam(f"{param} is required: detection:<id>, face:<gallery>/<id> or facen:<base64>", param, "")
    kind, _, rest = source.partition(":")
    if kind == "detection" and rest:
        record = await find_detection(services.cache, rest)
        if record is None:
            raise SourceNotFound(f"detection {rest[:40]!r} does not exist or has expired")
        # Records cached before vectors carried their model hold the model of unlabelled galleries.
        primary = record.get("model", services.settings.models.unlabelled_gallery_model)
        facens = {primary: decode_facen(record["facen"], param)}
        facens.update({model: decode_facen(text, param) for model, text in record.get("facens", {}).items()})
        return ResolvedSource(
            facens, {"features": record.get("features", {}), "attributes": record.get("attributes", {})}, source
        )
    if kind == "face" and "/" in rest:
        gallery, _, raw_id = rest.rpartition("/")
        number = face_id(raw_id, param)

        def read(store=services.store):  # the face and its gallery's model, in one trip to a thread
            return store.get_gallery(gallery), store.get_face(gallery, number)

        try:
            gallery_record, record = await services.in_thread(read)
        except GalleryNotFound:
            raise SourceGalleryNotFound(f"gallery {gallery!r} does not exist") from None
        except FaceNotFound:
            raise SourceNotFound(f"face {raw_id} does not exist in gallery {gallery!r}") from None
        return ResolvedSource({services.gallery_model(gallery_record): record.facen}, record.attributes, source)
    if kind == "facen" and rest:
        return ResolvedSource({None: decode_facen(rest, param)}, text=source)
    raise BadParam(f"{param} must be detection:<id>, face:<gallery>/<id> or facen:<base64>", param, source)


def vector_for(
    source: ResolvedSource, model: str | None, services: Services, param: str
) -> tuple[str | None, np.ndarray]:
    """(its model, the vector) of ``source`` to compare with vectors of ``model``; None: any model, the
    primary one preferred (an empty gallery, or a comparison of two sources). A raw facen, whose model is
    unknown, is taken as a vector of ``model``, or of the primary model (what return_facen gives) where
    any will do; its length is checked where it is compared."""
    if model is None:
        known = source.models
        model = services.primary_model if services.primary_model in known or not known else None
        if model is None and len(known) == 1:
            model = next(iter(known))
    if model in source.facens:
        return model, source.facens[model]
    if None in source.facens:
        return model, source.facens[None]
    served = ", ".join(sorted(source.models))
    raise BadParam(
        f"{param} holds vectors of {served}, not of {model}, the model this gallery was filled with"
        + (
            ""
            if model in services.served_models
            else f"; this deployment does not run {model} (models.extra_extractors)"
        ),
        param,
        source.text,
    )


def vector_for_gallery(
    source: ResolvedSource, gallery: GalleryRecord, services: Services, param: str
) -> tuple[str | None, np.ndarray]:
    """(its model, the vector) of ``source`` to compare with, add to or search ``gallery``: of the gallery's
    model, and of its vectors' length (BAD_PARAM naming ``param`` otherwise)."""
    model, vector = vector_for(source, services.gallery_model(gallery), services, param)
    if gallery.dim is not None and vector.size != gallery.dim:
        raise BadParam(
            f"gallery {gallery.name!r} holds {gallery.dim}-d vectors, {param} is {vector.size}-d",
            param,
            f"dim {vector.size}",
        )
    return model, vector


def common_model(first: ResolvedSource, second: ResolvedSource, services: Services) -> str | None:
    """The model two sources are compared in: the primary one where both can be, else one they share
    (a raw facen goes with any); None where both are raw facens."""
    both_known = bool(first.models and second.models)
    candidates = first.models & second.models if both_known else first.models | second.models
    if both_known and not candidates:
        raise BadParam(
            f"face1 holds vectors of {', '.join(sorted(first.models))} and face2 of "
            f"{', '.join(sorted(second.models))}: faces of different models cannot be compared",
            "face2",
            second.text,
        )
    if not candidates:
        return None
    return services.primary_model if services.primary_model in candidates else sorted(candidates)[0]
