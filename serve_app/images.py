"""Image input: the three body kinds, the size limits, decoding, EXIF orientation, ROI and rotation."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from models.images import to_rgb_array

from .config import LimitSettings, UrlFetchSettings
from .errors import BadParam, MalformedRequest
from .urls import fetch_url

IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp"}
EXIF_ORIENTATION = 0x0112
# Clockwise quarter turns -> the EXIF orientation code that describes such an image.
ORIENTATION_OF_TURNS = {0: 1, 1: 6, 2: 3, 3: 8}


@dataclass
class DecodedImage:
    rgb: np.ndarray  # upright, HxWx3 uint8
    orientation: int  # EXIF orientation of the received image (1 when none)


# How long the rest of a body over its limit is read and dropped before the 400 answer: a client that is
# still uploading would otherwise meet a closed connection (a reset) instead of the answer.
OVERSIZED_DRAIN_S = 10.0


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        await _refuse_oversized(request, max_bytes, declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            await _refuse_oversized(request, max_bytes, f"over {max_bytes}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _refuse_oversized(request: Request, max_bytes: int, size: str):
    await drain_body(request.receive)
    raise body_too_large(max_bytes, size)


def body_too_large(max_bytes: int, size: str) -> BadParam:
    return BadParam(f"the body is larger than {max_bytes} bytes", "body", size)


async def drain_body(receive) -> None:
    """Read and drop what is left of a request body (ASGI ``receive``), for at most OVERSIZED_DRAIN_S."""
    try:
        async with asyncio.timeout(OVERSIZED_DRAIN_S):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        pass


async def image_bytes(request: Request, limits: LimitSettings, url_fetch: UrlFetchSettings) -> bytes:
    """The photo's bytes from a raw image body, a text/x-url body, or a multipart part photo/image."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in IMAGE_TYPES:
        return await read_body(request, limits.max_body_bytes)
    if content_type == "text/x-url":
        url = (await read_body(request, 8192)).decode("utf-8", "replace").strip()
        return await fetch_url(url, url_fetch)
    if content_type == "multipart/form-data":
        data = await read_body(request, limits.max_body_bytes)  # bounded, however the body is sent

        async def replay():
            return {"type": "http.request", "body": data, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception as error:  # noqa: BLE001 - any parse failure is the client's malformed body
            raise MalformedRequest(f"the multipart body cannot be read: {error}") from None
        part = form.get("photo") or form.get("image")
        if not isinstance(part, UploadFile):
            raise MalformedRequest("a multipart body needs one file part named 'photo' or 'image'")
        return await part.read()
    raise MalformedRequest(
        f"Content-Type {content_type or '(none)'} is not an image, text/x-url or multipart/form-data"
    )


def decode(data: bytes, limits: LimitSettings) -> DecodedImage:
    if not data:
        raise MalformedRequest("the image is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise MalformedRequest("the image cannot be decoded (JPEG, PNG, WebP or BMP expected)") from None
    except Image.DecompressionBombError:
        raise BadParam("the image has too many pixels", "image", "decompression bomb") from None
    width, height = image.size
    if max(width, height) > limits.max_image_side_px:
        raise BadParam(f"the image's longest side may be {limits.max_image_side_px} px", "image", f"{width}x{height}")
    if width * height > limits.max_image_pixels:
        raise BadParam(f"the image may have {limits.max_image_pixels} pixels", "image", f"{width}x{height}")
    try:
        orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
        rgb = to_rgb_array(image)
    except (OSError, ValueError, SyntaxError):
        raise MalformedRequest("the image data is truncated or corrupt") from None
    except Image.DecompressionBombError:
        raise BadParam("the image has too many pixels", "image", "decompression bomb") from None
    return DecodedImage(rgb, orientation if 1 <= orientation <= 8 else 1)


def clip_roi(raw: str | None, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The roi query value (left,top,right,bottom, its shape checked by serve_app.queries) inside the image."""
    if raw is None:
        return None
    left, top, right, bottom = (int(v) for v in raw.split(","))
    right, bottom = min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        raise BadParam("roi is empty or outside the image", "roi", raw)
    return left, top, right, bottom


def rotated(rgb: np.ndarray, quarter_turns_clockwise: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, -quarter_turns_clockwise))


def chip(rgb: np.ndarray, size: int) -> np.ndarray:
    """An already aligned face crop (detector=normalized) resized to a network's input."""
    image = Image.fromarray(rgb)
    return np.asarray(
        image.resize((size, size), Image.Resampling.BILINEAR if image.width < size else Image.Resampling.LANCZOS)
    )
