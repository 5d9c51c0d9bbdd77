"""JSON request bodies: unreadable JSON is MALFORMED_REQUEST, a wrong field is BAD_PARAM naming it."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from .errors import BadParam, MalformedRequest
from .images import read_body

Model = TypeVar("Model", bound=BaseModel)


async def json_body(request: Request, model: type[Model], max_bytes: int, required: bool = True) -> Model:
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        if required:
            raise MalformedRequest("a JSON body is required")
        return model()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedRequest(f"the body is not valid JSON: {error}") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadParam(f"{param}: {first['msg']}", param, first.get("input")) from None
