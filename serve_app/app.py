"""The FastAPI ingress, its Ray Serve deployment, and the builder that binds the deployment graph.

    HTTP -> Ingress (this module; one router module per resource) -> Detector, Extractor (models)
                                                                  -> DetectionCache, FaceStore, ShardRouter

``build_app(settings)`` returns the Serve application; ``run(settings)`` starts it on a local Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from index.config import IndexConfig
from index.router import ShardRouter
from models.deployments import DetectorDeployment, ExtractorDeployment
from store.base import FaceStore
from store.cache import ActorDetectionCache, DetectionCache, MemcachedDetectionCache
from store.errors import FacegridError
from store.meta import MetaRules
from store.sqlite import SqliteFaceStore

from .config import DeploymentSettings, Settings, load_settings
from .docs import install_docs
from .errors import BadParam, NotImplementedHere, OverCapacity, RouteNotFound, Unauthorized, describe
from .images import body_too_large, drain_body
from .openapi import complete as complete_openapi
from .routes import detect, faces, galleries, search, verify
from .services import Services, current, install, installed

log = logging.getLogger("facegrid")
OPEN_PATHS = ("/healthz", "/readyz", "/v2/docs", "/v2/openapi.json")

api = FastAPI(title="facegrid", version="0.1.0", docs_url=None, openapi_url="/v2/openapi.json",
              redoc_url=None, redirect_slashes=False,
              description="The FindFace Enterprise Server biometric API (/v2), on Ray.")
for module in (detect, verify, galleries, faces, search):
    api.include_router(module.router)


ADMITTED_REQUESTS = {("POST", "/v2/detect")}     # requests that hold a place in the Detector's queue


class EdgeMiddleware:
    """Accepts a trailing slash on every path, checks the bearer token when one is configured, and admits
    photo requests only while the Detector's queue has room (else 429 OVER_CAPACITY before any routing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope, path=path.rstrip("/"), raw_path=path.rstrip("/").encode())
            services = installed()
            declared = _declared_length(scope)
            if services is not None and declared > services.settings.limits.max_body_bytes:
                # Answered before routing, the whole upload read first: a route that never reads its
                # body would otherwise close the connection on a client still sending.
                await drain_body(receive)
                error = body_too_large(services.settings.limits.max_body_bytes, str(declared))
                await _error_response(error)(scope, receive, send)
                return
            token = services.settings.auth_token if services else None
            if token and not _local_path(scope).startswith(OPEN_PATHS):
                given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
                if given != f"Bearer {token}":
                    status, body, headers = describe(Unauthorized("a valid bearer token is required"))
                    await JSONResponse(body, status, headers)(scope, receive, send)
                    return
            if services is not None and (scope["method"], _local_path(scope)) in ADMITTED_REQUESTS:
                if not services.try_admit():
                    await _error_response(OverCapacity("the model queues are full; retry later"))(
                        scope, receive, send)
                    return
                try:
                    await self.app(scope, receive, send)
                finally:
                    services.release()
                return
        await self.app(scope, receive, send)


def _local_path(scope) -> str:
    """The path without the application's route prefix (Serve gives both in the scope)."""
    root, path = scope.get("root_path", "").rstrip("/"), scope["path"]
    return path[len(root):] if root and path.startswith(root + "/") else path


def _declared_length(scope) -> int:
    value = dict(scope["headers"]).get(b"content-length", b"")
    return int(value) if value.isdigit() else 0


api.add_middleware(EdgeMiddleware)


