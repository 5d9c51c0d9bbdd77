"""The service under concurrent load, measured side by side in one run (ratios; machines are noisy).

    python -m bench.serving [--photos ../shared/faces] [--requests 96] [--num-cpus N (default: all)]

1. ``POST /v2/detect?facen=true`` with 8 concurrent clients vs the bare model pipeline in this process,
   one photo at a time (photos per second), given the same JPEG bytes the service gets (and, for
   reference, given pixels already decoded);
2. dynamic batching: 16 concurrent clients against the service with model batches of up to 16 vs
   batches of 1, sending the photos, then 640x480 JPEG camera frames made from them (with the mean batch
   each model deployment ran); then 4 clients, and one client alone, whose calls must not wait for batches
   that will not fill;
3. overload: many more concurrent detect requests than the model queues hold; the share of 429 answers
   that came back within 100 ms, for clients that retry at once, that wait Retry-After, and that wait it
   with jitter; beside it, how long the idle service takes to answer as many simultaneous GET /healthz
   (the floor the HTTP path and these clients set on this machine for any burst of that size);
4. 8 concurrent clients with onnxruntime's threads spin-waiting (its default) vs not (facegrid's);
5. 1:N search latency (one client, 2,000 faces) during the jittered overload, and with no other load.
The service runs on a local Ray on this machine, so on a small machine it shares the cores with the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from loadtests.payloads import DEFAULT_PHOTOS, load_photos, with_faces
from models.pipeline import load_pipeline
from models.runtime import SHAPE_SESSION_AFTER
from serve_app.config import load_settings

PORT = 18477
OVERLOAD_CLIENTS, OVERLOAD_REQUESTS = 48, 576


def bare_rates(pipeline, photos, warm_passes: int) -> tuple[float, float]:
    """Photos/s of the pipeline in this process: (from JPEG bytes, from decoded pixels)."""
    images = [read_image_bytes(photo) for photo in photos]
    for _ in range(warm_passes):
        for image in images:
            pipeline.detect([image], extract=True)
    started = time.perf_counter()
    for photo in photos:
        pipeline.detect([read_image_bytes(photo)], extract=True)
    from_bytes = len(photos) / (time.perf_counter() - started)
    started = time.perf_counter()
    for image in images:
        pipeline.detect([image], extract=True)
    return from_bytes, len(images) / (time.perf_counter() - started)


def read_image_bytes(photo):
    import io

    from PIL import Image

    from models.images import to_rgb_array

    return to_rgb_array(Image.open(io.BytesIO(photo.data)))


RETRY_AT_ONCE, RETRY_AFTER, RETRY_AFTER_WITH_JITTER = "at once", "after Retry-After", "after Retry-After + jitter"


def hammer(
    photos, clients: int, total: int, params: dict, retry: str = RETRY_AT_ONCE, warm_up: int | None = None
) -> tuple[float, list[tuple[int, float]]]:
    """``total`` detect requests from ``clients`` concurrent clients; returns (requests/s, [(status, seconds)]
    in the order the requests were sent: the first ``clients`` are the first wave, sent all at once).
    After a 429 a client either sends its next request at once (refusals queue behind refusals: N clients x
    the cost of one refusal), or waits Retry-After (clients refused together come back together), or waits
    Retry-After times a random factor from 1 to 2 (jitter, as client libraries' back-off does).
    The clients are coroutines on one event loop, not threads: 48 threads under one GIL hand it over every
    5 ms (sys.getswitchinterval), and that wait, which independent clients do not have, would be timed as
    the service's. ``warm_up`` requests go first, untimed (default: one per client)."""
    return asyncio.run(_hammer(photos, clients, total, params, retry, warm_up))


async def _hammer(photos, clients: int, total: int, params: dict, retry: str, warm_up: int | None):
    jitter = random.Random(7)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=120, limits=limits) as client:

        async def one(index: int) -> tuple[int, float]:
            photo = photos[index % len(photos)]
            started = time.perf_counter()
            response = await client.post(
                "/v2/detect", params=params, content=photo.data, headers={"Content-Type": photo.content_type}
            )
            seconds = time.perf_counter() - started
            if retry != RETRY_AT_ONCE and response.status_code == 429:
                wait = float(response.headers["Retry-After"])
                await asyncio.sleep(wait * jitter.uniform(1, 2) if retry == RETRY_AFTER_WITH_JITTER else wait)
            return response.status_code, seconds

        async def run(count: int) -> list[tuple[int, float]]:
            indices = iter(range(count))
            results: list[tuple[int, float]] = [(0, 0.0)] * count

            async def client_loop():
                for index in indices:  # each client takes the next request when its last one is done
                    results[index] = await one(index)

            await asyncio.gather(*(client_loop() for _ in range(clients)))
            return results

        await run(min(clients, total) if warm_up is None else warm_up)  # connections opened, models loaded
        started = time.perf_counter()
        results = await run(total)
        return total / (time.perf_counter() - started), results


