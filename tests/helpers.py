"""What tests of every tier share besides fixtures: where things are, and how a missing service is met.

A test module imports these from here, never from conftest.py (pytest loads conftest itself).
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FACES = REPO.parent / "shared" / "faces"
SERVICES_SCRIPT = REPO / "cluster" / "services.sh"
SERVICE_PORT = 18433  # the API tier's service (not the default 18411, which a developer may be running)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str):
    """A service or tool the test needs is missing: a skip with the reason when run by hand, a failure in CI
    (``CI=true``, which .ci/run sets), where every part is installed and a skip would hide a broken set-up."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: nothing may be skipped for a missing service)", pytrace=False)
    pytest.skip(reason)


def answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_services(*command: str) -> None:
    """cluster/services.sh COMMAND [NODE]: the real Cassandra (one node or the ring) and memcached."""
    subprocess.run(["bash", str(SERVICES_SCRIPT), *command], check=True, timeout=300)


def deploy_app(app: str, route_prefix: str, args: dict, ingress_user_config: dict | None = None) -> None:
    """What ``serve deploy`` does with a config file naming one more facegrid application (on the test
    port, under its own route prefix, beside the api tier's): the controller applies the whole config."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    application = {"name": app, "route_prefix": route_prefix, "import_path": "serve_app.app:app_builder", "args": args}
    if ingress_user_config is not None:
        application["deployments"] = [{"name": "Ingress", "user_config": ingress_user_config}]
    client = serve_api.serve_start(http_options={"host": "127.0.0.1", "port": SERVICE_PORT})
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [application]}))


def delete_app(app: str) -> None:
    """The application, and its shard actors (detached, so Serve leaves them)."""
    from ray import serve

    from index.shard import retire_shards

    serve.delete(app)
    retire_shards(app)
