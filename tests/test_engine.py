"""The overlapped engine (decode, detect, render, encode in their own threads): detection
stride coverage, fail-closed batches under a stride, determinism, and errors surfacing from
helper threads. Throughput and peak memory are measured by benchmarks/bench_throughput.py,
not by timed tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from mediagen import make_clip

import veil
from veil import ConfigError
from veil.core import Origin
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo
from veil.job import detect_job as run_job
from veil.job._stride import agree as _agree
from veil.job._threads import Ahead as _Ahead
from veil.job._threads import InOrder as _InOrder
from veil.track._config import TrackerConfig

FACE = (100.0, 60.0, 160.0, 140.0)


class FixedDetector:
    """Finds one face at ``FACE`` in every image; can fail on chosen calls; counts images."""

    def __init__(self, fail_calls: Sequence[int] = ()) -> None:
        self.info = DetectorInfo(
            model="fixed",
            weights_sha256="0" * 64,
            backend="test",
            execution_provider="cpu",
            max_side=320,
            score_threshold=0.5,
            nms_threshold=0.4,
        )
        self.images = 0
        self.calls = 0
        self.threads: set[str] = set()
        self._fail = set(fail_calls)

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.calls in self._fail:
            raise RuntimeError("scripted failure")
        self.images += len(images)
        return [
            Detections(np.array([FACE], np.float32), np.array([0.9], np.float32)) for _ in images
        ]

    def close(self) -> None:
        pass


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _still_clip(path: Path, frames: int) -> Path:
    """A still camera: the same textured picture (gradients and 8 px checks) in every frame."""
    y, x = np.mgrid[0:240, 0:320]
    image = np.stack([x * 255 // 319, y * 255 // 239, (x // 8 + y // 8) % 2 * 200], axis=-1)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize(("frames", "stride"), [(30, 1), (30, 3), (31, 3), (32, 4), (5, 8)])
def test_stride_detects_every_nth_and_the_last_frame_and_covers_the_rest(
    tmp_path: Path, frames: int, stride: int
) -> None:
    # FixedDetector's face never moves, so the picture must not either: key frames agree
    # only when the face moved with the camera. make_clip's picture scrolls (its gradients
    # move ~4-5 px a frame, measured as the camera moving ~6 px a frame), which makes key
    # frames 4 apart disagree (IoU ~0.48 < 0.5) and, rightly, the frames between detected.
    src = _still_clip(tmp_path / "in.mp4", frames)
    detector = FixedDetector()
    tracker = TrackerConfig(max_gap=8, lead_in=8, lead_out=8)
    result = run_job(src, detector=detector, tracker=tracker, stride=stride)
    record = result.record
    expected = {i for i in range(frames) if i % stride == 0} | {frames - 1}
    detected = {f.index for f in record.frames if any(m.origin is Origin.DETECTED for m in f.masks)}
    assert detected == expected
    assert detector.images == len(expected)
    assert record.detector["stride"] == stride
    # Fail closed: every frame, detected or not, has the face covered.
    for frame in record.frames:
        assert frame.masks, f"frame {frame.index} has no mask"
        assert all(m.origin in (Origin.DETECTED, Origin.INTERPOLATED) for m in frame.masks)
    assert detector.threads == {"veil-detect_0"}  # detection ran in the worker thread


def test_stride_decision_does_not_depend_on_phase_correlate_writing_into_its_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: opencv-python-headless 5.0.0.93's ``phaseCorrelate`` multiplies the window
    into its input arrays in place (when their size is a fast DFT size, as 160x120 is).
    CameraMotion kept the array it had passed as the next frame's ``previous``, so under 5.0
    every frame was correlated twice-windowed against once-windowed: weak, wandering peaks,
    29 of 31 frames of this clip zeroed, and the stride's key frames agreed. 5.1.0.95 leaves
    its inputs alone, measured the clip's scrolling picture (~6 px a frame), and the same
    job detected frames 5, 6, 7, 9, 10, ... too. Both behaviours are injected here."""
    real = cv2.phaseCorrelate

    def leaves_inputs_alone(a: np.ndarray, b: np.ndarray, window: Any = None) -> Any:
        return real(a.copy(), b.copy(), None if window is None else window.copy())

    def writes_window_into_inputs(a: np.ndarray, b: np.ndarray, window: Any = None) -> Any:
        if window is not None:  # what 5.0.0.93 does
            np.multiply(a, window, out=a)
            np.multiply(b, window, out=b)
        return real(a.copy(), b.copy())

    src = make_clip(tmp_path / "in.mp4", frames=32)
    tracker = TrackerConfig(max_gap=8, lead_in=8, lead_out=8)
    runs = []
    for behaviour in (leaves_inputs_alone, writes_window_into_inputs):
        monkeypatch.setattr(cv2, "phaseCorrelate", behaviour)
        detector = FixedDetector()
        record = run_job(src, detector=detector, tracker=tracker, stride=4).record
        runs.append(([f.motion for f in record.frames], detector.images))
    assert runs[0] == runs[1]
    assert any(motion != (0.0, 0.0) for motion in runs[0][0])  # the picture does scroll


