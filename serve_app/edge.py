"""The ASGI middleware in front of every route: what is refused before FastAPI routes a request."""

from __future__ import annotations

from .errors import OverCapacity, Unauthorized
from .handlers import error_response
from .images import body_too_large, drain_body

OPEN_PATHS = ("/healthz", "/readyz", "/v2/docs", "/v2/openapi.json")
ADMITTED_REQUESTS = {("POST", "/v2/detect")}  # requests that hold a place in the Detector's queue


class EdgeMiddleware:
    """Accepts a trailing slash on every path, refuses a body declared over the size limit, checks the
    bearer token when one is configured, and admits photo requests only while the Detector's queue has
    room (else 429 OVER_CAPACITY before any routing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/"), raw_path=path.rstrip("/").encode())
        application = scope["app"]
        services = getattr(application.state, "services", None)
        if services is None:
            await self.app(scope, receive, send)
            return
        limit = services.settings.limits.max_body_bytes
        declared = _declared_length(scope)
        if declared > limit:
            # Answered before routing, the whole upload read first: a route that never reads its body
            # would otherwise close the connection on a client still sending.
            await drain_body(receive)
            await error_response(application, body_too_large(limit, str(declared)))(scope, receive, send)
            return
        token = services.settings.auth_token
        if token and not local_path(scope).startswith(OPEN_PATHS):
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if given != f"Bearer {token}":
                refusal = Unauthorized("a valid bearer token is required")
                await error_response(application, refusal)(scope, receive, send)
                return
        if (scope["method"], local_path(scope)) not in ADMITTED_REQUESTS:
            await self.app(scope, receive, send)
            return
        if not services.try_admit():
            busy = OverCapacity("the model queues are full; retry later")
            await error_response(application, busy)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            services.release()


def local_path(scope) -> str:
    """The path without the application's route prefix (Serve gives both in the scope)."""
    root, path = scope.get("root_path", "").rstrip("/"), scope["path"]
    return path[len(root) :] if root and path.startswith(root + "/") else path


def _declared_length(scope) -> int:
    value = dict(scope["headers"]).get(b"content-length", b"")
    return int(value) if value.isdigit() else 0