def burst_seconds(clients: int, bursts: int = 5) -> list[float]:
    """Seconds per answer when ``clients`` GET /healthz are sent at the same instant, ``bursts`` times."""

    async def run() -> list[float]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60, limits=limits) as client:

            async def one() -> float:
                started = time.perf_counter()
                (await client.get("/healthz")).raise_for_status()
                return time.perf_counter() - started

            await asyncio.gather(*(one() for _ in range(clients)))  # opens the connections
            seconds = []
            for _ in range(bursts):
                seconds += await asyncio.gather(*(one() for _ in range(clients)))
                await asyncio.sleep(0.5)
            return seconds

    return asyncio.run(run())


def search_gallery(faces: int = 2000) -> list[str]:
    """Fills the gallery "bench" with ``faces`` face-like vectors; returns 64 of them as looks_like sources."""
    from serve_app.face_wire import encode_facen
    from tests.factories import clustered_unit_vectors

    vectors = clustered_unit_vectors(faces, 128, seed=5)
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as client:
        client.post("/v2/galleries/bench")
        for start in range(0, faces, 1000):
            items = [
                {"id": start + i + 1, "from": "facen:" + encode_facen(vector)}
                for i, vector in enumerate(vectors[start : start + 1000])
            ]
            client.post("/v2/galleries/bench/faces", json={"faces": items}).raise_for_status()
    return ["facen:" + encode_facen(vector) for vector in vectors[:64]]


def searches_during(action, probes: list[str]) -> list[float]:
    """Seconds per search of one client searching the bench gallery one query after another while
    ``action()`` runs."""
    import threading

    done, seconds = threading.Event(), list[float]()

    def search_loop():
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120) as client:
            while not done.is_set():
                started = time.perf_counter()
                response = client.get(
                    "/v2/galleries/bench/faces", params={"looks_like": probes[len(seconds) % len(probes)], "limit": 10}
                )
                response.raise_for_status()
                seconds.append(time.perf_counter() - started)
                time.sleep(0.02)

    searcher = threading.Thread(target=search_loop)
    searcher.start()
    try:
        action()
    finally:
        done.set()
        searcher.join()
    return seconds


def camera_frames(photos):
    """Each photo letterboxed into a 640x480 JPEG frame, as a fixed camera sends them."""
    import dataclasses
    import io

    from PIL import Image

    from bench.models import camera_frame

    frames = []
    for photo in photos:
        buffer = io.BytesIO()
        Image.fromarray(camera_frame(read_image_bytes(photo))).save(buffer, "JPEG", quality=90)
        frames.append(dataclasses.replace(photo, data=buffer.getvalue(), content_type="image/jpeg"))
    return frames


def start_local_ray(num_cpus: int) -> None:
    """A Ray of its own for a benchmark's service, quiet, with the drain the benchmarks' restarts wait out."""
    import ray

    from serve_app.app import ray_environment

    os.environ.update(ray_environment(load_settings(serve={"ingress_drain_s": 1})))
    ray.init(
        address="local",
        num_cpus=num_cpus,
        namespace="facegrid-bench",
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )


