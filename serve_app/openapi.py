"""The OpenAPI document at ``/v2/openapi.json``: FastAPI's, completed with what the routes read themselves.

The routes read their query strings and bodies by hand (serve_app/params.py, bodies.py, images.py), because
the spec's errors name each parameter and FindFace's lists come repeated or comma-separated. So this module
says, route by route, the query parameters with their types, ranges, enums and defaults, the request body
per content type, and every error the route can answer, with the spec's ``{code, desc, param, value}``
body; FastAPI's generic 422, which the service never sends (its validation errors are BAD_PARAM 400), is
removed. The parameter tables follow ../shared/spec/API.md; tests/test_api.py compares them with the
routes' behaviour.
"""

from __future__ import annotations

from store.meta import MetaRules

from .errors import ERROR_TABLE
from .schemas import AddFace, BulkAdd, PatchFace

_MAX_ID = 2 ** 64 - 1
_BOOLEAN = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off"]}
_SOURCE = {"type": "string",
           "pattern": r"^(detection:[0-9a-v]{20}|face:[A-Za-z0-9_-]{1,64}/[0-9]{1,20}|facen:[A-Za-z0-9+/=_-]+)$",
           "description": "detection:<id>, face:<gallery>/<id> or (ext) facen:<base64 of float32 little-endian>"}
_GALLERY = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"}
_FACE_ID = {"type": "integer", "minimum": 0, "maximum": _MAX_ID}


def _query(name: str, schema: dict, description: str, **extra) -> dict:
    return {"name": name, "in": "query", "required": extra.pop("required", False), "schema": schema,
            "description": description, **extra}


def _listed(name: str, items: dict, description: str) -> dict:
    return _query(name, {"type": "array", "items": items}, description, style="form", explode=True)


_LIST_FILTERS = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
           "At most this many faces (limits.max_limit caps it)."),
    _query("id:gte", _FACE_ID, "Face ids from this one."),
    _query("id:lte", _FACE_ID, "Face ids up to this one."),
    _listed("id:in", _FACE_ID, "Face ids among these (repeatable or a comma list)."),
    _query("page", {"type": "string"}, "The next_page of a previous answer."),
]
_SEARCH = [_query("looks_like", _SOURCE, "Search by similarity to this face."),
           _query("threshold", {"type": "number", "minimum": 0, "maximum": 1}, "Only faces at least this alike.")]