def _numbered_clip(path: Path, frames: int) -> Path:
    """Flat grey frames whose level tells their index (read back by :func:`_frame_number`)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            image = np.full((240, 320, 3), 16 + 7 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def _frame_number(image: np.ndarray) -> int:
    return round((float(image.mean()) - 16) / 7)


class MovingDetector(FixedDetector):
    """One 60x80 face, still, except that it moves right 20 px a frame over frames 10-16."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        found = []
        for image in images:
            i = _frame_number(image)
            self.seen.append(i)
            x = 100.0 + 20 * min(max(i - 10, 0), 6)
            found.append(Detections(np.array([[x, 60, x + 60, 140]]), np.array([0.9])))
        self.images += len(images)
        return found


def test_stride_detects_the_frames_between_key_frames_that_disagree(tmp_path: Path) -> None:
    src = _numbered_clip(tmp_path / "in.mp4", frames=30)
    detector = MovingDetector()
    tracker = TrackerConfig(max_gap=8, lead_in=8, lead_out=8)
    record = run_job(src, detector=detector, tracker=tracker, stride=2, batch_size=2).record
    # Key frames: the even ones and the last. Between 10 and 16 the face moves 40 px from
    # one key frame to the next (IoU 0.2 < 0.5): frames 11, 13 and 15 are detected too.
    keys = set(range(0, 30, 2)) | {29}
    assert set(detector.seen) == keys | {11, 13, 15}
    assert len(detector.seen) == detector.images == record.detector["frames_detected"] == 19
    assert record.detector["stride_agree_iou"] == 0.5
    for frame in record.frames:  # and every frame's face is covered by a detected box there
        x = 100.0 + 20 * min(max(frame.index - 10, 0), 6)
        detected = [m.box for m in frame.masks if m.origin is Origin.DETECTED]
        if frame.index in keys | {11, 13, 15}:
            assert detected == [(x, 60.0, x + 60, 140.0)], frame.index
        else:
            assert frame.masks and not detected, frame.index  # interpolated


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ([], [], True),
        ([(0, 0, 60, 80)], [], True),  # vanished: lead-out covers the frames between
        ([(0, 0, 60, 80)], [(6, 4, 66, 84)], True),  # moved a little
        ([(0, 0, 60, 80)], [(40, 0, 100, 80)], False),  # moved 2/3 of its width
        ([(0, 0, 60, 80)], [(300, 0, 360, 80)], True),  # one left, another came: no pair
        # a crowd: each face pairs with itself, not with its neighbour
        ([(0, 0, 60, 80), (62, 0, 122, 80)], [(2, 0, 62, 80), (64, 0, 124, 80)], True),
        ([(0, 0, 60, 80), (62, 0, 122, 80)], [(2, 0, 62, 80), (95, 0, 155, 80)], False),
    ],
)
def test_key_frames_agree_when_every_face_pairs_with_a_close_one(
    a: list[tuple[float, ...]], b: list[tuple[float, ...]], agree: bool
) -> None:
    def detections(boxes: list[tuple[float, ...]]) -> Detections:
        return Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.9, np.float32))

    assert _agree(detections(a), detections(b), (0.0, 0.0)) is agree
    assert _agree(detections(b), detections(a), (0.0, 0.0)) is agree
    # the same faces seen after the camera moved 300 px to the right: they agree once
    # the camera's motion is taken out
    moved = [(x0 + 300, y0, x1 + 300, y1) for x0, y0, x1, y1 in b]
    assert _agree(detections(a), detections(moved), (300.0, 0.0)) is agree


def test_stride_larger_than_the_tracker_can_bridge_is_refused(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=4)
    tracker = TrackerConfig(max_gap=2, lead_in=2, lead_out=2)
    with pytest.raises(ConfigError, match="stride 4"):
        run_job(src, detector=FixedDetector(), tracker=tracker, stride=4)


def test_a_failed_batch_masks_all_its_frames_detected_or_not(tmp_path: Path) -> None:
    # stride 2, batches of 2 detected frames: batch 1 = frames 0-2, batch 2 = frames 3-6.
    src = make_clip(tmp_path / "in.mp4", frames=20)
    run = run_job(
        src,
        detector=FixedDetector(fail_calls=[2]),
        tracker=TrackerConfig(max_gap=4, lead_in=4, lead_out=4),
        batch_size=2,
        stride=2,
    )
    assert sorted(run.record.policy) == [3, 4, 5, 6]
    for index in (3, 4, 5, 6):
        assert any(m.origin is Origin.POLICY for m in run.record.frames[index].masks)


