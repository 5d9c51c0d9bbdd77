"""The service under concurrent load, measured side by side in one run (ratios; machines are noisy).

    python -m bench.serving [--photos ../shared/faces] [--requests 96]

1. ``POST /v2/detect?facen=true`` with 8 concurrent clients vs the bare model pipeline in this process,
   one photo at a time (photos per second);
2. dynamic batching: 16 concurrent clients against the service with model batches of up to 16 vs
   batches of 1, sending the photos, then 640x480 JPEG camera frames made from them;
3. overload: many more concurrent detect requests than the model queues hold; the share of 429 answers
   that came back within 100 ms;
4. 8 concurrent clients with onnxruntime's threads spin-waiting (its default) vs not (facegrid's).
The service runs on a local Ray on this machine, so on a small machine it shares the cores with the clients.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from loadtests.payloads import DEFAULT_PHOTOS, load_photos, with_faces
from models.pipeline import load_pipeline
from serve_app.config import load_settings

PORT = 18477


def bare_rate(settings, photos) -> float:
    pipeline = load_pipeline(settings.models)
    images = [read_image_bytes(photo) for photo in photos]
    pipeline.detect(images[:2], extract=True)      # warm-up
    started = time.perf_counter()
    for image in images:
        pipeline.detect([image], extract=True)
    return len(images) / (time.perf_counter() - started)


def read_image_bytes(photo):
    import io

    from PIL import Image

    from models.images import to_rgb_array

    return to_rgb_array(Image.open(io.BytesIO(photo.data)))


def hammer(photos, clients: int, total: int, params: dict,
           honour_retry_after: bool = False) -> tuple[float, list[tuple[int, float]]]:
    """``total`` detect requests from ``clients`` threads; returns (requests/s, [(status, seconds)]).
    A client that honours Retry-After waits that long after a 429 before its next request; one that does
    not retries at once, so refusals queue behind refusals (N clients x the cost of one refusal)."""
    client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=120,
                          limits=httpx.Limits(max_connections=clients * 2))

    def one(index: int):
        photo = photos[index % len(photos)]
        started = time.perf_counter()
        response = client.post("/v2/detect", params=params, content=photo.data,
                               headers={"Content-Type": photo.content_type})
        seconds = time.perf_counter() - started
        if honour_retry_after and response.status_code == 429:
            time.sleep(float(response.headers["Retry-After"]))
        return response.status_code, seconds

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(min(clients, total))))          # warm-up
        started = time.perf_counter()
        results = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - started
    client.close()
    return total / elapsed, results


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


def serve_with(settings) -> None:
    from serve_app.app import run, wait_until_ready

    run(settings)
    if not wait_until_ready(f"http://127.0.0.1:{PORT}", 300):
        raise RuntimeError("the service did not become ready")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--requests", type=int, default=96)
    args = parser.parse_args(argv)
    photos = with_faces(load_photos(args.photos), exactly=1)
    frames = camera_frames(photos)
    scratch = Path(tempfile.mkdtemp())

    def settings_for(batch: int, queue: int = 256, ongoing: int = 32, spin_wait: bool = False):
        model = {"max_batch_size": batch, "max_queued_requests": queue, "max_ongoing_requests": ongoing}
        return load_settings(port=PORT, store={"path": scratch / "faces.db"}, models={"spin_wait": spin_wait},
                             serve={"detector": model, "extractor": model})

    base = settings_for(16)
    bare = bare_rate(base, photos[:args.requests])

    import ray
    from ray import serve

    ray.init(address="local", num_cpus=2, namespace="facegrid-bench", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        serve_with(base)
        eight, _ = hammer(photos, 8, args.requests, {"facen": "true"})
        sixteen_batched, _ = hammer(photos, 16, args.requests, {"facen": "true"})
        frames_batched, _ = hammer(frames, 16, args.requests, {"facen": "true"})
        serve.shutdown()

        serve_with(settings_for(1))
        sixteen_single, _ = hammer(photos, 16, args.requests, {"facen": "true"})
        frames_single, _ = hammer(frames, 16, args.requests, {"facen": "true"})
        serve.shutdown()

        serve_with(settings_for(4, queue=4, ongoing=2))
        _, overload = hammer(photos, 48, 192, {})
        _, overload_polite = hammer(photos, 48, 192, {}, honour_retry_after=True)
        serve.shutdown()

        serve_with(settings_for(16, spin_wait=True))
        eight_spinning, _ = hammer(photos, 8, args.requests, {"facen": "true"})
        serve.shutdown()
    finally:
        ray.shutdown()

    print("1. detect + facen, photos/s")
    print(f"   bare pipeline, one process, one at a time   {bare:7.1f}")
    print(f"   service, 8 concurrent clients               {eight:7.1f}   {eight / bare:.2f}x")
    print("\n2. dynamic batching, 16 concurrent clients, photos/s")
    print(f"   model batches of 1                          {sixteen_single:7.1f}")
    print(f"   model batches up to 16                      {sixteen_batched:7.1f}   {sixteen_batched / sixteen_single:.2f}x")
    print(f"   640x480 camera frames, batches of 1         {frames_single:7.1f}")
    print(f"   640x480 camera frames, batches up to 16     {frames_batched:7.1f}   {frames_batched / frames_single:.2f}x")
    print("\n3. overload: 192 detect requests from 48 clients, queues of 4 per model deployment")
    for label, results in (("clients retrying at once", overload), ("clients honouring Retry-After", overload_polite)):
        refused = [seconds for status, seconds in results if status == 429]
        fast = sum(1 for seconds in refused if seconds <= 0.1)
        statuses = dict(sorted(Counter(status for status, _ in results).items()))
        print(f"   {label}: answers by status {statuses}")
        if refused:
            print(f"      429 within 100 ms   {fast}/{len(refused)} = {fast / len(refused):.1%}   "
                  f"(median {statistics.median(refused) * 1000:.0f} ms)")
    print("\n4. detect + facen, 8 concurrent clients, photos/s")
    print(f"   onnxruntime threads spin-waiting            {eight_spinning:7.1f}")
    print(f"   not spinning (models.spin_wait=false)       {eight:7.1f}   {eight / eight_spinning:.2f}x")


if __name__ == "__main__":
    main()
