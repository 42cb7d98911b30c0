"""The record's frames on disk (``FrameLog``), streamed writing and hashing of a record, and a
detection run whose memory does not grow with the video's length (issue #6: a list of every
frame's masks held ~20 KB a frame, 2 GB for an hour)."""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mediagen import make_clip

import veil.job._sinks
from veil import OutputError
from veil.core import FrameMasks, Mask, Origin
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo
from veil.core._errors import DetectorLost
from veil.job import detect_job as run_job
from veil.job._framelog import FrameLog
from veil.job._record import Record
from veil.track._config import TrackerConfig


def _frames(n: int, seed: int = 0) -> list[FrameMasks]:
    """Frames with every kind of mask, landmarks on some, cuts on some, an empty one."""
    rng = random.Random(seed)
    frames = []
    for index in range(n):
        masks = []
        for _ in range(0 if index == 2 else rng.randint(1, 6)):
            landmarks = tuple((rng.uniform(0, 640), rng.uniform(0, 480)) for _ in range(5))
            masks.append(
                Mask(
                    track=rng.randint(0, 9),
                    origin=rng.choice(list(Origin)),
                    box=(rng.uniform(0, 300), rng.uniform(0, 200), 350.5, 260.25),
                    score=rng.random(),
                    landmarks=landmarks if rng.random() < 0.5 else None,
                )
            )
        pts = None if index == 0 else 512 * index
        frames.append(FrameMasks(index, pts, sorted(masks), cut=index % 7 == 3))
    return frames


def _log(frames: Sequence[FrameMasks]) -> FrameLog:
    log = FrameLog()
    for frame in frames:
        log.append(frame)
    return log


def _same(a: FrameMasks, b: FrameMasks) -> bool:
    """Equal, landmarks included (``Mask`` equality leaves them out)."""
    return a == b and [m.landmarks for m in a.masks] == [m.landmarks for m in b.masks]


def test_frame_log_reads_back_what_was_appended() -> None:
    frames = _frames(40)
    with _log(frames) as log:
        assert len(log) == 40
        assert all(_same(x, y) for x, y in zip(log, frames, strict=True))
        for k in (0, 1, 17, 39, -1, -40):
            assert _same(log[k], frames[k])
        assert log[5:9] == frames[5:9]
        assert log[::-13] == frames[::-13]
        for k in (40, -41):
            with pytest.raises(IndexError):
                log[k]
        # appending after reading, and reading by index while iterating, move nothing
        frames.append(FrameMasks(40, 40 * 512, _frames(5, seed=1)[4].masks))
        log.append(frames[40])
        for k, frame in enumerate(log):
            assert _same(frame, frames[k])
            assert _same(log[-1 - k], frames[-1 - k])
        assert len(log) == 41
    with pytest.raises(ValueError, match="closed"):
        log[0]


def test_frame_log_iterates_across_read_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FrameLog, "_BLOCK", 64)  # smaller than one frame: a read per frame
    frames = _frames(25)
    with _log(frames) as log:
        assert all(_same(x, y) for x, y in zip(log, frames, strict=True))


def _record(frames: Sequence[FrameMasks], **kwargs: Any) -> Record:
    return Record(
        veil_version="0.0-test",
        input={"name": "café «1».mp4", "sha256": "ab" * 32},  # not ASCII: written as UTF-8
        detector={"model": "fixed", "stride": 1},
        tracker=TrackerConfig(),
        frames=frames,
        edits=[{"action": "suppress", "track": 3, "why": "not a face"}],
        **kwargs,
    )


