"""Model throughput, measured side by side in one run (ratios; absolute numbers depend on the machine).

    python -m bench.models [--photos ../shared/faces] [--rounds 3]

1. detect + extract, faces/s, with the photos grouped in batches of 1, 8 and 16; then the same with
   every photo letterboxed into one 640x480 frame, as a camera sends (same-sized images share P-Net calls);
2. the extractor alone on aligned chips at batch 1 vs 16 (what Serve's dynamic batching buys);
3. onnxruntime vs the PyTorch modules, running the same cascade on the same photos.
Each figure is the best of ``--rounds`` passes, so one noisy pass does not decide it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from models.detector import MtcnnDetector
from models.export import build_torch
from models.extractor import DlibExtractor
from models.images import read_image
from models.pipeline import FacePipeline, load_pipeline
from models.runtime import TorchRunner
from serve_app.config import load_settings

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "faces"


def best_rate(work, count: int, rounds: int) -> float:
    """Items per second of the fastest of ``rounds`` passes of ``work()``."""
    fastest = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        fastest = min(fastest, time.perf_counter() - start)
    return count / fastest


def faces_per_second(pipeline: FacePipeline, photos: list[np.ndarray], batch: int, rounds: int) -> float:
    total = sum(len(found) for found in pipeline.detector.detect_batch(photos))

    def run():
        for start in range(0, len(photos), batch):
            pipeline.detect(photos[start:start + batch], extract=True)
    return best_rate(run, total, rounds)


def camera_frame(photo: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """The photo scaled to fit a width x height frame and centred on black, like a fixed camera's frames."""
    import cv2

    scale = min(width / photo.shape[1], height / photo.shape[0])
    size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    frame = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    frame[top:top + size[1], left:left + size[0]] = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    return frame


def torch_pipeline(data_dir: Path, config) -> FacePipeline:
    runners = {name: TorchRunner(build_torch(data_dir, name))
               for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "dlib_resnet")}
    detector = MtcnnDetector(runners["mtcnn_pnet"], runners["mtcnn_rnet"], runners["mtcnn_onet"], config.detector)
    return FacePipeline(detector, DlibExtractor(runners["dlib_resnet"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.photos / "labels.csv").is_file():
        raise SystemExit(f"no photos at {args.photos} (a folder with labels.csv, like ../shared/faces)")

    config = load_settings().models
    pipeline = load_pipeline(config)
    names = sorted(p.name for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [read_image(args.photos / name) for name in names]
    faces = pipeline.detect(photos, extract=False)
    print(f"{len(photos)} photos, {sum(map(len, faces))} faces; onnxruntime provider: "
          f"{pipeline.extractor.runner.provider}\n")

    rates = {batch: faces_per_second(pipeline, photos, batch, args.rounds) for batch in (1, 8, 16)}
    print("detect + extract (onnxruntime)     faces/s   vs batch 1")
    for batch, rate in rates.items():
        print(f"  batch {batch:<2}                        {rate:8.1f}   {rate / rates[1]:.2f}x")
    frames = [camera_frame(photo) for photo in photos]
    frame_rates = {batch: faces_per_second(pipeline, frames, batch, args.rounds) for batch in (1, 8, 16)}
    print("\nsame, 640x480 camera frames        faces/s   vs batch 1")
    for batch, rate in frame_rates.items():
        print(f"  batch {batch:<2}                        {rate:8.1f}   {rate / frame_rates[1]:.2f}x")

    chips = np.concatenate([pipeline.chips(photo, found, 150, pipeline.extractor.template)
                            for photo, found in zip(photos, faces) if found])[:64]
    one = best_rate(lambda: [pipeline.extractor.extract(chips[i:i + 1]) for i in range(len(chips))],
                    len(chips), args.rounds)
    sixteen = best_rate(lambda: [pipeline.extractor.extract(chips[i:i + 16]) for i in range(0, len(chips), 16)],
                        len(chips), args.rounds)
    print("\nextractor alone                    chips/s")
    print(f"  batch 1                          {one:8.1f}")
    print(f"  batch 16                         {sixteen:8.1f}   {sixteen / one:.2f}x")

    reference = torch_pipeline(config.data_dir, config)
    torch_rate = faces_per_second(reference, photos, 8, args.rounds)
    print("\ndetect + extract, batch 8          faces/s")
    print(f"  torch modules                    {torch_rate:8.1f}")
    print(f"  onnxruntime                      {rates[8]:8.1f}   {rates[8] / torch_rate:.2f}x")


if __name__ == "__main__":
    main()
