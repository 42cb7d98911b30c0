"""The in-process detector: batching, mapping to display pixels, identity, errors.

Needs the fetched weights (`veil models fetch`, run by `make models`): without them these tests
fail rather than skip (`make test-unit` leaves them out by their `weights` mark).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.core._detections import Detections
from veil.core._detector import Detector, fit_size
from veil.server.engine import BackendError, LocalDetector, load_detector, weights_sha256
from veil.server.engine._local import to_display
from veil.server.engine.weights import weights_license

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL_NAMES = ["centerface", "retinaface_mnet025", "yunet", "scrfd"]


@pytest.fixture(scope="module", params=MODEL_NAMES)
def detector(request: pytest.FixtureRequest) -> LocalDetector:
    return load_detector(request.param, threads=2)


@pytest.fixture(scope="module")
def astronaut() -> npt.NDArray[np.uint8]:
    path = DATA / "stills" / "misc" / "astronaut.png"
    if not path.exists():
        pytest.skip(f"test data {path} is absent (clone the shared data next to the repo)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), np.uint8)


def gradient(width: int, height: int) -> npt.NDArray[np.uint8]:
    """A face-free test card: smooth colour ramps."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    return image.astype(np.uint8)


def assert_same(a: Detections, b: Detections) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.landmarks is not None and b.landmarks is not None
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


@pytest.mark.weights
def test_is_a_detector_with_a_truthful_identity(detector: LocalDetector) -> None:
    typed: Detector = detector
    info = typed.info
    assert info.weights_sha256 == weights_sha256(info.model)
    assert info.backend == "onnxruntime"
    assert info.execution_provider == "CPUExecutionProvider"
    assert 0 < info.score_threshold < 1 and 0 < info.nms_threshold < 1
    assert info.to_json()["options"]["pad_multiple"] == 32
    assert info.license == weights_license(info.model) != ""


@pytest.mark.weights
def test_face_free_gradient_gives_nothing(detector: LocalDetector) -> None:
    found = detector.detect([gradient(640, 360), gradient(320, 180)], [(1280, 720), (320, 180)])
    assert [len(d) for d in found] == [0, 0]


@pytest.mark.weights
def test_batch_of_two_equals_two_batches_of_one(
    detector: LocalDetector, astronaut: npt.NDArray[np.uint8]
) -> None:
    other = np.ascontiguousarray(astronaut[:, ::-1])
    size = (astronaut.shape[1], astronaut.shape[0])
    together = detector.detect([astronaut, other], [size, size])
    alone = [detector.detect([image], [size])[0] for image in (astronaut, other)]
    assert [len(d) for d in together] == [1, 1]
    for a, b in zip(together, alone, strict=True):
        assert_same(a, b)


@pytest.mark.weights
def test_mixed_sizes_are_grouped_and_order_kept(
    detector: LocalDetector, astronaut: npt.NDArray[np.uint8]
) -> None:
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    images = [astronaut, small, gradient(256, 256), astronaut]
    sizes = [(512, 512)] * 4
    found = detector.detect(images, sizes)
    assert [len(d) for d in found] == [1, 1, 0, 1]
    assert_same(found[0], found[3])
    assert_same(found[1], detector.detect([small], [(512, 512)])[0])


@pytest.mark.weights
def test_boxes_come_back_in_display_pixels(
    detector: LocalDetector, astronaut: npt.NDArray[np.uint8]
) -> None:
    """A frame detected at half size gives boxes in the full-size frame's pixels."""
    (full,) = detector.detect([astronaut], [(512, 512)])
    w, h = fit_size(512, 512, 256)
    half = cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA)
    (mapped,) = detector.detect([half], [(512, 512)])
    assert len(full) == len(mapped) == 1
    np.testing.assert_allclose(mapped.boxes, full.boxes, atol=10)
    assert mapped.landmarks is not None and full.landmarks is not None
    np.testing.assert_allclose(mapped.landmarks, full.landmarks, atol=10)