@pytest.mark.parametrize("policy", [{}, {3: "detector error: boom", 4: "détecteur"}])
@pytest.mark.parametrize("risk", [None, {"estimate": {"level": "low"}}])
def test_a_record_on_disk_writes_the_bytes_of_the_same_record_in_memory(
    tmp_path: Path, policy: dict[int, str], risk: dict[str, Any] | None
) -> None:
    frames = _frames(30)
    in_memory = _record(frames, policy=policy, residual_risk=risk)
    # the canonical form: the whole document, compact, UTF-8, a newline
    expected = (
        json.dumps(in_memory.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()
    with _log(frames) as log:
        on_disk = _record(log, policy=policy, residual_risk=risk)
        assert on_disk.summary() == in_memory.summary()
        for record, name in ((in_memory, "a.json"), (on_disk, "b.json")):
            assert record.canonical_bytes() == expected
            assert record.sha256() == hashlib.sha256(expected).hexdigest()
            assert record.write(tmp_path / name) == hashlib.sha256(expected).hexdigest()
            assert (tmp_path / name).read_bytes() == expected
    assert json.loads(expected)["frames"][3].get("policy") == policy.get(3)


def test_a_failed_streamed_write_leaves_nothing(tmp_path: Path) -> None:
    log = _log(_frames(10))
    record = _record(log)
    log.close()  # reading the frames now fails half-way through the write
    with pytest.raises(ValueError, match="closed"):
        record.write(tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="cannot write"):
        _record(_frames(3)).write(tmp_path / "no such dir" / "r.json")


# -- a detection run holds no per-frame state ------------------------------------------------


class CrowdDetector:
    """Finds the same ten faces, with landmarks, in every image (the load the issue measured)."""

    FACES = 10

    def __init__(self) -> None:
        self.info = DetectorInfo(
            model="crowd",
            weights_sha256="0" * 64,
            backend="test",
            execution_provider="cpu",
            max_side=96,
            score_threshold=0.5,
            nms_threshold=0.4,
        )

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        boxes = np.array([[9 * k, 2 * k, 9 * k + 8, 2 * k + 10] for k in range(self.FACES)])
        landmarks = np.repeat(boxes[:, None, :2] + 3, 5, axis=1)
        scores = np.full(self.FACES, 0.9)
        return [Detections(boxes, scores, landmarks) for _ in images]

    def close(self) -> None:
        pass


def _detect_peak(path: Path, record_path: Path) -> tuple[int, int]:
    """Python-heap peak during a detection run and what its result still holds, in bytes."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = run_job(path, detector=CrowdDetector(), record_path=record_path)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    frames = result.record.frames
    assert isinstance(frames, FrameLog)  # on disk, and still readable after the job
    assert result.record.summary()["masks_by_origin"]["detected"] == 10 * len(frames)
    assert sum(m.origin is Origin.DETECTED for m in frames[-1].masks) == 10
    frames.close()
    return peak - before, held - before


def test_detection_memory_does_not_grow_with_the_video_length(tmp_path: Path) -> None:
    short = make_clip(tmp_path / "short.mp4", size=(96, 64), frames=100, audio=None)
    long = make_clip(tmp_path / "long.mp4", size=(96, 64), frames=500, audio=None)
    _detect_peak(short, tmp_path / "warm-up.json")  # imports, caches
    short_peak, short_held = _detect_peak(short, tmp_path / "short.json")
    long_peak, long_held = _detect_peak(long, tmp_path / "long.json")
    assert len(json.loads((tmp_path / "long.json").read_bytes())["frames"]) == 500
    # Holding every frame's masks in memory costs ~10 KB a frame here: 4 MB more for the long
    # clip (what veil did before). On disk, a frame costs its 8-byte offset; the peaks differ
    # by the I/O buffers (hashing the input, writing the record), which stop growing at 1 MiB.
    assert long_held - short_held < 100_000, (short_held, long_held)
    assert long_peak - short_peak < 1_000_000, (short_peak, long_peak)


class LostDetector(CrowdDetector):
    """Finds the crowd, then is gone for good (or the user presses Ctrl-C) on call ``fail``."""

    def __init__(self, error: BaseException, fail: int = 5) -> None:
        super().__init__()
        self.error, self.fail, self.calls = error, fail, 0

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        self.calls += 1
        if self.calls == self.fail:
            raise self.error
        return super().detect(images, sizes)


@pytest.mark.parametrize("error", [DetectorLost("gone"), KeyboardInterrupt()])
def test_a_failed_detection_run_closes_its_frame_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    logs: list[FrameLog] = []

    class Tracked(FrameLog):
        def __init__(self) -> None:
            super().__init__()
            logs.append(self)

    monkeypatch.setattr(veil.job._sinks, "FrameLog", Tracked)
    src = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=60, audio=None)
    with pytest.raises(type(error)):
        run_job(src, detector=LostDetector(error), record_path=tmp_path / "r.json")
    assert len(logs) == 1 and len(logs[0]) > 0  # frames were logged, then the job failed
    with pytest.raises(ValueError, match="closed"):
        logs[0][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
