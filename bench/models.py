"""Model throughput, measured side by side in one run (ratios; absolute numbers depend on the machine).

    python -m bench.models [--photos ../shared/faces] [--rounds 3]

1. detect + extract, faces/s, with the photos grouped in batches of 1, 8 and 16, for the default models
   (YuNet + SFace) and facegrid 0.1's (MTCNN + dlib); then the same with every photo letterboxed into one
   640x480 frame, as a camera sends;
2. each extractor alone on aligned chips at batch 1 vs 16 (what Serve's dynamic batching buys);
3. onnxruntime vs the PyTorch modules, running 0.1's cascade on the same photos.
Each figure is the best of ``--rounds`` passes, so one noisy pass does not decide it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from models.align import align_faces
from models.config import DetectorConfig, ExtractorConfig
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
            pipeline.detect(photos[start : start + batch], extract=True)

    return best_rate(run, total, rounds)


def camera_frame(photo: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """The photo scaled to fit a width x height frame and centred on black, like a fixed camera's frames."""
    import cv2

    scale = min(width / photo.shape[1], height / photo.shape[0])
    size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    frame = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    return frame


def torch_pipeline(data_dir: Path, config) -> FacePipeline:
    runners = {
        name: TorchRunner(build_torch(data_dir, name))
        for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "dlib_resnet")
    }
    detector = MtcnnDetector(runners["mtcnn_pnet"], runners["mtcnn_rnet"], runners["mtcnn_onet"], config.detector)
    return FacePipeline(detector, DlibExtractor(runners["dlib_resnet"]))


def _rates(pipeline: FacePipeline, photos: list[np.ndarray], rounds: int) -> dict[int, float]:
    return {batch: faces_per_second(pipeline, photos, batch, rounds) for batch in (1, 8, 16)}


def _print_rates(title: str, pipelines: dict[str, dict[int, float]]) -> None:
    names = list(pipelines)
    print(
        f"{title:<26}"
        + "".join(f"{name + ' faces/s':>22}" for name in names)
        + "   vs batch 1      "
        + f"{names[0]} vs {names[1]}"
    )
    for batch in (1, 8, 16):
        rates = [pipelines[name][batch] for name in names]
        gains = " / ".join(f"{pipelines[name][batch] / pipelines[name][1]:.2f}x" for name in names)
        print(
            f"  batch {batch:<18}" + "".join(f"{rate:22.1f}" for rate in rates) + f"   {gains:<16} "
            f"{rates[0] / rates[1]:.2f}x"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.photos / "labels.csv").is_file():
        raise SystemExit(f"no photos at {args.photos} (a folder with labels.csv, like ../shared/faces)")

    config = load_settings().models
    default = load_pipeline(config)
    legacy_config = config.model_copy(
        update={"detector": DetectorConfig(kind="mtcnn"), "extractor": ExtractorConfig(kind="dlib")}
    )
    legacy = load_pipeline(legacy_config)
    pipelines = {f"{config.detector.kind}+{config.extractor.kind}": default, "mtcnn+dlib": legacy}
    names = sorted(p.name for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    photos = [read_image(args.photos / name) for name in names]
    faces = default.detect(photos, extract=False)
    print(
        f"{len(photos)} photos, {sum(map(len, faces))} faces found by the default detector; onnxruntime "
        f"provider: {getattr(default.extractor, 'runner').provider}\n"
    )

    _print_rates("detect + extract, photos", {name: _rates(p, photos, args.rounds) for name, p in pipelines.items()})
    frames = [camera_frame(photo) for photo in photos]
    print()
    _print_rates("same, 640x480 frames", {name: _rates(p, frames, args.rounds) for name, p in pipelines.items()})

    print("\nextractor alone                    chips/s   batch 16 vs 1")
    for pipeline in (default, legacy):
        extractor = pipeline.extractor
        chips = np.concatenate(
            [
                align_faces(photo, [f.landmarks for f in found], extractor.input_size, extractor.template)
                for photo, found in zip(photos, faces)
                if found
            ]
        )[:64]
        one = best_rate(
            lambda: [extractor.extract(chips[i : i + 1]) for i in range(len(chips))], len(chips), args.rounds
        )
        sixteen = best_rate(
            lambda: [extractor.extract(chips[i : i + 16]) for i in range(0, len(chips), 16)], len(chips), args.rounds
        )
        print(f"  {extractor.name:<18} batch 1 {one:8.1f}   batch 16 {sixteen:8.1f}   {sixteen / one:.2f}x")

    reference = torch_pipeline(config.data_dir, legacy_config)
    torch_rate = faces_per_second(reference, photos, 8, args.rounds)
    onnx_rate = faces_per_second(legacy, photos, 8, args.rounds)
    print("\nmtcnn+dlib, batch 8               faces/s")
    print(f"  torch modules                    {torch_rate:8.1f}")
    print(f"  onnxruntime                      {onnx_rate:8.1f}   {onnx_rate / torch_rate:.2f}x")


if __name__ == "__main__":
    main()
