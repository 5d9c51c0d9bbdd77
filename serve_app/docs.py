"""The API docs page (Swagger UI) served from the files the ``swagger-ui-py`` package installs, so that
it renders with no address outside the service: face services often run on isolated networks.

``/v2/docs`` and FindFace's embedded docs path ``/v2/docs/v2/overview.html`` both show it. The page, its
files and ``/v2/openapi.json`` are open without the bearer token; calls made from the page need it,
entered with the page's Authorize button.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/v2/docs"
FINDFACE_DOCS_PATH = "/v2/docs/v2/overview.html"
_STATIC = f"{DOCS_PATH}/static"


def swagger_ui_files() -> Path:
    """Swagger UI's own files inside the installed package, found without importing the package (its
    code serves other web frameworks and is not needed here)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed (make install installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install_docs(api: FastAPI, openapi_url: str) -> None:
    api.mount(_STATIC, StaticFiles(directory=swagger_ui_files()), name="docs-files")

    def page(request: Request) -> HTMLResponse:
        # Behind a route prefix (a Serve application at /something) every URL of the page carries it.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{api.title}: the /v2 API",
            swagger_js_url=f"{root}{_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_STATIC}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    api.add_api_route(DOCS_PATH, page, methods=["GET"], include_in_schema=False)
    api.add_api_route(FINDFACE_DOCS_PATH, page, methods=["GET"], include_in_schema=False)
