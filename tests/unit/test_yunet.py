"""The default detector, YuNet: letterboxed batches, exact mapping back, small and large faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.config import DetectorConfig
from models.letterbox import letterbox
from models.pipeline import load_detector


def test_letterbox_points_map_back_to_the_photo_exactly():
    rng = np.random.default_rng(3)
    for height, width, side in ((480, 640, 640), (1000, 300, 640), (150, 150, 640), (2000, 1200, 1280)):
        box = letterbox(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), side)
        assert box.canvas.shape == (side, side, 3)
        points = rng.uniform(0, [width, height] * 5, size=(7, 10)).astype(np.float32)
        on_canvas = points * np.tile([box.scale_x, box.scale_y], 5) + np.tile([box.left, box.top], 5)
        np.testing.assert_allclose(box.to_photo(on_canvas.astype(np.float32)), points, rtol=1e-5, atol=1e-3)


def test_a_photo_smaller_than_the_input_is_centred_and_not_enlarged():
    image = np.full((150, 100, 3), 200, np.uint8)
    box = letterbox(image, 640)
    assert (box.scale_x, box.scale_y, box.left, box.top) == (1.0, 1.0, 270, 245)
    assert (box.canvas[245:395, 270:370] == 200).all() and box.canvas[:245].max() == 0


def test_mixed_photos_in_one_batch_find_what_each_finds_alone(pipeline, load_photo):
    photos = [
        load_photo(name)
        for name in (
            "faceapi_bbt1.jpg",
            "facerec_two_people.jpg",
            "faceapi_amy1.png",
            "facenet_paul_rudd_1.jpg",
            "itboyst_zhaoyang.jpg",
        )
    ]
    together = pipeline.detector.detect_batch(photos)
    for photo, faces in zip(photos, together):
        alone = pipeline.detector.detect_batch([photo])[0]
        assert len(alone) == len(faces) > 0
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_faces_come_back_in_the_pixels_of_the_photo_whatever_its_size(model_config, load_photo):
    """The same photo at another size fills the same letterbox; its faces come back in its own pixels."""
    detector = load_detector(model_config)
    photo = load_photo("facerec_two_people.jpg")  # 1126 x 661
    factor = 1.15  # 1295 px: still one pass at 640
    larger = cv2.resize(
        photo, (round(photo.shape[1] * factor), round(photo.shape[0] * factor)), interpolation=cv2.INTER_CUBIC
    )
    assert detector.input_sides(*larger.shape[:2]) == [640]
    small, scaled = detector.detect_batch([photo])[0], detector.detect_batch([larger])[0]
    assert len(small) == len(scaled) == 2
    for a, b in zip(sorted(small, key=lambda f: f.box[0]), sorted(scaled, key=lambda f: f.box[0])):
        np.testing.assert_allclose(b.box / factor, a.box, atol=0.03 * (a.box[2] - a.box[0]))
        np.testing.assert_allclose(b.landmarks / factor, a.landmarks, atol=0.03 * (a.box[2] - a.box[0]))


def _group_in_a_large_photo(load_photo) -> np.ndarray:
    """dlib's group photo (six faces of 28-46 px) in the corner of a 3000 x 2000 px frame."""
    group = load_photo("dlib_2008_002470.jpg")
    frame = np.full((2000, 3000, 3), 90, np.uint8)
    frame[: group.shape[0], : group.shape[1]] = group
    return frame


def test_a_large_photo_keeps_its_small_faces_findable(model_config, load_photo):
    """At a 640 letterbox the six faces shrink to 6-10 px; the larger second pass finds them, and
    without it (max_input_size_px = input_size_px) they are lost."""
    photo = _group_in_a_large_photo(load_photo)
    with_pass = load_detector(model_config)
    assert with_pass.input_sides(*photo.shape[:2]) == [640, 1920]
    assert len(with_pass.detect_batch([photo])[0]) == 6
    single = load_detector(model_config.model_copy(update={"detector": DetectorConfig(max_input_size_px=640)}))
    assert single.input_sides(*photo.shape[:2]) == [640]
    assert len(single.detect_batch([photo])[0]) < 6


@pytest.mark.parametrize("min_face_px, expected", [(50, 6), (200, 0)])
def test_faces_smaller_than_the_minimum_are_dropped(model_config, load_photo, min_face_px, expected):
    detector = load_detector(model_config.model_copy(update={"detector": DetectorConfig(min_face_px=min_face_px)}))
    assert len(detector.detect_batch([load_photo("dlib_2008_002470.jpg")])[0]) == expected