OPERATIONS: dict[tuple[str, str], dict] = {
    ("post", "/v2/detect"): {
        "parameters": [
            _query("detector", {"type": "string", "enum": ["nnd", "normalized"], "default": "nnd"},
                   "nnd: find faces; normalized: the body is an aligned face crop."),
            _query("facen", _BOOLEAN, "Extract feature vectors and cache the detection (faces get an id)."),
            _query("return_facen", _BOOLEAN, "Put facen in the answer (only where limits.allow_return_facen)."),
            _query("gender", _BOOLEAN, "Gender in features (old style)."),
            _query("age", _BOOLEAN, "Age in features (old style)."),
            _query("emotions", _BOOLEAN, "Emotions in features (old style)."),
            _listed("attribute", {"type": "string", "enum": ["gender", "age", "emotions"]},
                    "Attributes under attributes (new style); not also asked as a flag."),
            _query("autorotate", _BOOLEAN, "Also try the photo turned by 90, 180 and 270 degrees."),
            _query("roi", {"type": "string", "pattern": r"^\d{1,5},\d{1,5},\d{1,5},\d{1,5}$"},
                   "left,top,right,bottom: look for faces only there."),
            _query("landmarks", _BOOLEAN, "(ext) The five alignment points of each face."),
        ],
        "body": "photo",
        "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "OVER_CAPACITY", "NOT_IMPLEMENTED", "EXTRACTION_ERROR",
                   "CACHE_ERROR"],
    },
    ("get", "/v2/detect/{detection_id}"): {"errors": ["NOT_FOUND", "CACHE_ERROR"]},
    ("get", "/v2/verify"): {"parameters": [
        _query("face1", _SOURCE, "The first face.", required=True),
        _query("face2", _SOURCE, "The second face.", required=True),
        _query("threshold", {"type": "number", "minimum": 0, "maximum": 1},
               "(ext) verified is confidence >= this (default: the model's recommended threshold)."),
    ], "errors": ["BAD_PARAM", "SOURCE_NOT_FOUND", "SOURCE_GALLERY_NOT_FOUND", "STORAGE_ERROR", "CACHE_ERROR"]},
    ("get", "/v2/galleries"): {"errors": ["STORAGE_ERROR"]},
    ("post", "/v2/galleries/{gallery}"): {"errors": ["BAD_PARAM", "CONFLICT", "STORAGE_ERROR"]},
    ("get", "/v2/galleries/{gallery}"): {"errors": ["GALLERY_NOT_FOUND", "STORAGE_ERROR"]},
    ("delete", "/v2/galleries/{gallery}"): {"errors": ["GALLERY_NOT_FOUND", "STORAGE_ERROR"]},
    ("post", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "parameters": [_query("from", _SOURCE, "The source, when the body does not give it.")],
        "body": "AddFace",
        "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "CONFLICT", "GALLERY_NOT_FOUND", "SOURCE_NOT_FOUND",
                   "SOURCE_GALLERY_NOT_FOUND", "STORAGE_ERROR", "CACHE_ERROR"]},
    ("get", "/v2/galleries/{gallery}/faces/{face_id}"): {"errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "NOT_FOUND",
                                                                    "STORAGE_ERROR"]},
    ("patch", "/v2/galleries/{gallery}/faces/{face_id}"): {
        "body": "PatchFace", "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "GALLERY_NOT_FOUND", "NOT_FOUND",
                                        "STORAGE_ERROR"]},
    ("delete", "/v2/galleries/{gallery}/faces/{face_id}"): {"errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "NOT_FOUND",
                                                                       "STORAGE_ERROR"]},
    ("post", "/v2/galleries/{gallery}/faces"): {
        "body": "BulkAdd", "errors": ["BAD_PARAM", "MALFORMED_REQUEST", "GALLERY_NOT_FOUND", "STORAGE_ERROR"]},
    ("get", "/v2/galleries/{gallery}/faces"): {
        "parameters": [*_SEARCH, *_LIST_FILTERS,
                       _query("sort", {"type": "string", "enum": ["id", "-id", "-confidence"]},
                              "-id by default; -confidence by default with looks_like.")],
        "dynamic_filters": True,
        "errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "SOURCE_NOT_FOUND", "SOURCE_GALLERY_NOT_FOUND",
                   "STORAGE_ERROR", "CACHE_ERROR"]},
    ("get", "/v2/faces"): {
        "parameters": [{**_SEARCH[0], "required": True}, _SEARCH[1], *_LIST_FILTERS,
                       _listed("gallery", _GALLERY, "Galleries to search (none: all)."),
                       _query("sort", {"type": "string", "enum": ["id", "-id", "-confidence"]},
                              "-confidence by default.")],
        "dynamic_filters": True,
        "errors": ["BAD_PARAM", "GALLERY_NOT_FOUND", "SOURCE_NOT_FOUND", "SOURCE_GALLERY_NOT_FOUND", "STORAGE_ERROR",
                   "CACHE_ERROR"]},
    ("get", "/healthz"): {"errors": []},
    ("get", "/readyz"): {"errors": [], "extra_status": {503: "Some part is not ready (the body says which)."}},
}
OPERATIONS[("post", "/v2/verify")] = OPERATIONS[("get", "/v2/verify")]

_PATH_PARAMETERS = {"gallery": _GALLERY, "face_id": _FACE_ID,
                    "detection_id": {"type": "string", "pattern": "^[0-9a-v]{20}$"}}
