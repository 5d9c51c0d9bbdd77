"""The Ingress deployment and the builder that binds the deployment graph.

    HTTP -> Ingress (create_api: one router module per resource) -> Detector, Extractor (models)
                                                                 -> DetectionCache, FaceStore, ShardRouter

``build_app(settings)`` returns the Serve application; ``run(settings)`` starts it on a local Ray. The
middleware (edge.py), error handlers (handlers.py) and health routes (health.py) live in modules of their own.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from ray import serve

from index.router import ShardRouter
from models.deployments import DetectorDeployment, ExtractorDeployment
from store.backends import open_cache, open_store

from . import health
from .config import DeploymentSettings, LimitSettings, Settings, load_settings
from .docs import install_docs
from .edge import EdgeMiddleware
from .handlers import install_error_handlers
from .openapi import complete as complete_openapi
from .routes import detect, faces, galleries, search, verify
from .services import Services

log = logging.getLogger("facegrid")


def create_api(services: Services | None) -> FastAPI:
    """The /v2 application of one Ingress replica, its routes reaching ``services`` through
    ``app.state`` (serve_app.services.ServicesDep)."""
    api = FastAPI(
        title="facegrid",
        version="0.1.0",
        docs_url=None,
        openapi_url="/v2/openapi.json",
        redoc_url=None,
        redirect_slashes=False,
        description="The FindFace Enterprise Server biometric API (/v2), on Ray.",
    )
    for module in (detect, verify, galleries, faces, search, health):
        api.include_router(module.router)
    api.add_middleware(EdgeMiddleware)
    install_error_handlers(api)
    install_docs(api, "/v2/openapi.json")
    api.state.services = services

    def openapi() -> dict:
        """FastAPI's document completed by serve_app/openapi.py (made once, when first asked for)."""
        if api.openapi_schema is None:
            settings = services.settings if services else None
            document = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            api.openapi_schema = complete_openapi(
                document,
                bearer_token=bool(settings and settings.auth_token),
                limits=settings.limits if settings else LimitSettings(),
            )
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the document
    return api


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings, detector, extractor):
        logging.basicConfig(level=logging.INFO)
        store = open_store(settings.store, settings.index.num_shards, settings.limits.meta)
        cache = open_cache(settings.cache)
        # Shards are named after the application, so two facegrid applications on one cluster keep apart.
        router = ShardRouter.start(
            store, settings.index, name_prefix=serve.get_replica_context().app_name, detached=True
        )
        self.services = Services(settings, store, cache, router, detector, extractor)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve asks for the replica's ASGI app after ``__init__``: one built around this replica's services."""
        return create_api(self.services)

    async def reconfigure(self, user_config: dict) -> None:
        """Serve calls this after ``__init__`` and whenever only the deployment's user_config changed
        (``serve deploy`` of an edited config file): its ``index`` entry is index tuning for this
        router and every shard replica (index.config.IndexConfig.TUNABLE), applied in place."""
        await self.services.router.configure(user_config.get("index", {}))

    def search_batch_counts(self) -> dict[int, int]:
        """Batches this replica's router sent to the shards so far, by size (for bench.search_http)."""
        return dict(self.services.router.batches_by_size)


def deployment_options(section: DeploymentSettings, gpus_present: bool, batching: bool) -> dict:
    options = {
        "ray_actor_options": {"num_cpus": section.num_cpus, "num_gpus": section.num_gpus if gpus_present else 0},
        "max_ongoing_requests": section.max_ongoing_requests,
        "max_queued_requests": section.max_queued_requests,
    }
    if section.max_replicas > max(section.min_replicas, 1):
        options["autoscaling_config"] = {
            "min_replicas": section.min_replicas,
            "max_replicas": section.max_replicas,
            "target_ongoing_requests": section.target_ongoing_requests,
            "upscale_delay_s": section.upscale_delay_s,
            "downscale_delay_s": section.downscale_delay_s,
        }
    else:
        options["num_replicas"] = max(section.min_replicas, 1)
    if batching:
        # A replica never holds more than max_ongoing_requests calls, so no batch can be larger; a batch
        # waiting for more would wait out its whole timeout.
        options["user_config"] = {
            "max_batch_size": min(section.max_batch_size, section.max_ongoing_requests),
            "batch_wait_timeout_s": section.batch_wait_timeout_s,
        }
    return options


def build_app(settings: Settings, gpus_present: bool = False):
    serve_settings = settings.serve
    # serve.deployment makes each class a Deployment; Ray's annotations still say the class.
    deployments: list[Any] = [DetectorDeployment, ExtractorDeployment, Ingress]
    detector_deployment, extractor_deployment, ingress = deployments
    detector = detector_deployment.options(**deployment_options(serve_settings.detector, gpus_present, True)).bind(
        settings.models
    )
    extractor = extractor_deployment.options(**deployment_options(serve_settings.extractor, gpus_present, True)).bind(
        settings.models
    )
    ingress_options = deployment_options(serve_settings.ingress, False, False)
    ingress_options["user_config"] = {"index": settings.index.current_tuning()}
    return ingress.options(**ingress_options).bind(settings, detector, extractor)


def ray_environment(settings: Settings) -> dict[str, str]:
    """Environment variables every Ray process of the service needs. Ray Serve reads them when it is
    imported, so they are set before Ray starts: here for a local Ray, by ``ray start``'s environment on
    a cluster (ray-config.yaml, cluster/kuberay/rayservice.yaml)."""
    # HAProxy's files default to one folder per host; one per port lets two services share a host.
    files = f"/tmp/facegrid-haproxy-{settings.port}"
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1" if settings.serve.http_proxy == "haproxy" else "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.serve.ingress_drain_s),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{files}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{files}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": files,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{files}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{files}/metrics.sock",
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.serve.haproxy_metrics_port),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.serve.haproxy_stats_port),
    }


def run(settings: Settings, *, blocking: bool = False) -> None:
    """Start the application on the Ray this process is connected to (a local one if none)."""
    import ray

    if not ray.is_initialized():
        os.environ.update(ray_environment(settings))
        ray.init(
            namespace="facegrid", include_dashboard=True, dashboard_host="127.0.0.1", logging_level=logging.WARNING
        )
    gpus_present = ray.cluster_resources().get("GPU", 0) > 0
    serve.start(
        http_options={"host": settings.host, "port": settings.port}, proxy_location=settings.serve.proxy_location
    )
    serve.run(build_app(settings, gpus_present), name="facegrid", route_prefix="/", blocking=blocking)


def stop_service() -> None:
    """Stop every Serve application and return once Serve's controller is gone, so that the next
    ``run`` on this Ray starts a fresh one (the controller outlives ``serve.shutdown`` by a few seconds
    while its replicas drain, and a ``run`` in that window attaches to the dying one). Shard replicas
    first save the writes their snapshots lack, so the next start loads them with nothing to replay, and
    are stopped last: they are detached actors, which Serve's shutdown leaves running."""
    import time

    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    from index.shard import retire_shards, save_snapshots_of_running_shards

    save_snapshots_of_running_shards()
    serve.shutdown()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            break
        time.sleep(0.2)
    retire_shards()


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
