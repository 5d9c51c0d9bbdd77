"""The query strings of the /v2 routes as typed models.

Routes take them as FastAPI dependencies (``Annotated[ListQuery, Query()]``), so what is parsed and what
the OpenAPI document lists are one thing. A value a model refuses is a BAD_PARAM naming the parameter
(serve_app/handlers.py maps FastAPI's validation error). Two things no model can say are read here too:
the meta filters, whose field is part of the parameter's name, and FindFace's comma lists.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field
from starlette.datastructures import QueryParams

from index.filters import FaceFilter
from models.attributes import ATTRIBUTE_NAMES
from store.base import GALLERY_NAME, MAX_FACE_ID

from .errors import BadParam
from .sources import SOURCE_PATTERN

TRUE_WORDS = ("1", "yes", "true", "on")
FALSE_WORDS = ("0", "no", "false", "off")


def _flag(value):
    # FindFace's words only: pydantic's bool would also take t/f/y/n, which no FindFace client sends.
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"must be one of {'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")


def _comma_list(value):
    """A parameter given repeatedly and/or as a comma list, as one list."""
    if isinstance(value, (list, tuple)):
        return [item.strip() for raw in value for item in str(raw).split(",") if item.strip()]
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]
FaceIdValue = Annotated[int, Field(ge=0, le=MAX_FACE_ID)]
Source = Annotated[
    str,
    Field(
        pattern=SOURCE_PATTERN,
        description=("detection:<id>, face:<gallery>/<id> or (ext) facen:<base64 of float32 little-endian>"),
    ),
]
Threshold = Annotated[float, Field(ge=0, le=1)]
Attribute = Literal[ATTRIBUTE_NAMES]  # type: ignore[valid-type]  # the names come from models.attributes, one list
Sort = Literal["id", "-id", "-confidence"]


class DetectQuery(BaseModel):
    detector: Literal["nnd", "normalized"] = Field(
        "nnd", description="nnd: find faces; normalized: the body is an aligned face crop."
    )
    facen: Flag = Field(False, description="Extract feature vectors and cache the detection (faces get an id).")
    return_facen: Flag = Field(False, description="Put facen in the answer (only where limits.allow_return_facen).")
    gender: Flag = Field(False, description="Gender in features (old style).")
    age: Flag = Field(False, description="Age in features (old style).")
    emotions: Flag = Field(False, description="Emotions in features (old style).")
    attribute: Annotated[list[Attribute], BeforeValidator(_comma_list)] = Field(
        [], description="Attributes under attributes (new style; repeatable or a comma list); not also asked as a flag."
    )
    autorotate: Flag = Field(False, description="Also try the photo turned by 90, 180 and 270 degrees.")
    roi: str | None = Field(
        None,
        pattern=r"^\d{1,5},\d{1,5},\d{1,5},\d{1,5}$",
        description="left,top,right,bottom: look for faces only there.",
    )
    landmarks: Flag = Field(False, description="(ext) The five alignment points of each face.")


class VerifyQuery(BaseModel):
    face1: Source = Field(description="The first face.")
    face2: Source = Field(description="The second face.")
    threshold: Threshold | None = Field(
        None, description="(ext) verified is confidence >= this (default: the model's recommended threshold)."
    )


class AddFaceQuery(BaseModel):
    source: Source | None = Field(None, alias="from", description="The source, when the body does not give it.")


class ListQuery(BaseModel):
    """``GET /v2/galleries/<gallery>/faces``: a listing by id, or with looks_like a search."""

    looks_like: Source | None = Field(None, description="Search by similarity to this face.")
    threshold: Threshold | None = Field(None, description="Only faces at least this alike (with looks_like).")
    limit: int | None = Field(
        None, ge=1, description="At most this many faces (default limits.default_limit, at most limits.max_limit)."
    )
    id_gte: FaceIdValue | None = Field(None, alias="id:gte", description="Face ids from this one.")
    id_lte: FaceIdValue | None = Field(None, alias="id:lte", description="Face ids up to this one.")
    id_in: Annotated[list[FaceIdValue], BeforeValidator(_comma_list)] | None = Field(
        None, alias="id:in", description="Face ids among these (repeatable or a comma list)."
    )
    page: str | None = Field(None, description="The next_page of a previous answer.")
    sort: Sort | None = Field(None, description="-id by default; -confidence by default with looks_like.")

    def page_size(self, default: int, maximum: int) -> int:
        if self.limit is None:
            return default
        if self.limit > maximum:
            raise BadParam(f"limit must be between 1 and {maximum}", "limit", str(self.limit))
        return self.limit


class SearchQuery(ListQuery):
    """(ext) ``GET /v2/faces``: one search over several galleries."""

    looks_like: Source = Field(description="Search by similarity to this face.")
    gallery: Annotated[list[Annotated[str, Field(pattern=GALLERY_NAME.pattern)]], BeforeValidator(_comma_list)] = Field(
        [], description="Galleries to search (repeatable or a comma list; none: all)."
    )
    sort: Sort | None = Field(None, description="-confidence by default.")


META_FILTERS_TEXT = (
    "Meta filters take the field in the parameter's name: meta:in:<field>=a,b (one of), "
    "meta:gte:<field>= and meta:lte:<field>= (a range), meta:subset:<field>=a,b (all in a list "
    "field). OpenAPI cannot name such parameters one by one."
)


def face_filter(query: ListQuery, raw: QueryParams) -> FaceFilter:
    """The spec's id:* filters (from ``query``) and meta:<op>:<field> filters (from ``raw``); an unknown
    id: or meta: operator is BAD_PARAM."""
    meta: dict[str, dict[str, tuple[str, ...]]] = {"in": {}, "subset": {}, "gte": {}, "lte": {}}
    for key in dict.fromkeys(raw.keys()):
        if key.startswith("id:") and key not in ("id:gte", "id:lte", "id:in"):
            raise BadParam(f"unknown id filter {key!r} (id:gte, id:lte, id:in)", key, raw[key])
        if not key.startswith("meta:"):
            continue
        _, op, field = (key.split(":", 2) + ["", ""])[:3]
        if not field:
            raise BadParam(f"{key!r}: meta filters are meta:<op>:<field>", key, raw[key])
        if op not in meta:
            raise BadParam(f"unknown meta filter {key!r} (in, gte, lte, subset)", key, raw[key])
        values = tuple(_comma_list(raw.getlist(key)))
        if op in ("gte", "lte") and len(values) != 1:
            raise BadParam(f"{key} takes one value", key, raw[key])
        meta[op][field] = values
    id_in = None if query.id_in is None else tuple(query.id_in)
    return FaceFilter(
        id_gte=query.id_gte,
        id_lte=query.id_lte,
        id_in=id_in,
        meta_in=tuple(meta["in"].items()),
        meta_subset=tuple(meta["subset"].items()),
        meta_gte=tuple((field, values[0]) for field, values in meta["gte"].items()),
        meta_lte=tuple((field, values[0]) for field, values in meta["lte"].items()),
    )
