"""The OpenAPI document at ``/v2/openapi.json``: FastAPI's, completed with what it cannot know.

Query parameters come from the routes' query models (serve_app/queries.py) and JSON bodies from the wire
models (serve_app/schemas.py), so parsing and document are one thing. Added here: the bodies the routes read
themselves (photos per content type, JSON read under the body-size bound), every error a route can answer
with the spec's ``{code, desc, param, value}`` body, and what depends on the deployment's settings (the
bearer scheme, return_facen, the page-size bounds, the meta bounds). FastAPI's generic 422, which the
service never sends (its validation errors are BAD_PARAM 400), is removed.
"""

from __future__ import annotations

from store.meta import MetaRules

from .config import LimitSettings
from .errors import ERROR_TABLE
from .schemas import AddFace, BulkAdd, PatchFace
from .sources import SOURCE_PATTERN

_MAX_ID = 2**64 - 1
_GALLERY = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
_FACE_ID = {"type": "integer", "minimum": 0, "maximum": _MAX_ID}
_SOURCE = {
    "type": "string",
    "pattern": SOURCE_PATTERN,
    "description": "detection:<id>, face:<gallery>/<id> or (ext) facen:<base64 of float32 little-endian>",
}

# A listing or search: its filters, its source and its galleries can each be at fault.
_SEARCH_ERRORS = [
    "BAD_PARAM",
    "GALLERY_NOT_FOUND",
    "SOURCE_NOT_FOUND",
    "SOURCE_GALLERY_NOT_FOUND",
    "STORAGE_ERROR",
    "CACHE_ERROR",
]

OPERATIONS: dict[tuple[str, str], dict] = {
    ("post", "/v2/detect"): {
        "body": "photo",
        "errors": [
            "BAD_PARAM",
            "MALFORMED_REQUEST",
            "OVER_CAPACITY",
            "NOT_IMPLEMENTED",
            "EXTRACTION_ERROR",
            "CACHE_ERROR",
        ],
    },
    ("get", "/v2/detect/{detection_id}"): {"errors": ["NOT_FOUND", "CACHE_ERROR"]},
    ("get", "/v2/verify"): {
        "errors": ["BAD_PARAM", "SOURCE_NOT_FOUND", "SOURCE_GALLERY_NOT_FOUND", "STORAGE_ERROR", "CACHE_ERROR"]
    },
    ("get", "/v2/galleries"): {"errors": ["STORAGE_ERROR"]},
    ("post", "/v2/galleries/{gallery}"): {"errors": ["BAD_PARAM", "CONFLICT", "STORAGE_ERROR"]},
    ("get", "/v2/galleries/{gallery}"): {"errors": ["GALLERY_NOT_FOUND", "STORAGE_ERROR"]},
    ("delete", "/v2/galleries/{gallery}"): {"errors": ["GALLERY_NOT_FOUND", "STORAGE_ERROR"]},
    ("post", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "body": "AddFace",
        "errors": [
            "BAD_PARAM",
            "MALFORMED_REQUEST",
            "CONFLICT",
            "GALLERY_NOT_FOUND",
            "SOURCE_NOT_FOUND",
            "SOURCE_GALLERY_NOT_FOUND",
            "STORAGE_ERROR",
            "CACHE_ERROR",
        ],
    },
    ("get", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "NOT_FOUND", "STORAGE_ERROR"]
    },
    ("patch", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "body": "PatchFace",
        "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "GALLERY_NOT_FOUND", "NOT_FOUND", "STORAGE_ERROR"],
    },
    ("delete", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "NOT_FOUND", "STORAGE_ERROR"]
    },
    ("post", "/v2/galleries/{gallery}/faces"): {
        "body": "BulkAdd",
        "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "GALLERY_NOT_FOUND", "STORAGE_ERROR"],
    },
    ("get", "/v2/galleries/{gallery}/faces"): {"errors": _SEARCH_ERRORS},
    ("get", "/v2/faces"): {"errors": _SEARCH_ERRORS},
    ("get", "/healthz"): {"errors": []},
    ("get", "/readyz"): {"errors": [], "extra_status": {503: "Some part is not ready (the body says which)."}},
}
OPERATIONS[("post", "/v2/verify")] = OPERATIONS[("get", "/v2/verify")]

_PATH_PARAMETERS = {
    "gallery": _GALLERY,
    "face_id": _FACE_ID,
    "detection_id": {"type": "string", "pattern": "^[0-9a-v]{20}$"},
}
_PHOTO_BODY = {
    "required": True,
    "content": {
        **{
            kind: {"schema": {"type": "string", "format": "binary"}}
            for kind in ("image/jpeg", "image/png", "image/webp", "image/bmp")
        },
        "text/x-url": {
            "schema": {"type": "string", "format": "uri", "maxLength": 8192},
            "example": "https://example.org/photo.jpg",
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["photo"],
                "properties": {"photo": {"type": "string", "format": "binary"}},
            }
        },
    },
}