_PHOTO_BODY = {
    "required": True,
    "content": {**{kind: {"schema": {"type": "string", "format": "binary"}}
                   for kind in ("image/jpeg", "image/png", "image/webp", "image/bmp")},
                "text/x-url": {"schema": {"type": "string", "format": "uri", "maxLength": 8192},
                               "example": "https://example.org/photo.jpg"},
                "multipart/form-data": {"schema": {"type": "object", "required": ["photo"], "properties": {
                    "photo": {"type": "string", "format": "binary"}}}}}}

_INTEGER = {"type": "integer", "minimum": -2 ** 63, "maximum": 2 ** 63 - 1}


def _meta_schema(rules: MetaRules) -> dict:
    """What a face's meta may hold under ``rules`` (all but its size in bytes, which JSON Schema cannot say)."""
    text = {"type": "string", "maxLength": rules.max_string_length}
    return {"type": "object", "maxProperties": rules.max_keys,
            "propertyNames": {"minLength": 1, "maxLength": rules.max_key_length},
            "description": f"Strings, signed 64-bit integers, or lists of one of them; at most "
                           f"{rules.max_bytes} bytes as compact JSON (limits.meta).",
            "additionalProperties": {"anyOf": [text, _INTEGER,
                                               {"type": "array", "items": text, "maxItems": rules.max_list_items},
                                               {"type": "array", "items": _INTEGER,
                                                "maxItems": rules.max_list_items}]}}

_ERROR_SCHEMA = {
    "type": "object", "required": ["code", "desc"],
    "properties": {"code": {"type": "string", "enum": sorted({code for code, _ in ERROR_TABLE.values()})},
                   "desc": {"type": "string"},
                   "param": {"type": "string", "description": "BAD_PARAM: the parameter or field"},
                   "value": {"description": "BAD_PARAM: the value refused"}}}


def _status_of(code: str) -> int:
    return next(status for known, status in ERROR_TABLE.values() if known == code)


def _error_responses(codes: list[str]) -> dict:
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(_status_of(code), []).append(code)
    responses = {}
    for status, group in sorted(by_status.items()):
        examples = {code: {"value": {"code": code, "desc": "what went wrong, for people",
                                     **({"param": "limit", "value": "0"} if code == "BAD_PARAM" else {})}}
                    for code in group}
        responses[str(status)] = {"description": " or ".join(group),
                                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"},
                                                                    "examples": examples}}}
    return responses


def complete(document: dict, bearer_token: bool, return_facen: bool, meta_rules: MetaRules) -> dict:
    """``document`` (FastAPI's) with every operation's parameters, body and error responses, for a
    deployment with or without a bearer token and with or without ``limits.allow_return_facen``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = _ERROR_SCHEMA
    for model in (AddFace, PatchFace, BulkAdd):
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for name in ("AddFace", "PatchFace"):
        schemas[name]["properties"]["meta"] = _meta_schema(meta_rules)
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
            if (method, path) == ("post", "/v2/verify"):       # one function serves GET and POST
                operation["operationId"] = "verify_v2_verify_post"
            operation["responses"].pop("422", None)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in _PATH_PARAMETERS:
                    parameter["schema"] = _PATH_PARAMETERS[parameter["name"]]
            added = [parameter for parameter in described.get("parameters", [])
                     if return_facen or parameter["name"] != "return_facen"]
            operation["parameters"] = [*operation.get("parameters", []), *added]
            body = described.get("body")
            if body == "photo":
                operation["requestBody"] = _PHOTO_BODY
            elif body:
                operation["requestBody"] = {"required": body != "AddFace", "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
            if described.get("dynamic_filters"):
                operation["description"] = (
                    "Meta filters take the field in the parameter's name: meta:in:<field>=a,b (one of), "
                    "meta:gte:<field>= and meta:lte:<field>= (a range), meta:subset:<field>=a,b (all in a list "
                    "field). OpenAPI cannot name such parameters one by one.")
            errors = list(described.get("errors", []))
            if bearer_token and path not in ("/healthz", "/readyz"):
                errors.append("UNAUTHORIZED")
                operation["security"] = [{"bearer": []}]
            operation["responses"].update(_error_responses(errors))
            for status, text in described.get("extra_status", {}).items():
                operation["responses"][str(status)] = {"description": text}
    return document
