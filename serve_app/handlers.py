"""Where every error becomes the spec's HTTP answer: facegrid's own, Starlette's routing errors, FastAPI's
validation of the query models, and anything unexpected (UNKNOWN_ERROR, logged with a request id)."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facegrid.errors import FacegridError

from .errors import BadParam, NotImplementedHere, RouteNotFound, describe

log = logging.getLogger("facegrid")


def error_response(app, error: BaseException) -> JSONResponse:
    """The answer to ``error`` in ``app`` (whose services, once installed, set Retry-After)."""
    services = getattr(app.state, "services", None)
    retry_after = services.settings.serve.retry_after_s if services else 1
    status, body, headers = describe(error, retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


def validation_error(error: RequestValidationError) -> BadParam:
    """The first thing a query model refused, as a BAD_PARAM naming the parameter as the client sent it."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    where = location[1] if location[:1] in (["query"], ["path"]) and len(location) > 1 else ".".join(location[1:])
    message = str(first["msg"]).removeprefix("Value error, ")
    return BadParam(f"{where or 'request'}: {message}", where or "request", first.get("input", ""))


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(FacegridError)
    async def _facegrid_error(request: Request, error: FacegridError) -> JSONResponse:
        return error_response(request.app, error)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 405:
            failure: FacegridError = NotImplementedHere(f"{request.method} is not supported on {request.url.path}")
        elif error.status_code == 404:
            failure = RouteNotFound(f"no route {request.method} {request.url.path}")
        else:
            failure = BadParam(str(error.detail), "request", error.status_code)
        return error_response(request.app, failure)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(request.app, validation_error(error))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error, request id %s: %s %s", request_id, request.method, request.url.path)
        return JSONResponse({"code": "UNKNOWN_ERROR", "desc": f"internal error (request id {request_id})"}, 500)
