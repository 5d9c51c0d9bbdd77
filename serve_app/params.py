"""Reading query parameters the way the spec says, each failure a BAD_PARAM naming the parameter."""

from __future__ import annotations

import base64
import json
from typing import Iterable

from starlette.datastructures import QueryParams

from index.filters import FaceFilter
from store.base import MAX_FACE_ID

from .errors import BadParam

TRUE_WORDS = {"1", "yes", "true", "on"}
FALSE_WORDS = {"0", "no", "false", "off"}


def boolean(params: QueryParams, name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadParam(f"{name} must be one of 1/yes/true/on or 0/no/false/off", name, raw)


def integer(raw: str, name: str, low: int | None = None, high: int | None = None) -> int:
    try:
        value = int(raw.strip(), 10)
    except (ValueError, AttributeError):
        raise BadParam(f"{name} must be an integer", name, raw) from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadParam(f"{name} must be between {low} and {high}", name, raw)
    return value


def face_id(raw: str, name: str = "id") -> int:
    return integer(raw, name, 0, MAX_FACE_ID)


def number(raw: str, name: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except (ValueError, TypeError):
        raise BadParam(f"{name} must be a number", name, raw) from None
    if not low <= value <= high:
        raise BadParam(f"{name} must be between {low} and {high}", name, raw)
    return value


def listed(params: QueryParams, name: str) -> list[str]:
    """A parameter given repeatedly and/or as a comma list."""
    return [item.strip() for raw in params.getlist(name) for item in raw.split(",") if item.strip()]


def limit(params: QueryParams, default: int, maximum: int) -> int:
    raw = params.get("limit")
    return default if raw is None else integer(raw, "limit", 1, maximum)


def face_filter(params: QueryParams) -> FaceFilter:
    """The spec's id:* and meta:*:<field> filters; an unknown id:/meta: operator is BAD_PARAM."""
    id_gte = id_lte = id_in = None
    meta_in, meta_gte, meta_lte, meta_subset = {}, {}, {}, {}
    for key in dict.fromkeys(params.keys()):
        if key.startswith("id:"):
            op = key[3:]
            if op == "gte":
                id_gte = face_id(params[key], key)
            elif op == "lte":
                id_lte = face_id(params[key], key)
            elif op == "in":
                id_in = tuple(face_id(item, key) for item in listed(params, key))
            else:
                raise BadParam(f"unknown id filter {key!r} (id:gte, id:lte, id:in)", key, params[key])
        elif key.startswith("meta:"):
            _, op, field = (key.split(":", 2) + ["", ""])[:3]
            if not field:
                raise BadParam(f"{key!r}: meta filters are meta:<op>:<field>", key, params[key])
            values = listed(params, key)
            if op == "in":
                meta_in[field] = tuple(values)
            elif op == "subset":
                meta_subset[field] = tuple(values)
            elif op in ("gte", "lte"):
                if len(values) != 1:
                    raise BadParam(f"{key} takes one value", key, params[key])
                (meta_gte if op == "gte" else meta_lte)[field] = values[0]
            else:
                raise BadParam(f"unknown meta filter {key!r} (in, gte, lte, subset)", key, params[key])
    return FaceFilter(id_gte=id_gte, id_lte=id_lte, id_in=id_in, meta_in=tuple(meta_in.items()),
                      meta_gte=tuple(meta_gte.items()), meta_lte=tuple(meta_lte.items()),
                      meta_subset=tuple(meta_subset.items()))


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
