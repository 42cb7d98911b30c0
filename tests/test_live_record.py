"""The live record's typed lines against ``protos/veil/v1/live-record.schema.json`` (issue
15): every kind of line ``veil live`` writes validates, and the schema refuses what the
engine never writes. The records of real runs are validated line by line wherever the live
tests read them (``live_loopback.read_record``)."""

from __future__ import annotations

import json
import typing
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from veil import RecordError
from veil.core import Mask, Origin, whole_frame
from veil.job import validate
from veil.live import LiveConfig
from veil.live._policy import Mode
from veil.live._record import (
    DetectorBack,
    DetectorFailed,
    DetectorGone,
    FrameDropped,
    FrameSent,
    Header,
    RecordLine,
    RecordWriter,
    SinkOpened,
    SourceConnected,
    SourceLost,
    StreamInfo,
    Summary,
    Timeline,
)
from veil.live._stats import LiveStats

DETECTOR = {
    "model": "yunet",
    "weights_sha256": "0" * 64,
    "backend": "onnxruntime",
    "execution_provider": "CPUExecutionProvider",
    "max_side": 640,
    "score_threshold": 0.5,
    "nms_threshold": 0.3,
    "options": {},
    "preset": "fast",
}
FACE = Mask(track=3, origin=Origin.DETECTED, box=(10.0, 12.0, 50.0, 60.0), score=0.91)
PREDICTED = Mask(track=4, origin=Origin.EXTRAPOLATED, box=(70.0, 12.0, 99.5, 60.0), score=0.6)


def _summary() -> Summary:
    stats = LiveStats()
    stats.frames_in = 3
    stats.frame(Mode.DETECTED, 0.12)
    stats.frame(Mode.POLICY, 0.2)
    stats.drop("lag")
    stats.strides.extend([2, 3])
    return Summary(stats=stats.snapshot(), ended="end of stream")


def _frame(
    mode: Mode,
    masks: tuple[Mask, ...],
    policy: str | None = None,
    motion: tuple[float, float] = (0.0, 0.0),
) -> FrameSent:
    return FrameSent(
        frame=7,
        pts=21000,
        out_pts=21000,
        session=1,
        mode=mode,
        latency_s=0.1234,
        stride=2,
        motion=motion,
        masks=masks,
        policy=policy,
    )


LINES: list[RecordLine] = [
    Header(
        source="udp://0.0.0.0:5000",
        sink="udp://127.0.0.1:6000?pkt_size=1316",
        config=LiveConfig(),
        detector=DETECTOR,
    ),
    SourceConnected(
        session=1,
        rate=Fraction(30000, 1001),
        streams=(
            StreamInfo(index=0, type="video", codec="h264", time_base=Fraction(1, 90000)),
            StreamInfo(index=1, type="audio", codec="aac", time_base=Fraction(1, 48000)),
            StreamInfo(index=2, type="data", codec=None, time_base=None),
        ),
    ),
    SourceConnected(
        session=2,
        rate=None,
        streams=(StreamInfo(index=0, type="video", codec="h264", time_base=Fraction(1, 90000)),),
    ),
    SourceLost(session=1, reason="end of stream", retry_in_s=0.5),
    SourceLost(session=0, reason="cannot open the source", retry_in_s=10.0),
    Timeline(session=2, offset_s=-3.4),
    SinkOpened(
        sink="out.ts",
        format="mpegts",
        encoder={
            "codec": "libx264",
            "options": {"preset": "ultrafast", "tune": "zerolatency"},
            "pix_fmt": "yuv420p",
            "keyframe_s": 1.0,
            "ffmpeg": "8.1.2",
            "pyav": "18.1.0",
        },
        tracker={
            "max_gap": 30,
            "lead_in": 0,
            "lead_out": 0,
            "match_iou": 0.2,
            "growth_per_frame": 0.06,
        },
    ),
    DetectorFailed(frame=40, error="DetectorError: the detector was killed by the test"),
    DetectorGone(frame=45, gone_s=0.20049, error="no answer"),
    DetectorBack(frame=80, down_s=2.5),
    _frame(Mode.DETECTED, (FACE, PREDICTED)),
    _frame(Mode.TRACKED, (PREDICTED,), motion=(-12.5, 0.8)),
    _frame(Mode.LATE, ()),
    _frame(Mode.POLICY, (whole_frame(320, 240),), "detector unavailable for 0.41 s (no answer)"),
    FrameDropped(frame=9, pts=None, reason="ingest queue full"),
    _summary(),
    Summary(stats=LiveStats().snapshot(), ended="error: boom"),
]


