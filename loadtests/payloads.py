"""Request payloads made from real face photos (../shared/faces by default; FACEGRID_LOADTEST_PHOTOS)."""

from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "faces"


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes
    content_type: str
    faces: int


def load_photos(folder: Path | None = None) -> list[Photo]:
    folder = Path(folder or os.environ.get("FACEGRID_LOADTEST_PHOTOS") or DEFAULT_PHOTOS)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"no photos: {labels} not found (set FACEGRID_LOADTEST_PHOTOS)")
    photos = []
    for row in csv.DictReader(open(labels, newline="")):
        path = folder / row["file"]
        if path.suffix.lower() in CONTENT_TYPES:
            photos.append(
                Photo(row["file"], path.read_bytes(), CONTENT_TYPES[path.suffix.lower()], int(row["faces_in_image"]))
            )
    return photos


def with_faces(photos: list[Photo], exactly: int | None = None) -> list[Photo]:
    return [p for p in photos if (p.faces == exactly if exactly is not None else p.faces > 0)]


def new_face_id() -> int:
    return random.getrandbits(63)
