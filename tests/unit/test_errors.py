"""Errors cross actor boundaries (so they pickle) and map to the spec's codes in one table."""

from __future__ import annotations

import pickle

import pytest

from index.errors import ShardUnavailable
from serve_app.errors import (
    BadParam,
    ExtractionFailed,
    MalformedRequest,
    NotImplementedHere,
    OverCapacity,
    RouteNotFound,
    SourceGalleryNotFound,
    SourceNotFound,
    describe,
)
from store.errors import (
    CacheUnavailable,
    FaceExists,
    FaceNotFound,
    GalleryExists,
    GalleryNotFound,
    InvalidValue,
    StoreUnavailable,
)

CASES = [
    (GalleryNotFound("g"), 404, "GALLERY_NOT_FOUND"),
    (GalleryExists("g"), 409, "CONFLICT"),
    (FaceNotFound("g", 1), 404, "NOT_FOUND"),
    (FaceExists("g", 1), 409, "CONFLICT"),
    (InvalidValue("bad", "meta", "x"), 400, "BAD_PARAM"),
    (StoreUnavailable("down"), 503, "STORAGE_ERROR"),
    (ShardUnavailable("down"), 503, "STORAGE_ERROR"),
    (CacheUnavailable("down"), 503, "CACHE_ERROR"),
    (BadParam("bad", "limit", 0), 400, "BAD_PARAM"),
    (MalformedRequest("?"), 400, "MALFORMED_REQUEST"),
    (RouteNotFound("?"), 404, "NOT_FOUND"),
    (SourceNotFound("?"), 400, "SOURCE_NOT_FOUND"),
    (SourceGalleryNotFound("?"), 400, "SOURCE_GALLERY_NOT_FOUND"),
    (ExtractionFailed("?"), 503, "EXTRACTION_ERROR"),
    (OverCapacity("?"), 429, "OVER_CAPACITY"),
    (NotImplementedHere("?"), 501, "NOT_IMPLEMENTED"),
    (RuntimeError("secret traceback detail"), 500, "UNKNOWN_ERROR"),
]


@pytest.mark.parametrize("error, status, code", CASES)
def test_each_error_maps_to_its_spec_code_and_survives_pickling(error, status, code):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    got_status, body, headers = describe(copy, retry_after_s=3)
    assert (got_status, body["code"]) == (status, code)
    if code == "BAD_PARAM":
        assert body["param"] == error.param and "value" in body
    if code == "OVER_CAPACITY":
        assert headers["Retry-After"] == "3"
    if code == "UNKNOWN_ERROR":
        assert "secret" not in body["desc"]
