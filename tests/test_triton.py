"""The Triton path against a real tritonserver on loopback (see tests/triton_fixture.py).

The server runs the same cleaned ONNX files with the same onnxruntime version as the in-process
backend, so detections through Triton must equal in-process ones exactly, not approximately.
"""

from __future__ import annotations

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from triton_server import TritonServer
from tritonclient.grpc import model_config_pb2

from veil.core._detections import Detections
from veil.server.engine import BackendError, LocalDetector, load_detector, weights_sha256
from veil.server.engine._models import make_model
from veil.server.engine._triton import TritonBackend, TritonBackendError, TritonUnavailableError

pytest_plugins = ["triton_fixture"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL_NAMES = ["centerface", "retinaface_mnet025", "yunet", "scrfd"]


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def in_process(model_name: str) -> LocalDetector:
    return load_detector(model_name, threads=2)


@pytest.fixture(scope="module")
def through_triton(triton_server: TritonServer, model_name: str) -> LocalDetector:
    backend = TritonBackend(triton_server.grpc_url, model_name)
    return LocalDetector(model=make_model(model_name), backend=backend)


@pytest.fixture(scope="module")
def astronaut() -> npt.NDArray[np.uint8]:
    path = DATA / "stills" / "misc" / "astronaut.png"
    if not path.exists():
        pytest.skip(f"test data {path} is absent (clone the shared data next to the repo)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), np.uint8)


def drawn_face(width: int = 640, height: int = 384) -> npt.NDArray[np.uint8]:
    """A textured card with a cartoon face on it, made here (no shared data needed)."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, ((x // 16 + y // 16) % 2) * 90], -1)
    image = np.ascontiguousarray(image.astype(np.uint8))
    cx, cy = width // 2, height // 2
    cv2.ellipse(image, (cx, cy), (70, 95), 0, 0, 360, (224, 172, 140), -1)
    for dx in (-28, 28):
        cv2.ellipse(image, (cx + dx, cy - 25), (14, 8), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(image, (cx + dx, cy - 25), 6, (40, 30, 20), -1)
        cv2.line(image, (cx + dx - 16, cy - 45), (cx + dx + 16, cy - 47), (60, 40, 20), 4)
    cv2.line(image, (cx, cy - 15), (cx - 8, cy + 18), (170, 120, 100), 3)
    cv2.ellipse(image, (cx, cy + 45), (30, 12), 0, 0, 180, (150, 60, 60), 5)
    return image


def assert_same(a: Detections, b: Detections) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.landmarks is not None and b.landmarks is not None
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def metric(url: str, name: str, model: str) -> float:
    """One of Triton's Prometheus counters for ``model`` (version 1)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = rf'^{name}\{{[^}}]*model="{model}",version="1"[^}}]*\}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} for {model} not in {url}"
    return float(match.group(1))


