"""Faces on the wire: the spec's face object, built from stored faces, and facen vectors as base64."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from store.base import FaceRecord, unit_vector

from .errors import BadParam


def encode_facen(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_facen(text: str, param: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadParam("facen must be standard base64 of little-endian float32", param, text[:40]) from None
    if not raw or len(raw) % 4:
        raise BadParam("facen must hold a whole number of float32 values", param, f"{len(raw)} bytes")
    vector = unit_vector(np.frombuffer(raw, dtype="<f4"))
    if vector is None:
        raise BadParam("facen must be a finite, non-zero vector", param, text[:40])
    return vector


def face_object(record: FaceRecord, allow_facen: bool, confidence: float | None = None) -> dict:
    body = {
        "id": {"gallery": record.gallery, "face": record.face_id},
        "meta": record.meta,
        "features": record.attributes.get("features", {}),
        "attributes": record.attributes.get("attributes", {}),
    }
    if confidence is not None:
        body["confidence"] = round(confidence, 6)
    if allow_facen:
        body["facen"] = encode_facen(record.facen)
    return body
