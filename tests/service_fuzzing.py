"""What the service's fuzz tests (tests/test_service_fuzz_*.py) share: the fixtures (seed
frames of ``samples/astronaut.mp4`` as ``RemoteDetector`` sends them, a real in-process server
on port 0 with small limits, its channel and stub), the Hypothesis strategies that spoil
frames, image bytes and detector parameters, and the oracle: an explicit code with a message,
and a server still answering a well-formed request.

``FUZZ_EXAMPLES`` sets the examples per test (CI: the default; ``make fuzz``: more). Register
the fixtures where they are needed with ``pytest_plugins = ["service_fuzzing"]``.
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
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from veil import fit_size
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import Encoding, frame_message

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