def batch_counts() -> dict[str, Counter]:
    from ray import serve

    return {
        name: Counter(serve.get_deployment_handle(name, app_name="facegrid").batch_counts.remote().result())
        for name in ("Detector", "Extractor")
    }


def mean_batch(ran: Counter) -> float:
    """The mean size of the batches counted in ``ran`` (size -> batches run), 0 when none ran."""
    return sum(size * n for size, n in ran.items()) / max(ran.total(), 1)


def mean_batches(before: dict[str, Counter], after: dict[str, Counter]) -> str:
    return ", ".join(f"{name} {mean_batch(after[name] - before[name]):.1f}" for name in after)


def median_ms(results: list[tuple[int, float]]) -> float:
    return statistics.median(seconds for _, seconds in results) * 1000


def serve_with(settings) -> None:
    from serve_app.app import run, wait_until_ready

    run(settings)
    if not wait_until_ready(f"http://127.0.0.1:{settings.port}", 300):
        raise RuntimeError("the service did not become ready")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs the local Ray may use")
    args = parser.parse_args(argv)
    photos = with_faces(load_photos(args.photos), exactly=1)
    frames = camera_frames(photos)
    scratch = Path(tempfile.mkdtemp())

    def settings_for(batch: int, queue: int = 256, ongoing: int = 32, **models):
        model = {"max_batch_size": batch, "max_queued_requests": queue, "max_ongoing_requests": ongoing}
        return load_settings(
            port=PORT,
            store={"path": scratch / "faces.db"},
            models=models,
            serve={"detector": model, "extractor": model},
        )

    base = settings_for(16)
    pipeline = load_pipeline(base.models)
    # On CUDA the runners give a recurring input shape its own session after a few calls (models/runtime.py):
    # every photo goes through that many times before the clock starts, in the bare pipeline and the service.
    shape_keyed = getattr(getattr(pipeline.detector, "pnet", None), "fixed_shapes", False)
    warm_passes = SHAPE_SESSION_AFTER if shape_keyed else 1
    bare, bare_pixels = bare_rates(pipeline, photos[: args.requests], warm_passes)
    del pipeline

    def warm(items) -> int:
        return min(len(items), args.requests) * warm_passes

    import ray

    from serve_app.app import stop_service

    start_local_ray(args.num_cpus)
    try:
        serve_with(base)
        eight, _ = hammer(photos, 8, args.requests, {"facen": "true"}, warm_up=warm(photos))
        counts = batch_counts()
        sixteen_batched, _ = hammer(photos, 16, args.requests, {"facen": "true"}, warm_up=warm(photos))
        photo_batches, counts = mean_batches(counts, batch_counts()), batch_counts()
        frames_batched, _ = hammer(frames, 16, args.requests, {"facen": "true"}, warm_up=warm(frames))
        frame_batches = mean_batches(counts, batch_counts())
        four_batched, _ = hammer(photos, 4, args.requests, {"facen": "true"})
        alone_batched = median_ms(hammer(photos, 1, args.requests // 2, {"facen": "true"}, warm_up=1)[1])
        stop_service()

        serve_with(settings_for(1))
        sixteen_single, _ = hammer(photos, 16, args.requests, {"facen": "true"}, warm_up=warm(photos))
        frames_single, _ = hammer(frames, 16, args.requests, {"facen": "true"}, warm_up=warm(frames))
        four_single, _ = hammer(photos, 4, args.requests, {"facen": "true"})
        alone_single = median_ms(hammer(photos, 1, args.requests // 2, {"facen": "true"}, warm_up=1)[1])
        stop_service()

        overload, search_seconds = {}, {}
        serve_with(settings_for(4, queue=4, ongoing=2))
        burst = sorted(burst_seconds(OVERLOAD_CLIENTS))
        probes = search_gallery()
        search_seconds["no other load"] = searches_during(lambda: time.sleep(8), probes)
        for retry in (RETRY_AT_ONCE, RETRY_AFTER):
            overload[retry] = hammer(photos, OVERLOAD_CLIENTS, OVERLOAD_REQUESTS, {}, retry)[1]

        def jittered_overload():
            retry = RETRY_AFTER_WITH_JITTER
            overload[retry] = hammer(photos, OVERLOAD_CLIENTS, OVERLOAD_REQUESTS, {}, retry)[1]

        search_seconds["during the jittered overload"] = searches_during(jittered_overload, probes)
        stop_service()

        serve_with(settings_for(16, spin_wait=True))
        eight_spinning, _ = hammer(photos, 8, args.requests, {"facen": "true"}, warm_up=warm(photos))
        stop_service()
    finally:
        ray.shutdown()

    print("1. detect + facen, photos/s")
    print(f"   bare pipeline, one process, one at a time   {bare:7.1f}")
    print(f"     (given decoded pixels: {bare_pixels:.1f}; service {eight / bare_pixels:.2f}x of that)")
    print(f"   service, 8 concurrent clients               {eight:7.1f}   {eight / bare:.2f}x")
    print("\n2. dynamic batching, 16 concurrent clients, photos/s")
    print(f"   model batches of 1                          {sixteen_single:7.1f}")
    print(
        f"   model batches up to 16                      {sixteen_batched:7.1f}   "
        f"{sixteen_batched / sixteen_single:.2f}x"
        f"   (mean batch, warm-up included: {photo_batches})"
    )
    print(f"   640x480 camera frames, batches of 1         {frames_single:7.1f}")
    print(
        f"   640x480 camera frames, batches up to 16     {frames_batched:7.1f}   "
        f"{frames_batched / frames_single:.2f}x"
        f"   (mean batch, warm-up included: {frame_batches})"
    )
    print(
        f"   4 clients, photos/s: batches of 1 {four_single:.1f}, batches up to 16 {four_batched:.1f}   "
        f"({four_batched / four_single:.2f}x)"
    )
    print(
        f"   one client alone, median ms per request: batches of 1 {alone_single:.1f}, "
        f"batches up to 16 {alone_batched:.1f}   ({alone_batched / alone_single:.2f}x)"
    )
    print(
        f"\n3. overload: {OVERLOAD_REQUESTS} detect requests from {OVERLOAD_CLIENTS} clients that start "
        "together, queues of 4 per model deployment"
    )
    for retry, results in overload.items():
        statuses = dict(sorted(Counter(status for status, _ in results).items()))
        print(f"   clients retrying {retry}: answers by status {statuses}")
        for label, part in (
            ("the first wave", results[:OVERLOAD_CLIENTS]),
            ("after the first wave", results[OVERLOAD_CLIENTS:]),
        ):
            refused = sorted(seconds for status, seconds in part if status == 429)
            if refused:
                fast = sum(1 for seconds in refused if seconds <= 0.1)
                print(
                    f"      {label:22s} 429 within 100 ms {fast}/{len(refused)} = {fast / len(refused):.1%}   "
                    f"(median {statistics.median(refused) * 1000:.0f} ms, "
                    f"p99 {refused[int(0.99 * (len(refused) - 1))] * 1000:.0f} ms)"
                )
    print(
        f"   for reference, {OVERLOAD_CLIENTS} simultaneous GET /healthz on the idle service: median "
        f"{statistics.median(burst) * 1000:.0f} ms, p99 {burst[int(0.99 * (len(burst) - 1))] * 1000:.0f} ms"
    )
    print("\n4. detect + facen, 8 concurrent clients, photos/s")
    print(f"   onnxruntime threads spin-waiting            {eight_spinning:7.1f}")
    print(f"   not spinning (models.spin_wait=false)       {eight:7.1f}   {eight / eight_spinning:.2f}x")
    print("\n5. one client searching 2,000 faces, ms per search")
    for label, seconds in search_seconds.items():
        seconds = sorted(seconds)
        print(
            f"   {label:28s}   median {statistics.median(seconds) * 1000:6.1f}   "
            f"p99 {seconds[int(0.99 * (len(seconds) - 1))] * 1000:6.1f}   ({len(seconds)} searches)"
        )


if __name__ == "__main__":
    main()
