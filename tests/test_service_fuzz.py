"""Fuzzing the service's request validation (issue 9, hardening).

Real requests are the seeds: frames of ``samples/astronaut.mp4`` scaled with ``fit_size`` and
encoded RAW, PNG and JPEG exactly as ``RemoteDetector`` sends them. Hypothesis mutates them
(sizes, indices, encodings, truncated or garbled image bytes, huge declared dimensions, empty
fields, thresholds, stream order) and sends them to a real in-process server on port 0. Every
answer must be OK with one result per frame in order, or one of the explicit codes the API
promises for bad input; never UNKNOWN or INTERNAL. After every example the server must still
answer a well-formed request.

``FUZZ_EXAMPLES`` sets the examples per test (CI: the default; ``make fuzz``: more).
Bugs found here are pinned by the regression tests at the end, named after the bug.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from veil import fit_size
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import Encoding, frame_message

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
Code = grpc.StatusCode
# What bad input may get. UNAVAILABLE/CANCELLED are not here: nothing in these tests drains
# the server or cancels a call.
EXPECTED = {
    Code.INVALID_ARGUMENT,
    Code.RESOURCE_EXHAUSTED,
    Code.FAILED_PRECONDITION,
    Code.DEADLINE_EXCEEDED,
}
MAX_SIDES = (64, 96, 128)  # small images keep inference cheap; the validation is the same
WINDOW = 4
MAX_FRAMES = 6
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def seed_frames(sample_clip: Path) -> dict[tuple[int, Encoding], list[pb.Frame]]:
    """Real frames (3 of the sample), per (max_side, encoding), as the client sends them."""
    with av.open(str(sample_clip)) as container:
        pictures = []
        for i, decoded in enumerate(container.decode(video=0)):
            if i in (0, 60, 120):
                pictures.append(decoded.to_ndarray(format="rgb24"))
            if len(pictures) == 3:
                break
    seeds: dict[tuple[int, Encoding], list[pb.Frame]] = {}
    for max_side in MAX_SIDES:
        for encoding in Encoding:
            frames = []
            for i, rgb in enumerate(pictures):
                display = (rgb.shape[1], rgb.shape[0])
                small = cv2.resize(rgb, fit_size(*display, max_side), interpolation=cv2.INTER_AREA)
                frames.append(frame_message(small, display, index=i, encoding=encoding))
            seeds[(max_side, encoding)] = frames
    return seeds


@pytest.fixture(scope="module")
def fuzz_server(backend_factory: Any) -> Iterator[Any]:
    from veil.server.service import ServeConfig, create_server

    config = ServeConfig.from_sources(
        toml={
            "listen": "127.0.0.1:0",
            "max_message_bytes": 4 << 20,
            "limits": {
                "window": WINDOW,
                "max_frames_per_request": MAX_FRAMES,
                "max_image_side": 1024,
                "max_streams_per_client": 4,
                "max_jobs": 1,
                "max_job_bytes": 1 << 20,
            },
        }
    )
    server = create_server(config, backend_factory=backend_factory).start()
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def channel(fuzz_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return pb_grpc.DetectionServiceStub(channel)


# -- mutations -------------------------------------------------------------------------------

UINT32 = st.one_of(
    st.sampled_from([0, 1, 2, 31, 32, 33, 4095, 4096, 4097, 65535, 65536, 65537, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
UINT64 = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, float("nan"), float("inf"), -float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
ENCODINGS = st.one_of(st.sampled_from(list(pb.ImageEncoding.values())), st.integers(0, 2**31 - 1))
MODELS = st.sampled_from(["", "centerface", "retinaface_mnet025", "yolo", "../centerface", "\0"])


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (valid CRC) and holds one tiny IDAT:
    a decompression-bomb-shaped header without the bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )  # fmt: skip


@st.composite
def spoiled_data(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(
        st.sampled_from(
            ["keep", "truncate", "empty", "flip", "garbage", "append", "huge_png", "splice"]
        )
    )
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "empty":
        return b""
    if kind == "flip":
        spoiled = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            if spoiled:
                at = draw(st.integers(0, len(spoiled) - 1))
                spoiled[at] = draw(st.integers(0, 255))
        return bytes(spoiled)
    if kind == "garbage":
        return draw(st.binary(max_size=2048))
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=256))
    if kind == "huge_png":
        return _png_with_size(draw(UINT32), draw(UINT32))
    if kind == "splice":  # a valid header in front of garbage, or garbage behind a header
        cut = draw(st.integers(0, min(64, len(data))))
        return data[:cut] + draw(st.binary(max_size=512))
    return data


@st.composite
def spoiled_frame(draw: st.DrawFn, seeds: list[pb.Frame]) -> pb.Frame:
    frame = pb.Frame()
    frame.CopyFrom(draw(st.sampled_from(seeds)))
    for name in draw(
        st.sets(
            st.sampled_from(
                ["index", "encoding", "data", "width", "height", "display_width", "display_height"]
            ),
            max_size=3,
        )
    ):
        if name == "index":
            frame.index = draw(UINT64)
        elif name == "encoding":
            frame.encoding = draw(ENCODINGS)
        elif name == "data":
            frame.data = draw(spoiled_data(frame.data))
        else:
            setattr(frame, name, draw(UINT32))
    return frame


@st.composite
def params(draw: st.DrawFn, max_side: int) -> pb.DetectorParams:
    detector = pb.DetectorParams(max_side=max_side)
    if draw(st.booleans()):
        detector.model = draw(MODELS)
    if draw(st.booleans()):
        detector.max_side = draw(UINT32)
    if draw(st.booleans()):
        detector.score_threshold = draw(FLOATS)
    if draw(st.booleans()):
        detector.nms_threshold = draw(FLOATS)
    return detector


# -- the oracle ------------------------------------------------------------------------------


def _assert_expected(exc: grpc.RpcError, what: str) -> None:
    code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
    assert code in EXPECTED, f"{what}: {code} {details!r}"
    assert details, f"{what}: {code} without a message"


def _still_serving(stub: Any, seeds: dict[tuple[int, Encoding], list[pb.Frame]]) -> None:
    request = pb.DetectRequest(
        detector=pb.DetectorParams(max_side=64), frames=seeds[(64, Encoding.RAW)][:1]
    )
    [result] = stub.Detect(request, timeout=30).results
    assert result.index == 0


# -- Detect ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_fuzzed_detect_requests_get_ok_or_an_explicit_code(
    stub: Any, seed_frames: dict[tuple[int, Encoding], list[pb.Frame]], data: Any
) -> None:
    max_side = data.draw(st.sampled_from(MAX_SIDES), "max_side")
    encoding = data.draw(st.sampled_from(list(Encoding)), "encoding")
    seeds = seed_frames[(max_side, encoding)]
    frames = data.draw(st.lists(spoiled_frame(seeds), max_size=MAX_FRAMES + 2), "frames")
    request = pb.DetectRequest(detector=data.draw(params(max_side), "params"), frames=frames)
    timeout = data.draw(st.sampled_from([0.001, 0.05, 30.0]), "timeout")
    try:
        response = stub.Detect(request, timeout=timeout)
    except grpc.RpcError as exc:
        _assert_expected(exc, "Detect")
    else:
        assert [r.index for r in response.results] == [f.index for f in frames]
        for result in response.results:
            for face in result.faces:
                assert np.isfinite([face.x0, face.y0, face.x1, face.y1, face.score]).all()
    _still_serving(stub, seed_frames)


# -- DetectStream ----------------------------------------------------------------------------


@st.composite
def stream_messages(
    draw: st.DrawFn, seeds: dict[tuple[int, Encoding], list[pb.Frame]]
) -> tuple[list[pb.DetectStreamRequest], bool]:
    """A stream's requests (a start, then frames, then spoilers), and whether it is
    well-formed enough that the server must answer it OK (given it reads it fast enough)."""
    max_side = draw(st.sampled_from(MAX_SIDES))
    encoding = draw(st.sampled_from(list(Encoding)))
    seed = seeds[(max_side, encoding)]
    count = draw(st.integers(0, WINDOW))
    start = pb.StreamStart(detector=pb.DetectorParams(max_side=max_side))
    indices = sorted(draw(st.sets(st.integers(0, 10_000), min_size=count, max_size=count)))
    frames = []
    for n, index in enumerate(indices):
        frame = pb.Frame()
        frame.CopyFrom(seed[n % len(seed)])
        frame.index = index
        frames.append(pb.DetectStreamRequest(frame=frame))
    messages = [pb.DetectStreamRequest(start=start), *frames]
    spoilers = draw(
        st.lists(
            st.sampled_from(
                ["params", "frame", "reorder", "repeat", "no_start", "second_start", "empty",
                 "overflow"]
            ),
            max_size=2,
        )
    )  # fmt: skip
    for spoiler in spoilers:
        if spoiler == "params" and messages and messages[0].HasField("start"):
            messages[0] = pb.DetectStreamRequest(
                start=pb.StreamStart(detector=draw(params(max_side)))
            )
        elif spoiler == "frame" and len(messages) > 1:
            at = draw(st.integers(1, len(messages) - 1))
            bad = draw(spoiled_frame(seed))
            bad.index = messages[at].frame.index
            messages[at] = pb.DetectStreamRequest(frame=bad)
        elif spoiler == "reorder" and len(messages) > 2:
            at = draw(st.integers(1, len(messages) - 2))
            messages[at], messages[at + 1] = messages[at + 1], messages[at]
        elif spoiler == "repeat" and len(messages) > 1:
            at = draw(st.integers(1, len(messages) - 1))
            messages.insert(at, messages[at])
        elif spoiler == "no_start" and messages and messages[0].HasField("start"):
            messages.pop(0)
        elif spoiler == "second_start":
            at = draw(st.integers(min(1, len(messages)), len(messages)))  # none left: at 0
            messages.insert(at, pb.DetectStreamRequest(start=start))
        elif spoiler == "empty":
            messages.insert(draw(st.integers(0, len(messages))), pb.DetectStreamRequest())
        elif spoiler == "overflow":  # more unanswered frames than the window allows
            last = max([m.frame.index for m in messages if m.HasField("frame")], default=0)
            for k in range(WINDOW * 3):
                extra = pb.Frame()
                extra.CopyFrom(seed[0])
                extra.index = last + 1 + k
                messages.append(pb.DetectStreamRequest(frame=extra))
    return messages, not spoilers


@FUZZ
@given(data=st.data())
def test_fuzzed_streams_get_ordered_results_or_an_explicit_code(
    stub: Any, seed_frames: dict[tuple[int, Encoding], list[pb.Frame]], data: Any
) -> None:
    messages, well_formed = data.draw(stream_messages(seed_frames), "messages")
    sent = [m.frame.index for m in messages if m.HasField("frame")]
    call = stub.DetectStream(iter(messages), timeout=60)
    received: list[Any] = []
    try:
        for response in call:
            received.append(response)
    except grpc.RpcError as exc:
        assert not well_formed, f"a well-formed stream failed: {exc}"
        _assert_expected(exc, "DetectStream")
    else:
        assert received[0].WhichOneof("kind") == "started"
        results = [r.result.index for r in received[1:]]
        assert all(r.WhichOneof("kind") == "result" for r in received[1:])
        assert results == sent  # nothing lost, nothing reordered
    # whatever came before an error was in order and a prefix of what was sent
    indices = [r.result.index for r in received if r.WhichOneof("kind") == "result"]
    assert indices == sent[: len(indices)]
    _still_serving(stub, seed_frames)


# -- RunJob (settings and upload framing; inputs are tiny, so jobs fail fast or run small) ---

STYLE_WORDS = st.sampled_from(["", "blur", "pixelate", "fill", "box", "ellipse", "rainbow", "\0"])
TEXT = st.one_of(st.sampled_from(["", ".", "..", "a/b", "in.mp4", "out.mkv", "x" * 300, "\0"]),
                 st.text(max_size=12))  # fmt: skip


@st.composite
def job_requests(draw: st.DrawFn, upload: bytes) -> list[pb.JobRequest]:
    start = pb.JobStart(
        input_name=draw(st.sampled_from(["in.mp4", "clip.mkv"]) | TEXT),
        output_name=draw(st.sampled_from(["", "out.mp4"]) | TEXT),
        write_record=draw(st.booleans()),
        preset=draw(st.sampled_from(["", "fast", "balanced", "thorough", "turbo"])),
    )
    body = draw(spoiled_data(upload))
    start.input_size = draw(st.sampled_from([len(body), len(body) + 1, 0, 2**64 - 1]) | UINT64)
    if draw(st.booleans()):
        d = start.detector
        d.model, d.max_side = draw(MODELS), draw(UINT32)
        d.score_threshold, d.nms_threshold = draw(FLOATS), draw(FLOATS)
        d.batch_size = draw(UINT32)
    if draw(st.booleans()):
        t = start.tracker
        t.set = True
        t.max_gap, t.lead_in, t.lead_out = draw(UINT32), draw(UINT32), draw(UINT32)
        t.match_iou, t.growth_per_frame = draw(FLOATS), draw(FLOATS)
    if draw(st.booleans()):
        s = start.style
        s.set = True
        s.effect, s.shape = draw(STYLE_WORDS), draw(STYLE_WORDS)
        s.margin, s.feather, s.blur_strength = draw(FLOATS), draw(FLOATS), draw(FLOATS)
        s.pixel_blocks = draw(UINT32)
        s.color.extend(draw(st.lists(UINT32, max_size=4)))
    if draw(st.booleans()):
        e = start.encoder
        e.set = True
        e.codec = draw(st.sampled_from(["", "libx264", "h264", "mpeg4", "nope"]) | TEXT)
        e.preset = draw(st.sampled_from(["", "ultrafast", "medium", "nope"]))
        e.crf, e.threads = draw(UINT32), draw(UINT32)
        e.pix_fmt = draw(st.sampled_from(["", "yuv420p", "nope"]))
    cut = draw(st.integers(1, 4))
    chunks = [body[i::cut] for i in range(cut)] if draw(st.booleans()) else [body]
    messages = [pb.JobRequest(start=start), *(pb.JobRequest(chunk=c) for c in chunks)]
    if draw(st.booleans()):
        order = draw(st.sampled_from(["no_start", "start_again", "empty"]))
        if order == "no_start":
            messages.pop(0)
        elif order == "start_again":
            messages.append(pb.JobRequest(start=start))
        else:
            messages.insert(1, pb.JobRequest())
    return messages


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from mediagen import make_clip

    path = make_clip(tmp_path_factory.mktemp("fuzzjob") / "in.mp4", size=(64, 48), frames=3)
    return path.read_bytes()


@settings(
    max_examples=max(10, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_jobs_get_ok_or_an_explicit_code(
    stub: Any,
    seed_frames: dict[tuple[int, Encoding], list[pb.Frame]],
    tiny_clip: bytes,
    data: Any,
) -> None:
    messages = data.draw(job_requests(tiny_clip), "messages")
    try:
        responses = list(stub.RunJob(iter(messages), timeout=120))
    except grpc.RpcError as exc:
        _assert_expected(exc, "RunJob")
    else:
        assert responses[-1].WhichOneof("kind") == "done"
    _still_serving(stub, seed_frames)


# -- undecodable protobuf --------------------------------------------------------------------

REQUEST_TYPES = {
    "GetModelInfo": pb.GetModelInfoRequest,
    "Detect": pb.DetectRequest,
    "DetectStream": pb.DetectStreamRequest,
    "RunJob": pb.JobRequest,
}


def _parses(kind: Any, payload: bytes) -> bool:
    try:
        kind.FromString(payload)
    except Exception:
        return False
    return True


@FUZZ
@given(data=st.data())
def test_undecodable_messages_are_invalid_argument(
    channel: grpc.Channel,
    stub: Any,
    seed_frames: dict[tuple[int, Encoding], list[pb.Frame]],
    data: Any,
) -> None:
    """Bytes that are not the method's protobuf: INVALID_ARGUMENT from the server, for unary
    and streaming methods (bug: gRPC's own INTERNAL 'Exception deserializing request!')."""
    method = data.draw(st.sampled_from(sorted(REQUEST_TYPES)), "method")
    seed = pb.DetectRequest(frames=seed_frames[(64, Encoding.PNG)][:1]).SerializeToString()
    payload = data.draw(
        st.one_of(
            st.binary(min_size=1, max_size=256),
            st.integers(1, len(seed) - 1).map(lambda n: seed[:n]),
        ),
        "payload",
    )
    assume(not _parses(REQUEST_TYPES[method], payload))
    path = f"/veil.v1.DetectionService/{method}"
    with pytest.raises(grpc.RpcError) as caught:
        if method in ("Detect", "GetModelInfo"):
            channel.unary_unary(path)(payload, timeout=30)
        else:
            list(channel.stream_stream(path)(iter([payload]), timeout=30))
    code = caught.value.code()  # type: ignore[attr-defined]
    assert code is Code.INVALID_ARGUMENT, caught.value
    assert "cannot be parsed" in caught.value.details()  # type: ignore[attr-defined]
    _still_serving(stub, seed_frames)


# -- regressions found by the fuzzing above --------------------------------------------------


@pytest.mark.parametrize("method", ["Detect", "DetectStream", "RunJob"])
def test_bug_undecodable_request_was_internal(
    channel: grpc.Channel, stub: Any, seed_frames: Any, method: str
) -> None:
    """Bug: bytes that are not the request protobuf got gRPC's own INTERNAL ("Exception
    deserializing request!"), the code of a server bug. Now INVALID_ARGUMENT, with a message
    naming the message type, via DecodeGuard."""
    path = f"/veil.v1.DetectionService/{method}"
    payload = b"\xff\xfe garbage \x00\x01"
    with pytest.raises(grpc.RpcError) as caught:
        if method == "Detect":
            channel.unary_unary(path)(payload, timeout=10)
        else:
            list(channel.stream_stream(path)(iter([payload]), timeout=10))
    assert caught.value.code() is Code.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "cannot be parsed as veil.v1." in caught.value.details()  # type: ignore[attr-defined]
    _still_serving(stub, seed_frames)


def test_bug_every_threshold_pair_was_cached_forever(
    fuzz_server: Any, stub: Any, seed_frames: Any
) -> None:
    """Bug: the batcher kept one detector per (score, nms) threshold pair any client asked
    for, never dropping one: fuzzed thresholds grew the server's memory without bound. Now
    the least recently used pairs are dropped (32 kept), and a frame whose pair was dropped
    while it waited is still detected."""
    for i in range(100):
        stub.GetModelInfo(
            pb.GetModelInfoRequest(detector=pb.DetectorParams(score_threshold=0.3 + i / 1000)),
            timeout=10,
        )
    assert len(fuzz_server._batcher._detectors) <= 32
    request = pb.DetectRequest(
        detector=pb.DetectorParams(max_side=64, score_threshold=0.3),  # dropped long ago
        frames=seed_frames[(64, Encoding.PNG)],
    )
    assert [r.index for r in stub.Detect(request, timeout=30).results] == [0, 1, 2]
