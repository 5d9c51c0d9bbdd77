"""``/healthz`` (the process is up) and ``/readyz`` (every part answers; each shard replica's state)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .services import ServicesDep

router = APIRouter(tags=["operations"])

# What /readyz shows of each shard replica.
SHARD_FIELDS = (
    "state",
    "faces",
    "index_bytes",
    "coded_faces",
    "threads",
    "tuning",
    "search_device",
    "rebuild_s",
    "started_from",
    "replayed",
    "snapshot_age_s",
    "node",
    "huge_page_bytes",
)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Models loaded, store and cache reachable, shards loaded")
async def readyz(services: ServicesDep) -> JSONResponse:
    async def check(name: str, probe) -> tuple[str, str]:
        try:
            await asyncio.wait_for(probe, 5)
            return name, "ok"
        except Exception as error:  # noqa: BLE001 - any failure means: not ready, and says why
            return name, f"{type(error).__name__}: {error}"[:200]

    replicas, *answers = await asyncio.gather(
        services.router.health(timeout_s=4),
        check("detector", services.detector.ping.remote()),
        check("extractor", services.extractor.ping.remote()),
        check("store", services.in_thread(services.store.list_galleries)),
        check("cache", services.cache.ping()),
    )
    checks = dict(answers)
    # Ready while every shard has a live replica: the others may still be rebuilding after a restart.
    missing = [shard for shard, states in enumerate(replicas) if all(r["state"] != "ready" for r in states)]
    checks["shards"] = (
        f"ShardUnavailable: shards {missing} have no ready replica (starting or rebuilding)" if missing else "ok"
    )
    ready = all(state == "ok" for state in checks.values())
    body = {
        "ready": ready,
        "checks": checks,
        "shards": [[{key: r[key] for key in SHARD_FIELDS if key in r} for r in states] for states in replicas],
    }
    if not ready:
        body = {"code": "NOT_READY", "desc": "some parts are not ready", **body}
    return JSONResponse(body, 200 if ready else 503)