def _error_response(error: BaseException) -> JSONResponse:
    services = installed()
    retry_after = services.settings.serve.retry_after_s if services else 1
    status, body, headers = describe(error, retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(FacegridError)
async def _facegrid_error(request: Request, error: FacegridError) -> JSONResponse:
    return _error_response(error)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 405:
        return _error_response(NotImplementedHere(f"{request.method} is not supported on {request.url.path}"))
    if error.status_code == 404:
        return _error_response(RouteNotFound(f"no route {request.method} {request.url.path}"))
    return _error_response(BadParam(str(error.detail), "request", error.status_code))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"][1:]) or "request"
    return _error_response(BadParam(first["msg"], param, first.get("input")))


@api.exception_handler(Exception)
async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex[:12]
    log.exception("unexpected error, request id %s: %s %s", request_id, request.method, request.url.path)
    return JSONResponse({"code": "UNKNOWN_ERROR", "desc": f"internal error (request id {request_id})"}, 500)


@api.get("/healthz", tags=["operations"], summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


# What /readyz shows of each shard replica.
SHARD_FIELDS = ("state", "faces", "index_bytes", "threads", "rebuild_s", "started_from", "replayed",
                "snapshot_age_s", "node", "huge_page_bytes")


@api.get("/readyz", tags=["operations"], summary="Models loaded, store and cache reachable, shards loaded")
async def readyz(request: Request) -> JSONResponse:
    services: Services = current()

    async def check(name: str, probe) -> tuple[str, str]:
        try:
            await asyncio.wait_for(probe, 5)
            return name, "ok"
        except Exception as error:  # noqa: BLE001 - any failure means: not ready, and says why
            return name, f"{type(error).__name__}: {error}"[:200]

    replicas, *answers = await asyncio.gather(
        services.router.health(timeout_s=4),
        check("detector", services.detector.ping.remote()), check("extractor", services.extractor.ping.remote()),
        check("store", services.in_thread(services.store.list_galleries)), check("cache", services.cache.ping()))
    checks = dict(answers)
    # Ready while every shard has a live replica: the others may still be rebuilding after a restart.
    missing = [shard for shard, states in enumerate(replicas) if all(r["state"] != "ready" for r in states)]
    checks["shards"] = (f"ShardUnavailable: shards {missing} have no ready replica (starting or rebuilding)"
                        if missing else "ok")
    ready = all(state == "ok" for state in checks.values())
    body = {"ready": ready, "checks": checks,
            "shards": [[{key: r[key] for key in SHARD_FIELDS if key in r} for r in states] for states in replicas]}
    if not ready:
        body = {"code": "NOT_READY", "desc": "some parts are not ready", **body}
    return JSONResponse(body, 200 if ready else 503)


install_docs(api, "/v2/openapi.json")


def _openapi() -> dict:
    """FastAPI's document completed by serve_app/openapi.py (made once, when first asked for)."""
    if api.openapi_schema is None:
        services = installed()
        document = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        settings = services.settings if services else None
        api.openapi_schema = complete_openapi(document, bearer_token=bool(settings and settings.auth_token),
                                              return_facen=bool(settings and settings.limits.allow_return_facen),
                                              meta_rules=settings.limits.meta if settings else MetaRules())
    return api.openapi_schema


api.openapi = _openapi


def open_store(settings: Settings) -> FaceStore:
    """The configured FaceStore: embedded SQLite by default, Cassandra on a cluster."""
    if settings.store.kind == "cassandra":
        from store.cassandra import CassandraFaceStore

        c = settings.store.cassandra
        return CassandraFaceStore(c.hosts, c.port, c.keyspace, settings.index.num_shards,
                                  replication_factor=c.replication_factor, read_consistency=c.read_consistency,
                                  write_consistency=c.write_consistency, max_in_flight=c.max_in_flight,
                                  request_timeout_s=c.request_timeout_s, page_size=c.page_size,
                                  change_log_retention_s=settings.store.change_log_retention_s,
                                  meta_rules=settings.limits.meta)
    return SqliteFaceStore(settings.store.path, settings.index.num_shards, settings.store.busy_timeout_s,
                           settings.store.change_log_retention_s, settings.limits.meta)


def open_cache(settings: Settings) -> DetectionCache:
    """The configured DetectionCache: one embedded actor by default, memcached on a cluster."""
    if settings.cache.kind == "memcached":
        return MemcachedDetectionCache(settings.cache.servers, settings.cache.timeout_s)
    return ActorDetectionCache(settings.cache.max_entries, detached=True)


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, settings: Settings, detector, extractor):
        logging.basicConfig(level=logging.INFO)
        store = open_store(settings)
        cache = open_cache(settings)
        # Shards are named after the application, so two facegrid applications on one cluster keep apart.
        router = ShardRouter.start(store, settings.index, name_prefix=serve.get_replica_context().app_name,
                                   detached=True)
        install(Services(settings, store, cache, router, detector, extractor))

    async def reconfigure(self, user_config: dict) -> None:
        """Serve calls this after ``__init__`` and whenever only the deployment's user_config changed
        (``serve deploy`` of an edited config file): its ``index`` entry is index tuning for this
        router and every shard replica (index.config.IndexConfig.TUNABLE), applied in place."""
        await current().router.configure(user_config.get("index", {}))


def deployment_options(section: DeploymentSettings, gpus_present: bool, batching: bool) -> dict:
    options = {
        "ray_actor_options": {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus if gpus_present else 0},
        "max_ongoing_requests": section.max_ongoing_requests,
        "max_queued_requests": section.max_queued_requests,
    }
    if section.max_replicas > max(section.min_replicas, 1):
        options["autoscaling_config"] = {"min_replicas": section.min_replicas, "max_replicas": section.max_replicas,
                                         "target_ongoing_requests": section.target_ongoing_requests,
                                         "upscale_delay_s": section.upscale_delay_s,
                                         "downscale_delay_s": section.downscale_delay_s}
    else:
        options["num_replicas"] = max(section.min_replicas, 1)
    if batching:
        # A replica never holds more than max_ongoing_requests calls, so no batch can be larger; a batch
        # waiting for more would wait out its whole timeout.
        options["user_config"] = {"max_batch_size": min(section.max_batch_size, section.max_ongoing_requests),
                                  "batch_wait_timeout_s": section.batch_wait_timeout_s}
    return options


def build_app(settings: Settings, gpus_present: bool = False):
    serve_settings = settings.serve
    detector = DetectorDeployment.options(
        **deployment_options(serve_settings.detector, gpus_present, True)).bind(settings.models)
    extractor = ExtractorDeployment.options(
        **deployment_options(serve_settings.extractor, gpus_present, True)).bind(settings.models)
    ingress_options = deployment_options(serve_settings.ingress, False, False)
    ingress_options["user_config"] = {"index": {name: getattr(settings.index, name)
                                                for name in sorted(IndexConfig.TUNABLE)}}
    return Ingress.options(**ingress_options).bind(settings, detector, extractor)


def ray_environment(settings: Settings) -> dict[str, str]:
    """Environment variables every Ray process of the service needs. Ray Serve reads them when it is
    imported, so they are set before Ray starts: here for a local Ray, by ``ray start``'s environment on
    a cluster (ray-config.yaml, cluster/kuberay/rayservice.yaml)."""
    # HAProxy's files default to one folder per host; one per port lets two services share a host.
    files = f"/tmp/facegrid-haproxy-{settings.port}"
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1" if settings.serve.http_proxy == "haproxy" else "0",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.serve.ingress_drain_s),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{files}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{files}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": files,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{files}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{files}/metrics.sock",
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.serve.haproxy_metrics_port),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.serve.haproxy_stats_port)}