@pytest.mark.parametrize("line", LINES, ids=lambda line: type(line).__name__)
def test_every_kind_of_line_validates(line: RecordLine) -> None:
    validate(line.to_json(), "live-record", type(line).__name__)


def test_every_line_type_is_exercised_and_every_event_is_in_the_schema() -> None:
    kinds = set(typing.get_args(RecordLine))
    assert {type(line) for line in LINES} == kinds
    written = {line.to_json().get("event") for line in LINES} - {None}
    schema = resources.files("veil.v1").joinpath("live-record.schema.json").read_text()
    defs = json.loads(schema)["$defs"]
    in_schema = {d["properties"]["event"]["const"] for d in defs.values()
                 if "event" in d.get("properties", {})}  # fmt: skip
    assert written == in_schema


def test_lines_keep_their_words_and_rounding() -> None:
    """The record's field names and values, as before the lines were typed."""
    assert DetectorGone(frame=45, gone_s=0.20049, error="x").to_json() == {
        "event": "detector_gone",
        "frame": 45,
        "gone_s": 0.2,
        "error": "x",
    }
    line = _frame(Mode.POLICY, (whole_frame(320, 240),), "no detection yet").to_json()
    assert list(line) == [
        *("frame", "pts", "out_pts", "session", "mode", "latency_ms", "stride", "masks"),
        "policy",
    ]
    assert line["latency_ms"] == 123.4
    assert "policy" not in _frame(Mode.TRACKED, ()).to_json()
    assert "motion" not in _frame(Mode.TRACKED, ()).to_json()  # none measured, as offline
    assert _frame(Mode.TRACKED, (), motion=(-12.5, 0.8)).to_json()["motion"] == [-12.5, 0.8]
    summary = _summary().to_json()["summary"]
    assert summary["frames_masked_by_policy"] == 1
    assert summary["latency_ms"] == {"p50": 200.0, "p95": 200.0, "max": 200.0}
    assert summary["stride_recent_mean"] == 2.5
    assert summary["ended"] == "end of stream"


def _bad(line: RecordLine, **changes: Any) -> dict[str, Any]:
    document = line.to_json()
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    return document


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_bad(LINES[-4], policy=None), id="policy-frame-without-why"),
        pytest.param(_bad(LINES[10], policy="why"), id="detected-frame-with-a-why"),
        pytest.param(_bad(LINES[10], mode="guessed"), id="unknown-mode"),
        pytest.param(_bad(LINES[-4], masks=[]), id="policy-frame-without-its-mask"),
        pytest.param(_bad(LINES[7], event="detector_sad"), id="unknown-event"),
        pytest.param(_bad(LINES[0], schema="veil.live-record/2"), id="other-schema"),
        pytest.param({"summary": {"frames_in": 1}}, id="summary-cut-short"),
        pytest.param(_bad(LINES[10], unexpected=1), id="unknown-field"),
    ],
)
def test_the_schema_refuses_what_veil_live_never_writes(document: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match="not a valid live-record"):
        validate(document, "live-record", "line")


def test_the_writer_flushes_each_line(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    writer = RecordWriter(path)
    writer.write(LINES[0])
    assert json.loads(path.read_text())["schema"] == "veil.live-record/1"  # before close
    writer.write(LINES[-2])
    writer.close()
    assert [next(iter(json.loads(line))) for line in path.read_text().splitlines()] == [
        "schema",
        "summary",
    ]
    RecordWriter(None).write(LINES[0])  # no record asked for: nothing written
