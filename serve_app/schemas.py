"""Wire models: FindFace's field names, for validation of JSON bodies and for the OpenAPI page.

Routes convert between these and the internal records at the edge.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _json_integer(value):
    """An integer as JSON Schema reads one: 5 and 5.0, not true or "5" (pydantic's lax mode takes both)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class Error(BaseModel):
    code: str = Field(description="Machine-readable error code (see the spec's table).")
    desc: str = Field(description="What went wrong, for people.")
    param: str | None = Field(None, description="BAD_PARAM only: the parameter at fault.")
    value: str | None = Field(None, description="BAD_PARAM only: the value given.")


class BBox(BaseModel):
    left: int
    top: int
    right: int
    bottom: int


class FaceDetection(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(None, description="Detection id, with facen=true; use as detection:<id>.")
    bbox: BBox
    detection_score: float
    features: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None
    facen: str | None = Field(None, description="base64 little-endian float32, where allowed.")
    landmarks: list[list[float]] | None = Field(None, description="(ext) the five alignment points.")


class DetectResponse(BaseModel):
    orientation: int = Field(description="EXIF orientation code of the image the boxes refer to.")
    faces: list[FaceDetection]


class VerifyResponse(BaseModel):
    confidence: float = Field(description="Similarity in [0, 1].")
    verified: bool = Field(description="(ext) confidence >= the model's recommended threshold (or threshold=).")


class GalleryInfo(BaseModel):
    name: str
    number_of_elements: int
    model: str | None = Field(
        None,
        description="(ext) The extractor whose vectors the gallery holds; "
        "null while it is empty. Only vectors of it are added.",
    )
    dim: int | None = Field(None, description="(ext) Their length; null while the gallery is empty.")


class GalleryName(BaseModel):
    name: str


class GalleryList(BaseModel):
    galleries: list[GalleryInfo]


class FaceId(BaseModel):
    gallery: str
    face: int


class Face(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: FaceId
    meta: dict[str, Any]
    features: dict[str, Any]
    attributes: dict[str, Any]
    confidence: float | None = None
    facen: str | None = None


class FaceList(BaseModel):
    faces: list[Face]
    next_page: str | None


class AddFace(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str | None = Field(None, alias="from", description="detection:<id>, face:<gallery>/<id> or facen:<b64>.")
    meta: dict[str, Any] = Field(default_factory=dict)


class PatchFace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meta: dict[str, Any]


class BulkItem(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: JsonInteger
    source: str = Field(alias="from")
    meta: dict[str, Any] = Field(default_factory=dict)


class BulkAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    faces: list[BulkItem]


class BulkResults(BaseModel):
    results: list[dict[str, Any]] = Field(description="Per item: the face object, or an error body.")