@pytest.mark.parametrize("stride", [1, 3])
def test_anonymize_equals_render_of_its_record_and_repeats_byte_for_byte(
    tmp_path: Path, stride: int
) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=40, audio="aac")
    tracker = TrackerConfig(max_gap=8, lead_in=8, lead_out=8)
    outputs = []
    for k in range(2):
        out = tmp_path / f"a{k}.mp4"
        run_job(
            src,
            detector=FixedDetector(),
            tracker=tracker,
            stride=stride,
            output=out,
            record_path=tmp_path / f"a{k}.veil.json",
        )
        outputs.append(_sha(out))
    assert outputs[0] == outputs[1]
    assert _sha(tmp_path / "a0.veil.json") == _sha(tmp_path / "a1.veil.json")
    rendered = tmp_path / "r.mp4"
    veil.render(src, tmp_path / "a0.veil.json", rendered)
    assert _sha(rendered) == outputs[0]


def test_x264_avx512_mbtree_leaves_no_stale_heap_bytes_in_the_output(tmp_path: Path) -> None:
    """Regression: x264's AVX-512 macroblock-tree code (libx264 core 165, bundled with PyAV
    18) reads memory nothing wrote, so on an AVX-512 CPU the encoded bytes followed whatever
    the heap held: the byte-for-byte test above failed about 1 run in 4, as the detect
    worker's allocations and frees moved with timing (even with x264 single-threaded).
    Each render here starts in a fresh process with its heap filled by a different byte
    (glibc's ``MALLOC_PERTURB_``), which made them differ every time; veil now runs x264
    without AVX-512 (``x264_asm``). Where x264 detects no AVX-512, or malloc is not glibc's,
    this only checks that renders in new processes repeat the job's bytes."""
    src = make_clip(tmp_path / "in.mp4", frames=40, audio="aac")
    record = tmp_path / "in.veil.json"
    tracker = TrackerConfig(max_gap=8, lead_in=8, lead_out=8)
    run_job(
        src,
        detector=FixedDetector(),
        tracker=tracker,
        output=tmp_path / "job.mp4",
        record_path=record,
    )
    digests = {_sha(tmp_path / "job.mp4")}
    render = [sys.executable, "-m", "veil.cli", "render", "-q", str(src), str(record), "-o"]
    for fill in ("77", "165"):
        out = tmp_path / f"render-{fill}.mp4"
        subprocess.run(
            [*render, str(out)],
            env=os.environ | {"MALLOC_PERTURB_": fill},
            check=True,
            timeout=300,
        )
        digests.add(_sha(out))
    assert len(digests) == 1


def test_a_failing_producer_thread_raises_in_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    ahead = _Ahead(items(), depth=2, name="t")
    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in ahead:
            got.append(item)
    ahead.close()
    assert got == [1]


def test_a_producer_whose_start_is_cut_short_reads_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C or SIGTERM inside ``Thread.start`` (the thread launched, ``start`` raised): the
    job never got the ``Ahead`` to close, and its thread went on demuxing the container the
    job then closed (a segfault in tests/test_outputs.py, 2 runs in 30 under load). The
    constructor now stops the thread before it raises."""
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(2_000):
            produced.append(i)
            time.sleep(0.001)
            yield i

    start = threading.Thread.start

    def start_then_interrupt(self: threading.Thread) -> None:
        start(self)
        time.sleep(0.02)  # the thread is reading
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _Ahead(items(), depth=5_000, name="t")
    read = len(produced)
    time.sleep(0.1)
    assert len(produced) == read  # stopped: not one item more


def test_a_pool_starts_every_thread_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """``InOrder`` (detect, render, write) starts its threads in its constructor: a call is
    never queued for a thread whose start an interrupt could cut short."""
    pool: _InOrder[int, int] = _InOrder(workers=3, depth=1, name="t")

    def no_start(self: threading.Thread) -> None:
        raise AssertionError(f"{self.name} started after the constructor")

    monkeypatch.setattr(threading.Thread, "start", no_start)
    for k in range(8):
        pool.submit(k, lambda k: k * k, k)
    got = [(key, future.result()) for key, future in [*pool.ready(), *pool.drain()]]
    pool.close()
    assert got == [(k, k * k) for k in range(8)]


def test_a_pool_whose_start_is_cut_short_leaves_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    start = threading.Thread.start

    def start_then_interrupt(self: threading.Thread) -> None:
        start(self)
        if self.name == "cut_1":
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _InOrder(workers=3, depth=1, name="cut")
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("cut_") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a worker of the abandoned pool runs on"
        time.sleep(0.01)


def test_closing_early_stops_the_producer_thread() -> None:
    produced = []

    def items() -> Iterator[int]:
        for i in range(10_000):
            produced.append(i)
            yield i

    ahead = _Ahead(items(), depth=3, name="t")
    for item in ahead:
        if item == 5:
            break
    ahead.close()
    assert not ahead._thread.is_alive()
    assert len(produced) < 20  # bounded: it ran at most ``depth`` items ahead
