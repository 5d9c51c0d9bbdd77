"""What a user of the pipeline relies on: faces found, the same person closer than others, attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from models.align import DLIB_TEMPLATE_150, align, measure_template, similarity_transform
from models.attributes import EMOTION_NAMES
from models.config import ExtractorConfig
from models.evaluation import evaluate
from models.pipeline import load_detector, load_extractor


def test_group_photos_have_the_labelled_number_of_faces(pipeline, labels, load_photo):
    groups = [row for row in labels if row["identity"] == "multi"]
    assert len(groups) >= 5
    found = {row["file"]: len(pipeline.detector.detect_batch([load_photo(row["file"])])[0]) for row in groups}
    assert found == {row["file"]: int(row["faces_in_image"]) for row in groups}


def test_blank_image_has_no_faces_and_still_answers(pipeline, load_photo):
    assert pipeline.detect([load_photo("faceapi_test_white.png")], extract=True, attributes=True) == [[]]


def test_a_batch_gives_the_same_faces_as_one_image_at_a_time(pipeline, load_photo):
    photos = [load_photo(name) for name in ("faceapi_bbt1.jpg", "facerec_two_people.jpg", "faceapi_amy1.png")]
    photos.append(np.ascontiguousarray(photos[0][:, ::-1]))  # same size as the first: one P-Net batch
    batched = pipeline.detect(photos)
    for photo, faces in zip(photos, batched):
        alone = pipeline.detect([photo])[0]
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.facen, b.facen, atol=1e-5)


def test_facens_are_unit_float32_vectors(pipeline, load_photo):
    faces = pipeline.detect([load_photo("faceapi_bbt4.jpg")])[0]
    vectors = np.stack([face.facen for face in faces])
    assert vectors.dtype == np.float32 and vectors.shape == (len(faces), 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_each_portrait_is_nearest_to_another_photo_of_the_same_person(pipeline, labels, load_photo):
    portraits = [row for row in labels if row["identity"] not in ("multi", "unknown")]
    vectors, names = [], []
    for row in portraits:
        faces = pipeline.detect([load_photo(row["file"])])[0]
        largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        vectors.append(largest.facen)
        names.append(row["identity"])
    vectors, names = np.stack(vectors), np.array(names)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    has_pair = np.array([(names == name).sum() > 1 for name in names])
    assert (names[similarity.argmax(1)] == names)[has_pair].all()


@pytest.mark.parametrize(
    "group, people",
    [
        (
            "facerec_knn_test_obama_and_biden.jpg",
            ("facerec_knn_train_obama_obama.jpg", "facerec_knn_train_biden_biden.jpg"),
        ),
        (
            "facerec_knn_test_kit_with_rose.jpg",
            ("facerec_knn_train_kit_harington_john1.jpeg", "facerec_knn_train_rose_leslie_img1.jpg"),
        ),
    ],
)
def test_each_person_in_a_group_photo_matches_their_portrait_and_only_one_face(pipeline, load_photo, group, people):
    group_faces = pipeline.detect([load_photo(group)])[0]
    group_vectors = np.stack([face.facen for face in group_faces])
    chosen = []
    for portrait in people:
        portrait_vector = pipeline.detect([load_photo(portrait)])[0][0].facen
        confidence = pipeline.extractor.confidence(group_vectors @ portrait_vector)
        assert (confidence >= pipeline.extractor.match_threshold).sum() == 1
        chosen.append(int(confidence.argmax()))
    assert len(set(chosen)) == len(people)


def test_attributes_come_in_both_wire_formats(pipeline, load_photo):
    face = pipeline.detect([load_photo("faceapi_happy.jpg")], extract=False, attributes=True)[0][0]
    features = face.attributes.features({"gender", "age", "emotions"})
    assert features["gender"]["gender"] in ("MALE", "FEMALE") and 0.5 <= features["gender"]["score"] <= 1
    assert isinstance(features["age"], int) and 0 < features["age"] < 120
    emotions = features["emotions"]
    assert (
        {e["emotion"] for e in emotions}
        == set(EMOTION_NAMES)
        == {"angry", "disgusted", "scared", "happy", "neutral", "sad", "surprised"}
    )
    assert [e["score"] for e in emotions] == sorted((e["score"] for e in emotions), reverse=True)
    assert emotions[0]["emotion"] == "happy"
    assert set(face.attributes.features({"age"})) == {"age"}
    attributes = face.attributes.attributes({"age", "gender", "emotions"})
    assert attributes["age"] == {"attribute": "age", "model": attributes["age"]["model"], "result": features["age"]}
    assert attributes["gender"]["result"][0]["name"] == features["gender"]["gender"].lower()
    assert attributes["emotions"]["result"][0]["name"] == "happy"


def test_the_alignment_template_is_what_the_character_crops_measure(mtcnn_config, character_crops):
    """The dlib template was measured with MTCNN's landmarks, the detector dlib's vectors were served with."""
    detector = load_detector(mtcnn_config)
    landmarks = []
    for _, path in character_crops:
        faces = detector.detect_batch([np.asarray(Image.open(path).convert("RGB"))])[0]
        landmarks.append(faces[0].landmarks)
    np.testing.assert_allclose(measure_template(landmarks, 150), DLIB_TEMPLATE_150, atol=0.5)


def test_alignment_puts_the_landmarks_on_the_template():
    rng = np.random.default_rng(1)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, -12.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = DLIB_TEMPLATE_150 @ rotation.T + shift
    matrix = similarity_transform(landmarks, DLIB_TEMPLATE_150)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, DLIB_TEMPLATE_150, atol=1e-3)
    chip = align(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8), landmarks, 112)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8


@pytest.mark.slow
def test_dev_set_meets_the_accuracy_targets(pipeline, faces_dir):
    report = evaluate(pipeline, faces_dir)
    assert report.verification_accuracy >= 0.99
    assert report.face_count_accuracy >= 0.95
    assert report.roc_auc >= 0.99
    assert report.rank1_accuracy >= 0.95


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(box_iou(torch.from_numpy(a[None]), torch.from_numpy(b[None]))[0, 0])


def test_shape_keyed_sessions_find_the_same_faces(mtcnn_config, load_photo):
    """The runners' GPU mode (a session per recurring input shape, batches padded to powers of two,
    P-Net's levels padded to multiples of 32 px), forced here on the CPU, finds the same faces. Boxes of
    faces that fill the photo may move a little (the last cells of a padded level score slightly
    differently), not enough to change who the face is."""
    from models.detector import PNET_SIZE_STEP, MtcnnDetector
    from models.pipeline import FacePipeline, onnx_path
    from models.runtime import SHAPE_SESSION_AFTER, OnnxRunner

    nets = {
        name: OnnxRunner(onnx_path(mtcnn_config.data_dir, name), "cpu", fixed_shapes=True)
        for name in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
    }
    plain = FacePipeline(load_detector(mtcnn_config), load_extractor(mtcnn_config))
    keyed = FacePipeline(
        MtcnnDetector(nets["mtcnn_pnet"], nets["mtcnn_rnet"], nets["mtcnn_onet"], mtcnn_config.detector),
        plain.extractor,
    )
    photos = [
        load_photo(name)
        for name in ("faceapi_bbt1.jpg", "facerec_two_people.jpg", "faceapi_amy1.png", "faceapi_bbt4.jpg")
    ]
    expected = plain.detect(photos)
    for _ in range(SHAPE_SESSION_AFTER + 1):  # like a camera: the same sizes again and again
        for keyed_faces, plain_faces in zip(keyed.detect(photos), expected):
            assert len(keyed_faces) == len(plain_faces) > 0
            for a, b in zip(sorted(keyed_faces, key=lambda f: f.box[0]), sorted(plain_faces, key=lambda f: f.box[0])):
                assert _iou(a.box, b.box) > 0.8
                assert float(a.facen @ b.facen) > 0.99
    assert all(
        shape[2] % PNET_SIZE_STEP == 0 and shape[3] % PNET_SIZE_STEP == 0 for shape in nets["mtcnn_pnet"].held_shapes
    )
    assert all(shape[0] & (shape[0] - 1) == 0 for shape in nets["mtcnn_rnet"].held_shapes)  # powers of two
    assert len(nets["mtcnn_onet"].held_shapes) >= 1


def test_a_photo_stored_sideways_with_an_exif_orientation_is_read_upright(pipeline, load_photo):
    import io

    from models.images import to_rgb_array

    upright = load_photo("faceapi_bbt1.jpg")
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # turned a quarter left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=95, exif=exif)
    read = to_rgb_array(Image.open(io.BytesIO(buffer.getvalue())))
    assert read.shape == upright.shape
    assert np.abs(read.astype(int) - upright).mean() < 4  # JPEG noise only
    assert len(pipeline.detector.detect_batch([read])[0]) == len(pipeline.detector.detect_batch([upright])[0])


def test_two_extractors_describe_the_same_faces_each_in_its_own_space(model_config, load_photo):
    """A deployment serving a second extractor (a store filled before an upgrade) gives every face one
    vector per model, each as that model alone gives it."""
    from models.pipeline import FacePipeline, load_extractors

    both = model_config.model_copy(update={"extra_extractors": [ExtractorConfig(kind="dlib")]})
    extractors = load_extractors(both)
    assert [e.name for e in extractors] == ["sface_2021dec.v1", "dlib_resnet.v1"]
    pipeline = FacePipeline(load_detector(both), extractors)
    alone = FacePipeline(pipeline.detector, extractors[1])
    photo = load_photo("facerec_two_people.jpg")
    faces, dlib_only = pipeline.detect([photo])[0], alone.detect([photo])[0]
    assert len(faces) == len(dlib_only) == 2
    for face, reference in zip(faces, dlib_only):
        assert face.facen is face.facens["sface_2021dec.v1"] and face.facen.shape == (128,)
        np.testing.assert_allclose(face.facens["dlib_resnet.v1"], reference.facen, atol=1e-5)
