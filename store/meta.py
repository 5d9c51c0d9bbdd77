"""What a face's meta may hold: the value kinds the API allows, its bounds, and an optional typed schema.

Meta is a JSON object whose values are strings, integers, or lists of strings or of integers. Integers are
signed 64-bit (-2**63 .. 2**63-1): the index keeps integer meta in int64 columns, so every stored integer
can be range-filtered. The optional schema (``MetaRules.scheme``, after FindFace's ``meta_scheme``) names
each field's kind: ``string``, ``unsigned`` (0 .. 2**63-1), ``set[string]`` or ``set[unsigned]`` (lists,
kept without duplicates); with it, unknown fields and wrong kinds are refused, and a face added without a
field gets the field's default when it has one. The store applies these rules to every meta it writes,
after a patch has been merged, so the bounds hold for what is kept, not only for what was sent.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import InvalidValue

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
Kind = Literal["string", "unsigned", "set[string]", "set[unsigned]"]


class MetaField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="string, unsigned (0 .. 2**63-1), set[string] or set[unsigned].")
    default: str | int | list[str] | list[int] | None = Field(
        None, description="Given to a face added without this field; none: the field stays absent."
    )


class MetaRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(4096, ge=64, description="A face's meta as compact UTF-8 JSON, at most.")
    max_keys: int = Field(64, ge=1, description="Fields per face.")
    max_key_length: int = Field(64, ge=1, description="Characters of a field name.")
    max_string_length: int = Field(1024, ge=1, description="Characters of a string value (also in lists).")
    max_list_items: int = Field(256, ge=1, description="Items of a list value.")
    scheme: dict[str, MetaField] | None = Field(
        None,
        description="Typed fields, as FindFace's meta_scheme: unknown fields and wrong kinds are "
        "BAD_PARAM, missing ones get their defaults. None: any field of the allowed kinds.",
    )

    @model_validator(mode="after")
    def _defaults_fit(self) -> "MetaRules":
        for name, field in (self.scheme or {}).items():
            if field.default is not None:
                try:
                    _check_kind(name, field.default, field.kind)
                except InvalidValue as error:
                    raise ValueError(f"the default of meta field {name!r}: {error}") from None
        return self

    def check(self, meta: object, *, new_face: bool) -> dict[str, Any]:
        """``meta`` as it is to be stored, or InvalidValue naming the field. ``new_face``: fill defaults."""
        if not isinstance(meta, dict):
            raise InvalidValue("meta must be a JSON object", "meta", str(meta)[:200])
        if not meta and self.scheme is None:
            return {}
        if self.scheme is not None and new_face:
            meta = {
                **{
                    name: field.default
                    for name, field in self.scheme.items()
                    if field.default is not None and name not in meta
                },
                **meta,
            }
        if len(meta) > self.max_keys:
            raise InvalidValue(f"meta may have at most {self.max_keys} fields", "meta", f"{len(meta)} fields")
        checked: dict[str, Any] = {}
        for key, value in meta.items():
            if not isinstance(key, str) or not key:
                raise InvalidValue("meta keys must be non-empty strings", "meta", str(key)[:200])
            if len(key) > self.max_key_length:
                raise InvalidValue(
                    f"meta field names may have at most {self.max_key_length} characters", "meta", key[:200]
                )
            checked[key] = self._value(key, value)
        size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":")).encode())
        if size > self.max_bytes:
            raise InvalidValue(f"meta may take at most {self.max_bytes} bytes as JSON", "meta", f"{size} bytes")
        return checked

    def _value(self, key: str, value: Any) -> Any:
        param = f"meta.{key}"
        value = _integral(value)
        if self.scheme is not None:
            field = self.scheme.get(key)
            if field is None:
                raise InvalidValue(f"meta field {key!r} is not in the meta scheme", param, key)
            value = _check_kind(key, value, field.kind)
        elif _scalar(value) is None:
            if not isinstance(value, list):
                raise InvalidValue(
                    f"meta {key!r} must be a string, an integer or a list of them", param, str(value)[:200]
                )
            kinds = {_scalar(item) for item in value}
            if None in kinds or len(kinds) > 1:
                raise InvalidValue(
                    f"meta {key!r} must be a list of strings or a list of integers", param, str(value)[:200]
                )
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and not INT_MIN <= item <= INT_MAX:
                raise InvalidValue(f"meta {key!r}: integers are signed 64-bit", param, str(item))
            if isinstance(item, str) and len(item) > self.max_string_length:
                raise InvalidValue(
                    f"meta {key!r}: strings may have at most {self.max_string_length} characters",
                    param,
                    f"{len(item)} characters",
                )
        if isinstance(value, list) and len(value) > self.max_list_items:
            raise InvalidValue(
                f"meta {key!r}: lists may have at most {self.max_list_items} items", param, f"{len(value)} items"
            )
        return value


def _integral(value: Any) -> Any:
    """JSON's 5.0 is the integer 5 (as JSON Schema reads it); Python's json gives a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [int(item) if isinstance(item, float) and item.is_integer() else item for item in value]
    return value


def _scalar(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "str"
    return None


def _check_kind(key: str, value: Any, kind: str) -> Any:
    """``value`` if it is of the scheme's ``kind`` (sets without duplicates, in first-seen order)."""
    param = f"meta.{key}"
    item_kind = kind.removeprefix("set[").removesuffix("]")
    items = value if kind.startswith("set[") and isinstance(value, list) else [value]
    if kind.startswith("set[") and not isinstance(value, list):
        raise InvalidValue(f"meta {key!r} must be a list ({kind})", param, str(value)[:200])
    for item in items:
        if item_kind == "string" and not isinstance(item, str):
            raise InvalidValue(f"meta {key!r} must hold strings ({kind})", param, str(item)[:200])
        if item_kind == "unsigned" and (_scalar(item) != "int" or not 0 <= item <= INT_MAX):
            raise InvalidValue(f"meta {key!r} must hold integers from 0 to 2**63-1 ({kind})", param, str(item)[:200])
    return list(dict.fromkeys(value)) if kind.startswith("set[") else value