@pytest.mark.weights
def test_max_batch_splits_inference(astronaut: npt.NDArray[np.uint8]) -> None:
    base = load_detector("retinaface_mnet025", threads=2)
    calls: list[tuple[int, ...]] = []
    backend = base._backend

    class Counting:
        name, provider, weights_sha256 = backend.name, backend.provider, backend.weights_sha256

        def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
            calls.append(batch.shape)
            return backend.infer(batch)

        def close(self) -> None:
            backend.close()

    with LocalDetector(model=base.model, backend=Counting(), max_batch=2) as detector:
        found = detector.detect([astronaut] * 5, [(512, 512)] * 5)
    assert [shape[0] for shape in calls] == [2, 2, 1]
    assert [len(d) for d in found] == [1] * 5


@pytest.mark.weights
def test_bad_input_is_refused(detector: LocalDetector) -> None:
    image = gradient(64, 64)
    with pytest.raises(ValueError, match="1 images but 2 display sizes"):
        detector.detect([image], [(64, 64), (64, 64)])
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect([image[..., 0]], [(64, 64)])
    assert detector.detect([], []) == []


@pytest.mark.weights
def test_cuda_that_is_not_there_is_an_error() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has CUDA: the fallback cannot be provoked")
    with pytest.raises(BackendError, match="asked for CUDAExecutionProvider"):
        load_detector("retinaface_mnet025", provider="cuda", threads=1)


# --- geometry (property tests) ----------------------------------------------------------------

sides = st.integers(min_value=2, max_value=4096)
coords = st.floats(min_value=-500, max_value=5000, allow_nan=False, width=32)


@st.composite
def scaled_case(draw: st.DrawFn) -> tuple[Detections, tuple[int, int], tuple[int, int]]:
    display = (draw(sides), draw(sides))
    image = fit_size(*display, draw(st.integers(min_value=32, max_value=2048)))
    n = draw(st.integers(min_value=0, max_value=6))
    raw = np.array([[draw(coords) for _ in range(4)] for _ in range(n)], np.float32).reshape(-1, 4)
    boxes = np.concatenate(
        [np.minimum(raw[:, :2], raw[:, 2:]), np.maximum(raw[:, :2], raw[:, 2:])], 1
    )
    landmarks = np.array([draw(coords) for _ in range(n * 10)], np.float32).reshape(n, 5, 2)
    scores = np.linspace(0.9, 0.5, n, dtype=np.float32)
    return Detections(boxes, scores, landmarks), image, display


@given(scaled_case())
def test_mapping_to_display_scales_then_clips(
    case: tuple[Detections, tuple[int, int], tuple[int, int]],
) -> None:
    detections, (iw, ih), (dw, dh) = case
    mapped = to_display(detections, (iw, ih), (dw, dh))
    assert len(mapped) == len(detections)
    np.testing.assert_array_equal(mapped.scores, detections.scores)
    boxes = mapped.boxes
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= dw).all() and (boxes[:, [1, 3]] <= dh).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    sx, sy = dw / iw, dh / ih
    expected = detections.boxes * np.array([sx, sy, sx, sy], np.float32)
    inside = (
        (expected >= 0).all(1)
        & (expected[:, [0, 2]] <= dw).all(1)
        & (expected[:, [1, 3]] <= dh).all(1)
    )
    np.testing.assert_allclose(boxes[inside], expected[inside], rtol=1e-6, atol=1e-3)
    assert mapped.landmarks is not None and detections.landmarks is not None
    np.testing.assert_allclose(
        mapped.landmarks, detections.landmarks * [sx, sy], rtol=1e-6, atol=1e-3
    )


@given(sides, sides, st.integers(min_value=32, max_value=2048))
def test_whole_image_box_maps_to_whole_frame(width: int, height: int, max_side: int) -> None:
    iw, ih = fit_size(width, height, max_side)
    whole = Detections(np.array([[0, 0, iw, ih]], np.float32), np.array([1.0], np.float32))
    mapped = to_display(whole, (iw, ih), (width, height))
    np.testing.assert_allclose(mapped.boxes[0], [0, 0, width, height], rtol=1e-6)