def run(settings: Settings, *, blocking: bool = False) -> None:
    """Start the application on the Ray this process is connected to (a local one if none)."""
    import ray

    if not ray.is_initialized():
        os.environ.update(ray_environment(settings))
        ray.init(namespace="facegrid", include_dashboard=True, dashboard_host="127.0.0.1", logging_level="WARNING")
    gpus_present = ray.cluster_resources().get("GPU", 0) > 0
    serve.start(http_options={"host": settings.host, "port": settings.port},
                proxy_location=settings.serve.proxy_location)
    serve.run(build_app(settings, gpus_present), name="facegrid", route_prefix="/", blocking=blocking)


def stop_service() -> None:
    """Stop every Serve application and return once Serve's controller is gone, so that the next
    ``run`` on this Ray starts a fresh one (the controller outlives ``serve.shutdown`` by a few seconds
    while its replicas drain, and a ``run`` in that window attaches to the dying one). Shard replicas
    first save the writes their snapshots lack, so the next start loads them with nothing to replay."""
    import time

    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    from index.shard import save_snapshots_of_running_shards

    save_snapshots_of_running_shards()
    serve.shutdown()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)


def wait_until_ready(base_url: str, timeout_s: float) -> bool:
    """Poll ``/readyz`` until it answers 200 (True) or ``timeout_s`` has passed (False): for whatever
    starts the service and must not send traffic before the models and shards have loaded."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base_url, timeout=10) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(1)


def app_builder(args: dict):
    """Ray Serve's entry point for config files (``import_path: serve_app.app:app_builder``): ``args`` are
    facegrid settings (the same keys as the YAML file); the environment still applies on top."""
    import ray

    settings = load_settings(**(args or {}))
    gpus_present = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return build_app(settings, gpus_present)
