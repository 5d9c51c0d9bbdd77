"""Values the routes read themselves, each failure a BAD_PARAM naming where it was: face ids (in paths and
bulk items, whose errors the spec words its own way) and the page cursors the server issues."""

from __future__ import annotations

import base64
import json
from typing import Iterable

from store.base import MAX_FACE_ID

from .errors import BadParam


def face_id(raw: str, name: str = "id") -> int:
    """An unsigned 64-bit face id written in decimal."""
    try:
        value = int(raw.strip(), 10)
    except (ValueError, AttributeError):
        raise BadParam(f"{name} must be an integer", name, raw) from None
    if not 0 <= value <= MAX_FACE_ID:
        raise BadParam(f"{name} must be between 0 and {MAX_FACE_ID}", name, raw)
    return value


def encode_cursor(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None, expected_keys: Iterable[str]) -> dict | None:
    if raw is None:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(state, dict) or not set(expected_keys) <= set(state):
            raise ValueError
        return state
    except (ValueError, TypeError):
        raise BadParam("page is not a cursor this server issued", "page", raw) from None