def metric_reaches(url: str, name: str, model: str, expected: float) -> float:
    """The counter once it reaches ``expected`` or after 5 s: Triton updates its statistics
    just after it sends the response, so a read right after a reply can be a step behind."""
    deadline = time.monotonic() + 5.0
    while (value := metric(url, name, model)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.triton
def test_server_and_both_models_ready(triton_server: TritonServer) -> None:
    with grpcclient.InferenceServerClient(triton_server.grpc_url) as client:
        assert client.is_server_live() and client.is_server_ready()
        for name in MODEL_NAMES:
            assert client.is_model_ready(name), name


@pytest.mark.triton
def test_identity_in_the_record(through_triton: LocalDetector, model_name: str) -> None:
    info = through_triton.info
    assert (info.backend, info.execution_provider) == ("triton", "triton:KIND_CPU")
    assert info.weights_sha256 == weights_sha256(model_name)


@pytest.mark.triton
def test_raw_outputs_are_bit_identical(
    triton_server: TritonServer, in_process: LocalDetector, model_name: str
) -> None:
    batch = np.random.default_rng(7).uniform(0, 255, (2, 3, 96, 160)).astype(np.float32)
    backend = TritonBackend(triton_server.grpc_url, model_name)
    try:
        remote = backend.infer(batch)
    finally:
        backend.close()
    local = in_process._backend.infer(batch)
    assert set(remote) == set(local)
    for name, value in local.items():
        np.testing.assert_array_equal(remote[name], value, err_msg=name)


@pytest.mark.triton
def test_detections_on_a_photo_equal_in_process(
    through_triton: LocalDetector, in_process: LocalDetector, astronaut: npt.NDArray[np.uint8]
) -> None:
    size = (astronaut.shape[1], astronaut.shape[0])
    remote = through_triton.detect([astronaut], [size])
    assert len(remote[0]) == 1
    assert_same(remote[0], in_process.detect([astronaut], [size])[0])


@pytest.mark.triton
def test_detections_on_a_made_image_equal_in_process(
    triton_server: TritonServer, model_name: str
) -> None:
    # A low threshold keeps many candidates, so equality covers more than an empty result.
    image, size = drawn_face(), (1280, 768)
    model = make_model(model_name, score_threshold=0.02)
    backend = TritonBackend(triton_server.grpc_url, model_name)
    with LocalDetector(model=model, backend=backend) as remote:
        found = remote.detect([image], [size])[0]
    with load_detector(model_name, score_threshold=0.02, threads=2) as local:
        expected = local.detect([image], [size])[0]
    assert len(found) > 0
    assert_same(found, expected)


@pytest.mark.triton
def test_batch_of_four_is_one_inference(
    triton_server: TritonServer,
    through_triton: LocalDetector,
    in_process: LocalDetector,
    model_name: str,
) -> None:
    base = drawn_face()
    images = [base, base[:, ::-1].copy(), base[::-1].copy(), np.roll(base, 64, axis=1)]
    sizes = [(640, 384)] * 4
    url = triton_server.metrics_url
    executions = metric(url, "nv_inference_exec_count", model_name)
    inferences = metric(url, "nv_inference_count", model_name)
    remote = through_triton.detect(images, sizes)
    assert metric_reaches(url, "nv_inference_count", model_name, inferences + 4) == inferences + 4
    assert metric(url, "nv_inference_exec_count", model_name) == executions + 1
    for a, b in zip(remote, in_process.detect(images, sizes), strict=True):
        assert_same(a, b)


@pytest.mark.triton
def test_concurrent_requests_are_batched_and_answered_each_with_its_own(
    triton_server: TritonServer, in_process: LocalDetector, model_name: str
) -> None:
    rng = np.random.default_rng(11)
    batches = [rng.uniform(0, 255, (1, 3, 384, 640)).astype(np.float32) for _ in range(8)]
    url = triton_server.metrics_url
    executions = metric(url, "nv_inference_exec_count", model_name)
    inferences = metric(url, "nv_inference_count", model_name)
    backend = TritonBackend(triton_server.grpc_url, model_name)
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(backend.infer, batches))
    finally:
        backend.close()
    # While one execution runs, the dynamic batcher groups the requests that arrive.
    metric_reaches(url, "nv_inference_count", model_name, inferences + len(batches))
    assert metric(url, "nv_inference_exec_count", model_name) - executions < len(batches)
    for batch, answer in zip(batches, answers, strict=True):
        for name, value in in_process._backend.infer(batch).items():
            np.testing.assert_array_equal(answer[name], value, err_msg=name)


@pytest.mark.triton
def test_metrics_count_successful_requests(triton_server: TritonServer) -> None:
    url = triton_server.metrics_url
    before = metric(url, "nv_inference_request_success", "centerface")
    backend = TritonBackend(triton_server.grpc_url, "centerface")
    try:
        for _ in range(3):
            backend.infer(np.zeros((1, 3, 64, 64), np.float32))
    finally:
        backend.close()
    assert metric_reaches(url, "nv_inference_request_success", "centerface", before + 3) == (
        before + 3
    )


@pytest.mark.triton
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 4, 64, 64), "unexpected shape for input 'input'"),
        ((17, 3, 32, 32), None),  # above max_batch_size 16: sent in two chunks, no error
    ],
)
def test_bad_batch_gets_a_clear_error(
    triton_server: TritonServer, shape: tuple[int, ...], message: str | None
) -> None:
    backend = TritonBackend(triton_server.grpc_url, "centerface")
    try:
        if message is None:
            assert backend.infer(np.zeros(shape, np.float32))["heatmap"].shape[0] == shape[0]
            return
        with pytest.raises(TritonBackendError, match=re.escape(message)) as caught:
            backend.infer(np.zeros(shape, np.float32))
        assert isinstance(caught.value, BackendError) and "INVALID_ARGUMENT" in str(caught.value)
        with pytest.raises(ValueError, match="NCHW float32"):
            backend.infer(np.zeros(shape, np.float64))  # type: ignore[arg-type]
    finally:
        backend.close()


@pytest.mark.triton
def test_model_not_on_the_server_is_named(triton_server: TritonServer) -> None:
    with pytest.raises(TritonUnavailableError, match="'centerface' version 2 is not ready") as e:
        TritonBackend(triton_server.grpc_url, "centerface", model_version="2")
    assert "centerface/1 READY" in str(e.value)


def test_unreachable_server_is_a_connection_error() -> None:
    with pytest.raises(TritonUnavailableError, match="unreachable") as caught:
        TritonBackend("127.0.0.1:1", "centerface", timeout_s=2.0)
    assert isinstance(caught.value, ConnectionError)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_gpu_variant_differs_from_cpu_config_only_in_placement(model: str) -> None:
    def parse(path: Path) -> model_config_pb2.ModelConfig:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())

    cpu = parse(ROOT / "models" / model / "config.pbtxt")
    gpu = parse(ROOT / "deploy" / "triton" / "configs" / "gpu" / f"{model}.pbtxt")
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    accelerators = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    for config in (cpu, gpu):
        config.ClearField("instance_group")
        config.ClearField("optimization")
    assert gpu == cpu
