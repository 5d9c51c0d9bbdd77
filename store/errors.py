"""The domain errors of facegrid's state: galleries, faces and the stores that keep them.

    facegrid.errors.FacegridError   (code: a stable machine-readable name)
    ├── GalleryNotFound
    ├── GalleryExists
    ├── FaceNotFound
    ├── FaceExists
    ├── InvalidValue               a vector or meta value the gallery cannot take (param, value)
    ├── StoreUnavailable          the face store cannot be reached
    └── CacheUnavailable          the detection cache cannot be reached

They carry no HTTP status; ``serve_app.errors`` maps each to the spec's code in one table. They are plain
exceptions with picklable arguments, because they cross Ray actor boundaries.
"""

from __future__ import annotations

from typing import Any

from facegrid.errors import FacegridError


class _AboutGallery(FacegridError):
    template = ""

    def __init__(self, gallery: str):
        super().__init__(self.template.format(gallery=gallery))
        self.gallery = gallery

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.gallery,)


class _AboutFace(FacegridError):
    template = ""

    def __init__(self, gallery: str, face_id: int):
        super().__init__(self.template.format(gallery=gallery, face_id=face_id))
        self.gallery, self.face_id = gallery, face_id

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.gallery, self.face_id)


class GalleryNotFound(_AboutGallery):
    template = "gallery {gallery!r} does not exist"


class GalleryExists(_AboutGallery):
    template = "gallery {gallery!r} already exists"


class FaceNotFound(_AboutFace):
    template = "face {face_id} does not exist in gallery {gallery!r}"


class FaceExists(_AboutFace):
    template = "face {face_id} already exists in gallery {gallery!r}"


class InvalidValue(FacegridError):
    """A value the store cannot take (a gallery name, a face id, a vector, a meta field); ``param`` and
    ``value`` say which."""

    def __init__(self, message: str, param: str, value: str):
        super().__init__(message)
        self.param, self.value = param, value

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.message, self.param, self.value)


class StoreUnavailable(FacegridError):
    pass


class CacheUnavailable(FacegridError):
    pass