_INTEGER = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}


def _meta_schema(rules: MetaRules) -> dict:
    """What a face's meta may hold under ``rules`` (all but its size in bytes, which JSON Schema cannot say)."""
    text = {"type": "string", "maxLength": rules.max_string_length}
    return {
        "type": "object",
        "maxProperties": rules.max_keys,
        "propertyNames": {"minLength": 1, "maxLength": rules.max_key_length},
        "description": f"Strings, signed 64-bit integers, or lists of one of them; at most "
        f"{rules.max_bytes} bytes as compact JSON (limits.meta).",
        "additionalProperties": {
            "anyOf": [
                text,
                _INTEGER,
                {"type": "array", "items": text, "maxItems": rules.max_list_items},
                {"type": "array", "items": _INTEGER, "maxItems": rules.max_list_items},
            ]
        },
    }


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "desc"],
    "properties": {
        "code": {"type": "string", "enum": sorted({code for code, _ in ERROR_TABLE.values()})},
        "desc": {"type": "string"},
        "param": {"type": "string", "description": "BAD_PARAM: the parameter or field"},
        "value": {"description": "BAD_PARAM: the value refused"},
    },
}


def _status_of(code: str) -> int:
    return next(status for known, status in ERROR_TABLE.values() if known == code)


def _error_responses(codes: list[str]) -> dict:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(_status_of(code), []).append(code)
    responses = {}
    for status, group in sorted(by_status.items()):
        examples = {
            code: {
                "value": {
                    "code": code,
                    "desc": "what went wrong, for people",
                    **({"param": "limit", "value": "0"} if code == "BAD_PARAM" else {}),
                }
            }
            for code in group
        }
        responses[str(status)] = {
            "description": " or ".join(group),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}, "examples": examples}},
        }
    return responses


def _query_schema(schema: dict) -> dict:
    """A query parameter's schema without pydantic's "or null" (a query value is absent, never null)."""
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    if len(options) == 1:
        schema = {**options[0], **{key: value for key, value in schema.items() if key != "anyOf"}}
    schema.pop("title", None)
    schema.pop("description", None)  # the parameter's own
    return schema


def _parameters(operation: dict, limits: LimitSettings) -> list[dict]:
    parameters = []
    for parameter in operation.get("parameters", []):
        name = parameter["name"]
        if parameter["in"] == "path" and name in _PATH_PARAMETERS:
            parameter["schema"] = _PATH_PARAMETERS[name]
        elif parameter["in"] == "query":
            if name == "return_facen" and not limits.allow_return_facen:
                continue
            parameter["schema"] = _query_schema(parameter["schema"])
            if name == "limit":
                parameter["schema"].update(maximum=limits.max_limit, default=limits.default_limit)
            if parameter["schema"].get("type") == "array":
                parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def complete(document: dict, bearer_token: bool, limits: LimitSettings) -> dict:
    """``document`` (FastAPI's) with every operation's body and error responses, for a deployment with
    ``limits`` and with or without a bearer token."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = _ERROR_SCHEMA
    for model in (AddFace, PatchFace, BulkAdd):
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for name in ("AddFace", "PatchFace"):
        schemas[name]["properties"]["meta"] = _meta_schema(limits.meta)
    # The source may come in the query instead; the document gives it in the body.
    schemas["AddFace"]["properties"]["from"] = _SOURCE
    schemas["AddFace"]["required"] = ["from"]
    # A bulk add answers 200 with one result per item: an item's bad id, source or meta is refused in its
    # result, not by the request, so the items' schema takes what the request takes.
    schemas["BulkItem"]["properties"]["id"]["description"] = "An unsigned 64-bit face id (else refused in its result)."
    schemas["BulkItem"]["properties"]["meta"]["description"] = "As meta of one face (else refused in its result)."
    if bearer_token:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            described = OPERATIONS.get((method, path), {"errors": []})
            operation["responses"].pop("422", None)
            operation["parameters"] = _parameters(operation, limits)
            body = described.get("body")
            if body == "photo":
                operation["requestBody"] = _PHOTO_BODY
            elif body:
                operation["requestBody"] = {
                    "required": body != "AddFace",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
                }
            errors = list(described.get("errors", []))
            if bearer_token and path not in ("/healthz", "/readyz"):
                errors.append("UNAUTHORIZED")
                operation["security"] = [{"bearer": []}]
            operation["responses"].update(_error_responses(errors))
            for status, text in described.get("extra_status", {}).items():
                operation["responses"][str(status)] = {"description": text}
    return document
