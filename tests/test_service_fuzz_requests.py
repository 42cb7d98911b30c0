"""Fuzzing the service's request validation (issue 9, hardening): Detect, DetectStream, RunJob.

Real requests are the seeds: frames of ``samples/astronaut.mp4`` scaled with ``fit_size`` and
encoded RAW, PNG and JPEG exactly as ``RemoteDetector`` sends them (tests/service_fuzzing.py).
Hypothesis mutates them (sizes, indices, encodings, truncated or garbled image bytes, huge
declared dimensions, empty fields, thresholds, stream order; a job's settings and upload
framing) and sends them to a real in-process server on port 0. Every answer must be OK with one
result per frame in order, or one of the explicit codes the API promises for bad input; never
UNKNOWN or INTERNAL. After every example the server must still answer a well-formed request.

``FUZZ_EXAMPLES`` sets the examples per test (CI: the default; ``make fuzz``: more). Bugs found
here are pinned by the regression tests in tests/test_service_fuzz_protobuf.py, named after the
bug.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_fuzzing import (
    EXAMPLES,
    FLOATS,
    FUZZ,
    MAX_FRAMES,
    MAX_SIDES,
    MODELS,
    UINT32,
    UINT64,
    WINDOW,
    _assert_expected,
    _still_serving,
    params,
    spoiled_data,
    spoiled_frame,
)

from veil.v1 import detection_pb2 as pb
from veil.wire import Encoding

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)
pytest_plugins = ["service_fuzzing"]  # seed_frames, fuzz_server, channel, stub


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
