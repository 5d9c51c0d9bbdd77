"""``facegrid import``: enrol a folder of photos, or a CSV of them, into a gallery of a running service,
through its HTTP API only (so it works against any facegrid or FindFace ``/v2`` endpoint).

Each photo is detected with ``facen=true`` and its face added by ``detection:<id>`` in bulk adds. A folder's
photos get ids made from their path inside the folder (a stable hash, so a second run finds the same ids)
and ``{"file": <path>}`` as meta; a CSV names ``path``, ``id`` and, optionally, ``meta`` (a JSON object),
every other column becoming a string meta field. Ids already in the gallery are skipped, so an
interrupted import resumes where it stopped. ``429`` answers are waited out as their ``Retry-After`` says.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

IMAGE_SUFFIXES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
OUTCOMES = ("enrolled", "already there", "no face", "several faces, skipped", "unreadable", "refused")
_BULK = 100
_ID_CHECK = 200


@dataclass
class Photo:
    path: Path
    face_id: int
    meta: dict
    outcome: str = ""
    detail: str = ""
    detection: str = ""


@dataclass
class Report:
    photos: list[Photo] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {outcome: sum(p.outcome == outcome for p in self.photos) for outcome in OUTCOMES}

    def lines(self) -> list[str]:
        counts = self.counts()
        rate = counts["enrolled"] / self.seconds if self.seconds else 0.0
        lines = [
            f"{len(self.photos)} photos in {self.seconds:.1f} s ({rate:.1f} faces enrolled/s): "
            + ", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count)
        ]
        lines += [
            f"  {p.outcome}: {p.path} (id {p.face_id}){': ' + p.detail if p.detail else ''}"
            for p in self.photos
            if p.outcome not in ("enrolled", "already there")
        ]
        return lines

    def write(self, path: Path) -> None:
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["path", "id", "outcome", "detail"])
            writer.writerows([str(p.path), p.face_id, p.outcome, p.detail] for p in self.photos)


def path_id(relative: str) -> int:
    """A face id from a photo's path in its folder: stable across runs, 63 bits (fits every store)."""
    return int.from_bytes(hashlib.blake2b(relative.encode(), digest_size=8).digest(), "big") >> 1


def photos_in(source: Path) -> list[Photo]:
    """The photos a folder holds (by path), or those a CSV lists."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        return [
            Photo(p, path_id(p.relative_to(source).as_posix()), {"file": p.relative_to(source).as_posix()})
            for p in files
        ]
    photos = []
    with open(source, newline="") as rows:
        for row in csv.DictReader(rows):
            meta = json.loads(row.pop("meta") or "{}") if "meta" in row else {}
            path, face_id = Path(row.pop("path")), int(row.pop("id"))
            meta.update({key: value for key, value in row.items() if key and value})
            photos.append(Photo(path if path.is_absolute() else source.parent / path, face_id, meta))
    return photos


class Importer:
    def __init__(self, client: httpx.AsyncClient, gallery: str, several: str, concurrency: int, progress=None):
        self.client, self.gallery, self.several = client, gallery, several
        self.concurrency, self.progress = concurrency, progress

    async def call(self, method: str, url: str, **kwargs) -> httpx.Response:
        """One request; a 429 is waited out (its Retry-After) and sent again."""
        while True:
            response = await self.client.request(method, url, **kwargs)
            if response.status_code != 429:
                return response
            await asyncio.sleep(float(response.headers.get("retry-after") or 1))

    async def ensure_gallery(self, create: bool) -> None:
        found = await self.call("GET", f"/v2/galleries/{self.gallery}")
        if found.status_code == 404 and create:
            found = await self.call("POST", f"/v2/galleries/{self.gallery}")
        if found.status_code != 200:
            raise SystemExit(f"facegrid import: gallery {self.gallery!r}: {found.status_code} {found.text[:300]}")

    async def existing(self, photos: list[Photo]) -> set[int]:
        """The photos' ids the gallery already holds (id:in filters, a few hundred ids per request)."""
        found: set[int] = set()
        for start in range(0, len(photos), _ID_CHECK):
            ids = ",".join(str(p.face_id) for p in photos[start : start + _ID_CHECK])
            response = await self.call(
                "GET", f"/v2/galleries/{self.gallery}/faces", params={"id:in": ids, "limit": _ID_CHECK}
            )
            response.raise_for_status()
            found.update(face["id"]["face"] for face in response.json()["faces"])
        return found

    async def detect(self, photo: Photo) -> None:
        try:
            data = photo.path.read_bytes()
        except OSError as error:
            photo.outcome, photo.detail = "unreadable", str(error)
            return
        response = await self.call(
            "POST",
            "/v2/detect",
            params={"facen": "true"},
            content=data,
            headers={"Content-Type": IMAGE_SUFFIXES.get(photo.path.suffix.lower(), "image/jpeg")},
        )
        body = response.json()
        if response.status_code != 200:
            photo.outcome, photo.detail = "unreadable", f"{body.get('code')}: {body.get('desc')}"
            return
        faces = body["faces"]
        if not faces:
            photo.outcome = "no face"
            return
        if len(faces) > 1 and self.several == "skip":
            photo.outcome, photo.detail = "several faces, skipped", f"{len(faces)} faces"
            return
        largest = max(
            faces, key=lambda f: (f["bbox"]["right"] - f["bbox"]["left"]) * (f["bbox"]["bottom"] - f["bbox"]["top"])
        )
        photo.detection = largest["id"]
        if len(faces) > 1:
            photo.detail = f"the largest of {len(faces)} faces"

    async def add(self, batch: list[Photo]) -> None:
        items = [{"id": p.face_id, "from": f"detection:{p.detection}", "meta": p.meta} for p in batch]
        response = await self.call("POST", f"/v2/galleries/{self.gallery}/faces", json={"faces": items})
        if response.status_code != 200:
            body = response.json()
            for photo in batch:
                photo.outcome, photo.detail = "refused", f"{body.get('code')}: {body.get('desc')}"
            return
        for photo, result in zip(batch, response.json()["results"]):
            if "code" in result:
                photo.outcome, photo.detail = "refused", f"{result['code']}: {result.get('desc')}"
            else:
                photo.outcome = "enrolled"

    async def run(self, photos: list[Photo]) -> None:
        present = await self.existing(photos)
        for photo in photos:
            if photo.face_id in present:
                photo.outcome = "already there"
                self._advance()
        todo: asyncio.Queue[Photo] = asyncio.Queue()
        for photo in photos:
            if not photo.outcome:
                todo.put_nowait(photo)
        ready: list[Photo] = []

        async def worker():
            while not todo.empty():
                photo = todo.get_nowait()
                await self.detect(photo)
                if photo.detection:
                    ready.append(photo)
                    if len(ready) >= _BULK:
                        batch = ready[:]
                        ready.clear()
                        await self.add(batch)
                        for added in batch:
                            self._advance()
                else:
                    self._advance()

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        if ready:
            await self.add(ready)
            for _ in ready:
                self._advance()

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.update(1)


async def import_photos(
    source: Path,
    gallery: str,
    url: str,
    *,
    token: str | None = None,
    create: bool = True,
    several: str = "largest",
    concurrency: int = 4,
    progress: bool = True,
) -> Report:
    photos = photos_in(source)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    report = Report(photos)
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(photos), unit="photo", desc=f"import into {gallery}")
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
            importer = Importer(client, gallery, several, concurrency, bar)
            await importer.ensure_gallery(create)
            await importer.run(photos)
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.perf_counter() - started
    return report
