"""Fuzzing the service with bytes that are not its protobuf (issue 9, hardening), and the
regression tests for the bugs the fuzzing found, each named after its bug.

Undecodable requests, for unary and streaming methods, must get INVALID_ARGUMENT from the
server (bug: gRPC's own INTERNAL), and the server must still answer a well-formed request.
``FUZZ_EXAMPLES`` sets the examples per test (CI: the default; ``make fuzz``: more).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from service_fuzzing import FUZZ, Code, _still_serving

from veil.v1 import detection_pb2 as pb
from veil.wire import Encoding

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)
pytest_plugins = ["service_fuzzing"]  # seed_frames, fuzz_server, channel, stub


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
