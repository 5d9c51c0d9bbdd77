"""Request errors, and the one table that maps every facegrid error to the spec's code and HTTP status.

    FacegridError (facegrid.errors)
    ├── GalleryNotFound, GalleryExists, FaceNotFound, FaceExists, InvalidValue,
    │   StoreUnavailable, CacheUnavailable (store.errors), ShardUnavailable (index.errors)
    │                                                              (domain, raised below serve_app)
    └── RequestError                                               (raised here, at the edge)
        ├── BadParam              a parameter can be read but is invalid (param, value)
        ├── MalformedRequest      the request cannot be read
        ├── RouteNotFound         unknown route, or an id in the path that does not exist
        ├── SourceNotFound        a face source names no face or detection
        ├── SourceGalleryNotFound a face: source names no gallery
        ├── ExtractionFailed      the models could not answer (replicas down, URL not fetched)
        ├── OverCapacity          the model queues are full
        ├── NotImplementedHere    an operation this deployment does not support
        └── Unauthorized          a bearer token is configured and missing or wrong

Anything else is UNKNOWN_ERROR: logged with the request id, answered without a traceback.
"""

from __future__ import annotations

from facegrid.errors import FacegridError
from index.errors import ShardUnavailable
from store.errors import (
    CacheUnavailable,
    FaceExists,
    FaceNotFound,
    GalleryExists,
    GalleryNotFound,
    InvalidValue,
    StoreUnavailable,
)


class RequestError(FacegridError):
    pass


class BadParam(RequestError):
    def __init__(self, message: str, param: str, value: object = ""):
        super().__init__(message)
        self.param, self.value = param, "" if value is None else str(value)[:200]

    def __reduce__(self):
        return type(self), (self.message, self.param, self.value)


class MalformedRequest(RequestError):
    pass


class RouteNotFound(RequestError):
    pass


class SourceNotFound(RequestError):
    pass


class SourceGalleryNotFound(RequestError):
    pass


class ExtractionFailed(RequestError):
    pass


class OverCapacity(RequestError):
    pass


class NotImplementedHere(RequestError):
    pass


class Unauthorized(RequestError):
    pass


# error class -> (code, HTTP status). The first class in an error's MRO found here decides.
ERROR_TABLE: dict[type[BaseException], tuple[str, int]] = {
    BadParam: ("BAD_PARAM", 400),
    InvalidValue: ("BAD_PARAM", 400),
    MalformedRequest: ("MALFORMED_REQUEST", 400),
    GalleryExists: ("CONFLICT", 409),
    FaceExists: ("CONFLICT", 409),
    ExtractionFailed: ("EXTRACTION_ERROR", 503),
    OverCapacity: ("OVER_CAPACITY", 429),
    SourceNotFound: ("SOURCE_NOT_FOUND", 400),
    SourceGalleryNotFound: ("SOURCE_GALLERY_NOT_FOUND", 400),
    StoreUnavailable: ("STORAGE_ERROR", 503),
    ShardUnavailable: ("STORAGE_ERROR", 503),
    CacheUnavailable: ("CACHE_ERROR", 503),
    RouteNotFound: ("NOT_FOUND", 404),
    FaceNotFound: ("NOT_FOUND", 404),
    NotImplementedHere: ("NOT_IMPLEMENTED", 501),
    GalleryNotFound: ("GALLERY_NOT_FOUND", 404),
    Unauthorized: ("UNAUTHORIZED", 401),
}

UNKNOWN = ("UNKNOWN_ERROR", 500)


def describe(error: BaseException, retry_after_s: int = 1) -> tuple[int, dict, dict]:
    """(HTTP status, JSON body, extra headers) for any error."""
    for klass in type(error).__mro__:
        if klass in ERROR_TABLE:
            code, status = ERROR_TABLE[klass]
            break
    else:
        code, status = UNKNOWN
        return status, {"code": code, "desc": "internal error"}, {}
    body = {"code": code, "desc": str(error)}
    if code == "BAD_PARAM":
        body["param"], body["value"] = getattr(error, "param", ""), getattr(error, "value", "")
    headers = {"Retry-After": str(retry_after_s)} if code == "OVER_CAPACITY" else {}
    if code == "UNAUTHORIZED":
        headers["WWW-Authenticate"] = "Bearer"
    return status, body, headers
