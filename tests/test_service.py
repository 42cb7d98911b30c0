"""The detection service on a real in-process gRPC server (127.0.0.1, port 0): every status
code the API promises, with readable messages; garbage, truncated and oversized requests; a
client that disconnects mid-stream; health, reflection and metrics."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import grpc
import numpy as np
import numpy.typing as npt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veil import DetectorSettings, fit_size
from veil.remote import ChannelOptions, RemoteDetector, RemoteError
from veil.server.engine import load_detector
from veil.server.service import ServeConfig, create_server
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import Encoding, frame_message

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

Code = grpc.StatusCode
DISPLAY = (1280, 720)
SIZE = fit_size(*DISPLAY, 640)


def picture() -> npt.NDArray[np.uint8]:
    """A scaled 640x360 RGB frame with texture (no faces needed for protocol tests)."""
    y, x = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def frame(index: int = 0, encoding: Encoding = Encoding.RAW) -> pb.Frame:
    return frame_message(picture(), DISPLAY, index=index, encoding=encoding)


@pytest.fixture
def server(veil_server: Callable[..., Any]) -> Any:
    return veil_server(metrics="127.0.0.1:0", model="centerface")


@pytest.fixture
def stub(server: Any) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.DetectionServiceStub(channel)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()  # type: ignore[attr-defined]


def test_detect_matches_the_in_process_detector(stub: Any, shared_data: Any) -> None:
    image = cv2.imread(str(shared_data / "stills" / "misc" / "multiface.jpg"))
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    display = (rgb.shape[1], rgb.shape[0])
    small = cv2.resize(rgb, fit_size(*display, 640), interpolation=cv2.INTER_AREA)
    with load_detector("centerface", threads=2, max_side=640, score_threshold=0.4) as local:
        expected = local.detect([small], [display])[0]
    assert len(expected) > 0
    for encoding in (Encoding.RAW, Encoding.PNG):
        request = pb.DetectRequest(
            detector=pb.DetectorParams(model="centerface", max_side=640, score_threshold=0.4),
            frames=[frame_message(small, display, index=7, encoding=encoding)],
        )
        [result] = stub.Detect(request, timeout=30).results
        assert result.index == 7
        boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in result.faces], np.float32)
        np.testing.assert_array_equal(boxes, expected.boxes)


BAD_FRAMES: list[tuple[str, Callable[[pb.Frame], None], str]] = [
    ("not fit_size", lambda f: setattr(f, "width", 600), "must be sent scaled to 640x360"),
    ("zero size", lambda f: setattr(f, "height", 0), "outside 1..4096"),
    ("huge", lambda f: setattr(f, "width", 100_000), "outside 1..4096"),
    ("raw too short", lambda f: setattr(f, "data", f.data[:-1]), "RAW data has"),
    ("no encoding", lambda f: setattr(f, "encoding", pb.IMAGE_ENCODING_UNSPECIFIED), "RAW, PNG"),
    ("garbage png", lambda f: setattr(f, "encoding", pb.IMAGE_ENCODING_PNG), "not a 640x360 PNG"),
    ("no display", lambda f: setattr(f, "display_width", 0), "display size"),
]


@pytest.mark.parametrize(("name", "spoil", "message"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_are_invalid_argument(
    stub: Any, name: str, spoil: Callable[[pb.Frame], None], message: str
) -> None:
    bad = frame()
    spoil(bad)
    code, details = code_of(lambda: stub.Detect(pb.DetectRequest(frames=[bad]), timeout=10))
    assert code is Code.INVALID_ARGUMENT, details
    assert message in details


def test_truncated_png_is_invalid_argument(stub: Any) -> None:
    bad = frame(encoding=Encoding.PNG)
    bad.data = bad.data[: len(bad.data) // 2]
    code, details = code_of(lambda: stub.Detect(pb.DetectRequest(frames=[bad]), timeout=10))
    assert code is Code.INVALID_ARGUMENT
    assert "does not decode" in details


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (pb.DetectRequest(), Code.INVALID_ARGUMENT, "no frames"),
        (
            pb.DetectRequest(frames=[frame_message(picture()[:36, :64], (64, 36), index=0)] * 65),
            Code.INVALID_ARGUMENT,
            "at most 64",
        ),
        (
            pb.DetectRequest(detector=pb.DetectorParams(model="yolo"), frames=[frame()]),
            Code.FAILED_PRECONDITION,
            "serves model 'centerface', not 'yolo'",
        ),
        (
            pb.DetectRequest(detector=pb.DetectorParams(score_threshold=2), frames=[frame()]),
            Code.INVALID_ARGUMENT,
            "score_threshold 2.0 must be in (0, 1)",
        ),
        (
            pb.DetectRequest(detector=pb.DetectorParams(max_side=8), frames=[frame()]),
            Code.INVALID_ARGUMENT,
            "max_side 8",
        ),
    ],
    ids=["empty", "too many", "other model", "threshold", "max_side"],
)
def test_bad_requests(stub: Any, request_: Any, code: grpc.StatusCode, message: str) -> None:
    got, details = code_of(lambda: stub.Detect(request_, timeout=10))
    assert got is code
    assert message in details


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe garbage \x00\x01", pb.DetectRequest(frames=[frame()]).SerializeToString()[:999]],
    ids=["garbage", "truncated"],
)
def test_undecodable_messages_are_refused_and_the_server_lives_on(
    server: Any, stub: Any, payload: bytes
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary("/veil.v1.DetectionService/Detect")
        code, _ = code_of(lambda: raw(payload, timeout=10))
    assert code in (Code.INTERNAL, Code.INVALID_ARGUMENT)  # grpc's own: cannot deserialize
    assert stub.Detect(pb.DetectRequest(frames=[frame()]), timeout=30).results


def test_oversized_message_is_resource_exhausted(veil_server: Callable[..., Any]) -> None:
    server = veil_server(max_message_bytes=64 * 1024)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.DetectionServiceStub(channel)
        code, details = code_of(lambda: stub.Detect(pb.DetectRequest(frames=[frame()]), timeout=10))
    assert code is Code.RESOURCE_EXHAUSTED
    assert "larger than max" in details


def test_full_queue_is_resource_exhausted(veil_server: Callable[..., Any]) -> None:
    server = veil_server(max_batch=1, max_queue=1)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.DetectionServiceStub(channel)
        request = pb.DetectRequest(frames=[frame(0), frame(1)])
        code, details = code_of(lambda: stub.Detect(request, timeout=10))
    assert code is Code.RESOURCE_EXHAUSTED
    assert "queue full" in details


def test_deadline_is_honoured(stub: Any) -> None:
    request = pb.DetectRequest(frames=[frame(i) for i in range(16)])
    code, _ = code_of(lambda: stub.Detect(request, timeout=0.05))
    assert code is Code.DEADLINE_EXCEEDED


def stream_requests(*messages: Any, hold: threading.Event | None = None) -> Iterator[Any]:
    yield from messages
    if hold is not None:
        hold.wait(30)


def start_message(**params: Any) -> pb.DetectStreamRequest:
    return pb.DetectStreamRequest(start=pb.StreamStart(detector=pb.DetectorParams(**params)))


def test_stream_answers_in_order(stub: Any) -> None:
    frames = [pb.DetectStreamRequest(frame=frame(i, Encoding.PNG)) for i in (3, 4, 9)]
    responses = list(stub.DetectStream(stream_requests(start_message(), *frames), timeout=60))
    assert responses[0].started.window == 32
    assert responses[0].started.model.backend == "onnxruntime"
    assert [r.result.index for r in responses[1:]] == [3, 4, 9]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([pb.DetectStreamRequest(frame=frame())], "first message must be start"),
        ([start_message(), start_message()], "only frames may follow"),
        (
            [start_message(), *[pb.DetectStreamRequest(frame=frame(i)) for i in (5, 5)]],
            "indices must increase",
        ),
    ],
    ids=["no start", "two starts", "index order"],
)
def test_stream_protocol_errors(stub: Any, messages: list[Any], message: str) -> None:
    code, details = code_of(lambda: list(stub.DetectStream(stream_requests(*messages), timeout=30)))
    assert code is Code.INVALID_ARGUMENT
    assert message in details


def test_stream_window_is_enforced(veil_server: Callable[..., Any]) -> None:
    server = veil_server(limits={"window": 2})
    hold = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.DetectionServiceStub(channel)
        frames = [pb.DetectStreamRequest(frame=frame(i)) for i in range(40)]
        code, details = code_of(
            lambda: list(
                stub.DetectStream(stream_requests(start_message(), *frames, hold=hold), timeout=30)
            )
        )
        hold.set()
    assert code is Code.RESOURCE_EXHAUSTED
    assert "more than 2 frames unanswered" in details


def test_streams_per_client_are_limited(veil_server: Callable[..., Any]) -> None:
    server = veil_server(limits={"max_streams_per_client": 1})
    hold = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.DetectionServiceStub(channel)
        first = stub.DetectStream(stream_requests(start_message(), hold=hold), timeout=30)
        assert next(first).WhichOneof("kind") == "started"
        code, details = code_of(
            lambda: list(stub.DetectStream(stream_requests(start_message()), timeout=30))
        )
        hold.set()
        first.cancel()
    assert code is Code.RESOURCE_EXHAUSTED
    assert "streams for this client: 1 of 1" in details


def test_a_client_that_drops_mid_stream_does_not_hurt_others(server: Any, stub: Any) -> None:
    hold = threading.Event()
    frames = [pb.DetectStreamRequest(frame=frame(i)) for i in range(8)]
    call = stub.DetectStream(stream_requests(start_message(), *frames, hold=hold), timeout=60)
    assert next(call).WhichOneof("kind") == "started"
    call.cancel()  # goes away with frames in flight
    hold.set()
    assert stub.Detect(pb.DetectRequest(frames=[frame()]), timeout=30).results
    deadline = time.monotonic() + 10
    while server.metrics.active_streams._value.get() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.metrics.active_streams._value.get() == 0


def test_health_says_serving_only_after_warm_up(backend_factory: Any) -> None:
    loaded = threading.Event()

    def slow_factory(config: ServeConfig, model: str) -> Any:
        loaded.wait(30)
        return backend_factory(config, model)

    server = create_server(ServeConfig(listen="127.0.0.1:0"), backend_factory=slow_factory)
    starting = threading.Thread(target=server.start)
    starting.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="veil.v1.DetectionService")
            deadline = time.monotonic() + 10
            while True:  # the port is open before the model is loaded
                try:
                    status = health.Check(check, timeout=5).status
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.DetectionServiceStub(channel)
            code, details = code_of(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5))
            assert code is Code.UNAVAILABLE
            assert "still loading" in details
            loaded.set()
            starting.join(30)
            assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        loaded.set()
        starting.join(30)
        server._backends = {}  # the shared backend outlives this server
        server.stop(0)


def test_reflection_lists_the_services(server: Any) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in response.list_services_response.service}
    assert {"veil.v1.DetectionService", "grpc.health.v1.Health"} <= names


def test_remote_detector_resumes_after_the_server_restarts(
    veil_server: Callable[..., Any],
) -> None:
    first = veil_server()
    port = first.port
    options = ChannelOptions(encoding=Encoding.RAW)
    settings = DetectorSettings(max_side=640)  # picture() is scaled to 640
    with RemoteDetector(f"grpc://127.0.0.1:{port}", settings, options) as remote:
        assert len(remote.detect([picture()], [DISPLAY])) == 1
        first.stop(0)  # the stream drops
        veil_server(listen=f"127.0.0.1:{port}")
        assert len(remote.detect([picture()] * 3, [DISPLAY] * 3)) == 3


def test_remote_detector_serves_two_threads_at_once(veil_server: Callable[..., Any]) -> None:
    """Regression: frames were numbered before the lock, so two threads (a job's detect
    worker and its second looks) could send them out of order on the shared stream
    (``INVALID_ARGUMENT: frame index 7 after 14``) and the job masked those frames whole."""
    server = veil_server()
    settings = DetectorSettings(max_side=640)
    errors: list[BaseException] = []
    with RemoteDetector(f"grpc://127.0.0.1:{server.port}", settings) as remote:

        def run() -> None:
            try:
                for _ in range(8):
                    assert len(remote.detect([picture()] * 2, [DISPLAY] * 2)) == 2
            except BaseException as exc:  # reported below, from the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []


def test_remote_detector_reports_errors_as_veil_errors(server: Any) -> None:
    with pytest.raises(RemoteError, match="FAILED_PRECONDITION: this server serves model"):
        RemoteDetector(
            f"grpc://127.0.0.1:{server.port}", DetectorSettings(model="retinaface_mnet025")
        )


def test_metrics_move_after_a_run(server: Any, stub: Any) -> None:
    def scrape() -> str:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def value(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    detected = 'veil_frames_total{backend="onnxruntime",model="centerface",outcome="detected"}'
    ok = 'veil_requests_total{code="OK",method="Detect"}'
    invalid = 'veil_rpc_errors_total{code="INVALID_ARGUMENT"}'
    before = scrape()
    stub.Detect(pb.DetectRequest(frames=[frame(0), frame(1)]), timeout=30)
    list(
        stub.DetectStream(
            stream_requests(start_message(), pb.DetectStreamRequest(frame=frame())), timeout=30
        )
    )
    code_of(lambda: stub.Detect(pb.DetectRequest(), timeout=10))
    deadline = time.monotonic() + 5  # RPCs are counted when they end, just after the reply
    while value(after := scrape(), invalid) == value(before, invalid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert value(after, detected) == value(before, detected) + 3
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, invalid) == value(before, invalid) + 1
    assert 'veil_rpc_duration_seconds_count{method="DetectStream"} 1.0' in after
    assert "veil_batch_size_count" in after and "veil_queue_depth 0.0" in after
