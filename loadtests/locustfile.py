"""Personas that speak the /v2 API, with weighted tasks; every response is checked.

- CameraFeed: detect-heavy traffic, as from cameras (detect; detect with facen).
- Enrolment: detect a photo with facen, add the face to the load-test gallery, sometimes patch its meta.
- Searcher: search the gallery with a fresh detection or a stored face, and verify pairs.

A 429 is an expected answer under overload: it counts as a failure named OVER_CAPACITY, so reports show
it apart from real errors. URLs are grouped by template (``name=``).
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task

from loadtests.payloads import load_photos, new_face_id, with_faces
from loadtests.shapes import StepLoad  # noqa: F401 - locust picks the shape class up from this module

GALLERY = "loadtest"
PHOTOS = load_photos()
SINGLE = with_faces(PHOTOS, exactly=1)
ANY_FACES = with_faces(PHOTOS)
ENROLLED: list[int] = []


def check(response, expected_status: int = 200, *, key: str | None = None) -> dict | None:
    """Mark the response: the expected status (and key) passes, 429 is OVER_CAPACITY, anything else fails."""
    if response.status_code == 429:
        response.failure("OVER_CAPACITY")
        return None
    try:
        body = response.json()
    except ValueError:
        response.failure(f"{response.status_code}: not JSON")
        return None
    if response.status_code != expected_status:
        response.failure(f"{response.status_code} {body.get('code', '?')}")
        return None
    if key is not None and key not in body:
        response.failure(f"answer without {key!r}")
        return None
    response.success()
    return body


def post_photo(client, photo, name: str, **params):
    return client.post(
        "/v2/detect",
        params=params,
        data=photo.data,
        name=name,
        catch_response=True,
        headers={"Content-Type": photo.content_type},
    )


class CameraFeed(HttpUser):
    weight = 3
    wait_time = between(0.05, 0.2)

    @task(4)
    def detect(self):
        with post_photo(self.client, random.choice(ANY_FACES), "/v2/detect") as response:
            body = check(response, key="faces")
            if body is not None and not body["faces"]:
                response.failure("no face found in a photo that has one")

    @task(1)
    def detect_with_facen(self):
        with post_photo(self.client, random.choice(SINGLE), "/v2/detect?facen", facen="true") as response:
            body = check(response, key="faces")
            if body is not None and not all("id" in face for face in body["faces"]):
                response.failure("facen=true without detection ids")


def detect_one(client) -> str | None:
    """Detect a single-face photo with facen; the detection id, or None when the answer was not usable."""
    with post_photo(client, random.choice(SINGLE), "/v2/detect?facen", facen="true") as response:
        body = check(response, key="faces")
    return body["faces"][0]["id"] if body and body["faces"] else None


def ensure_gallery(client) -> None:
    with client.post(f"/v2/galleries/{GALLERY}", name="/v2/galleries/[gallery]", catch_response=True) as response:
        if response.status_code in (200, 409):  # created now, or by another user before
            response.success()
        else:
            check(response)


class Enrolment(HttpUser):
    weight = 1
    wait_time = between(0.1, 0.5)

    def on_start(self):
        ensure_gallery(self.client)

    @task(3)
    def enrol(self):
        detection = detect_one(self.client)
        if detection is None:
            return
        face_id = new_face_id()
        with self.client.post(
            f"/v2/galleries/{GALLERY}/faces/{face_id}",
            catch_response=True,
            name="/v2/galleries/[gallery]/faces/[id]",
            json={"from": f"detection:{detection}", "meta": {"camera": random.randint(1, 8)}},
        ) as response:
            if check(response, key="id") is not None:
                ENROLLED.append(face_id)

    @task(1)
    def patch_meta(self):
        if not ENROLLED:
            return
        face_id = random.choice(ENROLLED)
        with self.client.patch(
            f"/v2/galleries/{GALLERY}/faces/{face_id}",
            json={"meta": {"seen": 1}},
            name="/v2/galleries/[gallery]/faces/[id] PATCH",
            catch_response=True,
        ) as response:
            check(response, key="meta")


class Searcher(HttpUser):
    weight = 2
    wait_time = between(0.05, 0.3)

    def on_start(self):
        ensure_gallery(self.client)

    @task(3)
    def search_by_face(self):
        if not ENROLLED:
            return
        face_id = random.choice(ENROLLED)
        with self.client.get(
            f"/v2/galleries/{GALLERY}/faces",
            name="/v2/galleries/[gallery]/faces?looks_like",
            params={"looks_like": f"face:{GALLERY}/{face_id}", "limit": 10},
            catch_response=True,
        ) as response:
            body = check(response, key="faces")
            # A stored face finds itself (or a twin enrolled from the same photo) with near-certainty.
            if body is not None and (not body["faces"] or body["faces"][0]["confidence"] < 0.99):
                response.failure("a stored face is not found as its own best match")

    @task(1)
    def search_by_photo(self):
        detection = detect_one(self.client)
        if detection is None:
            return
        with self.client.get(
            f"/v2/galleries/{GALLERY}/faces",
            name="/v2/galleries/[gallery]/faces?looks_like",
            params={"looks_like": f"detection:{detection}", "threshold": "0.6"},
            catch_response=True,
        ) as response:
            check(response, key="faces")

    @task(1)
    def verify(self):
        if len(ENROLLED) < 2:
            return
        first, second = random.sample(ENROLLED, 2)
        with self.client.get(
            "/v2/verify",
            name="/v2/verify",
            catch_response=True,
            params={"face1": f"face:{GALLERY}/{first}", "face2": f"face:{GALLERY}/{second}"},
        ) as response:
            check(response, key="confidence")
