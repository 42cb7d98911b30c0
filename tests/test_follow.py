"""Following a lost face by the texture in its box (``veil.track._follow``, ``follow_span``): the
optical-flow step on pictures made here, and the job on a clip made here whose detector goes
blind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from veil.core import Origin, iou
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo
from veil.job import detect_job as run_job
from veil.job._replay import final_frames
from veil.track._config import TrackerConfig
from veil.track._follow import follow, luma

SIZE = (320, 240)
FACE = (60, 80)  # width, height


def _texture(seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.random((size[1], size[0])) * 255
    return cv2.GaussianBlur(image, (0, 0), 2).astype(np.float32)


BACKGROUND = _texture(1, SIZE) * 0.5 + 60
FACE_TEXTURE = (_texture(2, FACE) - 128) * 3 + 128


def _face_box(i: int) -> tuple[float, float, float, float]:
    """Where the face is in frame ``i``: moving right 3 px and down 1 px a frame."""
    x, y = 40 + 3 * i, 60 + i
    return (x, y, x + FACE[0], y + FACE[1])


def _picture(i: int, exposure: float = 1.0, noise: float = 0.0) -> np.ndarray:
    image = BACKGROUND.copy()
    x0, y0, x1, y1 = map(int, _face_box(i))
    image[y0:y1, x0:x1] = FACE_TEXTURE
    image = image * exposure + np.random.default_rng(100 + i).normal(0, noise, image.shape)
    image[:8, :8] = 16 + 4 * i  # the frame's number, for the scripted detector
    return np.clip(image, 0, 255).astype(np.uint8)


def test_follow_finds_a_moving_textured_face() -> None:
    box = _face_box(0)
    moved = follow(_picture(0), _picture(1), box)
    assert moved is not None and iou(moved, _face_box(1)) > 0.9
    # the expected motion is only where the search starts
    assert iou(follow(_picture(0), _picture(1), box, (8.0, -5.0)) or box, _face_box(1)) > 0.9
    # three frames on, a 9 px step
    assert iou(follow(_picture(0), _picture(3), box) or box, _face_box(3)) > 0.9


def test_follow_in_the_dark() -> None:
    """At an eighth of the light with sensor noise (the window is stretched first)."""
    dark = [_picture(i, exposure=0.125, noise=2.0) for i in (0, 1)]
    moved = follow(dark[0], dark[1], _face_box(0))
    assert moved is not None and iou(moved, _face_box(1)) > 0.8


def test_follow_scales_with_the_face() -> None:
    image = np.full((240, 320), 90, np.uint8)
    near = image.copy()
    image[80:160, 130:190] = np.clip(FACE_TEXTURE, 0, 255).astype(np.uint8)
    bigger = cv2.resize(np.clip(FACE_TEXTURE, 0, 255).astype(np.uint8), (66, 88))
    near[76:164, 127:193] = bigger
    moved = follow(image, near, (130, 80, 190, 160))
    assert moved is not None
    width = moved[2] - moved[0]
    assert 63 < width < 69 and iou(moved, (127, 76, 193, 164)) > 0.85


def test_follow_gives_no_answer_without_evidence() -> None:
    flat = np.full((240, 320), 50, np.uint8)
    assert follow(flat, flat, (100, 60, 160, 140)) is None  # nothing to follow
    small = (100.0, 60.0, 108.0, 68.0)
    assert follow(_picture(0), _picture(1), small) is None  # too small to hold texture
    # the face's four quarters move four ways: no motion two thirds of its texture share
    face = np.clip(FACE_TEXTURE, 0, 255).astype(np.uint8)
    before = np.full((240, 320), 90, np.uint8)
    after = before.copy()
    before[80:160, 130:190] = face
    for (dy, dx), (ry, rx) in zip(
        [(-10, -10), (-10, 10), (10, -10), (10, 10)],
        [(0, 0), (0, 30), (40, 0), (40, 30)],
        strict=True,
    ):
        after[80 + ry + dy : 120 + ry + dy, 130 + rx + dx : 160 + rx + dx] = face[
            ry : ry + 40, rx : rx + 30
        ]
    assert follow(before, after, (130, 80, 190, 160)) is None
    # the face gone (replaced by other texture): the backward check fails
    other = _picture(1)
    x0, y0, x1, y1 = map(int, _face_box(1))
    other[y0:y1, x0:x1] = np.clip(_texture(7, FACE), 0, 255).astype(np.uint8)
    assert follow(_picture(0), other, _face_box(0)) is None


def test_luma_reads_the_luma_plane_in_place_and_converts_other_formats() -> None:
    rgb = np.stack([_picture(0)] * 3, axis=-1)
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    plane = luma(yuv)
    assert plane.shape == (240, 320)
    np.testing.assert_array_equal(plane, yuv.to_ndarray()[:240])
    assert np.shares_memory(plane, np.frombuffer(yuv.planes[0], np.uint8))
    converted = luma(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
    assert converted.shape == (240, 320)
    # the same picture (full range where the plane is video range: following stretches both)
    assert np.corrcoef(converted.ravel(), plane.ravel())[0, 1] > 0.99


def _clip(path: Path, frames: int, **light: float) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        for i in range(frames):
            gray = _picture(i, **light)
            frame = av.VideoFrame.from_ndarray(np.stack([gray] * 3, axis=-1), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def _info(model: str, max_side: int) -> DetectorInfo:
    return DetectorInfo(
        model=model,
        weights_sha256="0" * 64,
        backend="test",
        execution_provider="cpu",
        max_side=max_side,
        score_threshold=0.5,
        nms_threshold=0.4,
    )


class BlindedDetector:
    """Finds the face in frames from ``sees_from`` and before ``blind_from``, nothing in the
    others (a head turned away, the lights dimmed: the face is there, the detector lost it)."""

    def __init__(self, blind_from: int, sees_from: int = 0) -> None:
        self.info = _info("blinded", max_side=320)
        self._blind_from = blind_from
        self._sees_from = sees_from

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        found = []
        for image in images:
            i = round((float(image[:8, :8].mean()) - 16) / 4)
            boxes = [_face_box(i)] if self._sees_from <= i < self._blind_from else []
            found.append(
                Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9))
            )
        return found


@pytest.mark.parametrize("light", [{}, {"exposure": 0.15, "noise": 2.0}], ids=["lit", "dim"])
def test_a_job_follows_the_face_its_detector_lost(tmp_path: Path, light: dict[str, float]) -> None:
    src = _clip(tmp_path / "in.mp4", 40, **light)
    tracker = TrackerConfig(max_gap=4, lead_in=0, lead_out=2, follow_span=25)
    job = run_job(src, detector=BlindedDetector(10), tracker=tracker)
    record = job.record
    assert record.tracker.follow_span == 25
    # lost at 10 (the lead-out's: a one-frame miss is the smoother's to bridge), followed
    # from 11 up to 25 frames past its last detection in frame 9
    for frame in record.frames[11:35]:
        followed = [m for m in frame.masks if m.origin is Origin.FOLLOWED]
        assert len(followed) == 1 and followed[0].track == 1, frame.index
        assert iou(followed[0].box, _face_box(frame.index)) > 0.75, frame.index
        assert followed[0].score == pytest.approx(0.9)
    # past the span: only the lead-out, then nothing
    assert all(not f.masks for f in record.frames[37:])
    # the frames where the detector lost it are a bridged gap: from 10 (between its last
    # detection and its first followed box, bridged) through those it was followed in
    gaps = record.residual_risk["bridged_gaps"]
    assert gaps["count"] == 1 and gaps["list"][0] == {"track": 1, "first": 10, "last": 34}
    # ``veil render`` draws what the job drew: followed masks are kept as listed
    assert [f.masks for f in final_frames(record)] == [f.masks for f in record.frames]

    # without following, the face is masked only for the lead-out after it was lost
    unfollowed = run_job(
        src, detector=BlindedDetector(10), tracker=TrackerConfig(max_gap=4, lead_in=0, lead_out=2)
    ).record
    assert [bool(f.masks) for f in unfollowed.frames] == [True] * 12 + [False] * 28


def test_a_job_follows_a_face_back_from_its_first_detection(tmp_path: Path) -> None:
    """Offline, a track is followed back from where the detector first found it, through
    the ``lead_in`` frames held for it: the masks there are where the face was, where the
    lead-in only repeats the first detection's box."""
    src = _clip(tmp_path / "in.mp4", 40)
    tracker = TrackerConfig(max_gap=4, lead_in=10, lead_out=2, follow_span=25)
    record = run_job(src, detector=BlindedDetector(40, sees_from=25), tracker=tracker).record
    for frame in record.frames[15:25]:
        followed = [m for m in frame.masks if m.origin is Origin.FOLLOWED]
        assert len(followed) == 1 and followed[0].track == 1, frame.index
        assert iou(followed[0].box, _face_box(frame.index)) > 0.75, frame.index
    assert not any(m.origin is Origin.FOLLOWED for f in record.frames[:15] for m in f.masks)
    lead_in = next(m for m in record.frames[15].masks if m.origin is Origin.EXTRAPOLATED)
    assert iou(lead_in.box, _face_box(15)) < 0.6  # the face moved 32 px since
    assert [f.masks for f in final_frames(record)] == [f.masks for f in record.frames]


def _red_face_box(i: int) -> tuple[float, float, float, float]:
    """A face 64x80 px in frames 0-9 that then steps back to 28x36 px, drifting right."""
    w, h = (64, 80) if i < 10 else (28, 36)
    x, y = 60 + 4 * i, 80
    return (x, y, x + w, y + h)


def _red_face_clip(path: Path, frames: int) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        for i in range(frames):
            gray = np.clip(BACKGROUND, 0, 255).astype(np.uint8)
            image = np.stack([gray] * 3, axis=-1)
            x0, y0, x1, y1 = map(int, _red_face_box(i))
            image[y0:y1, x0:x1] = (220, 30, 30)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


class SmallFaceBlindDetector:
    """Finds the red face in whatever picture it is given, in the display pixels asked for,
    only where the picture shows it at least 24 px tall: a model that loses small faces,
    given frames shrunk to 160 px."""

    def __init__(self) -> None:
        self.info = _info("small-face-blind", max_side=160)
        self.pictures: list[tuple[int, int]] = []

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        found = []
        for image, (width, height) in zip(images, sizes, strict=True):
            self.pictures.append(image.shape[:2])
            red = (image[..., 0] > 150) & (image[..., 1] < 100)
            ys, xs = np.nonzero(red)
            boxes = []
            if len(ys) and ys.max() - ys.min() + 1 >= 24:
                sx, sy = width / image.shape[1], height / image.shape[0]
                boxes = [(xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)]
            found.append(
                Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9))
            )
        return found


def test_a_lost_small_face_is_found_again_in_a_closer_look(tmp_path: Path) -> None:
    """The full frame reaches the model at half size, where the face, once it steps back,
    is too small to find; a second look at the window around its track, enlarged, finds it,
    and the track goes on with detections."""
    src = _red_face_clip(tmp_path / "in.mp4", 30)
    tracker = TrackerConfig(max_gap=4, lead_in=0, lead_out=2, recheck=4)
    detector = SmallFaceBlindDetector()
    record = run_job(src, detector=detector, tracker=tracker).record
    assert record.tracker.recheck == 4
    for frame in record.frames:
        (mask,) = [m for m in frame.masks if m.origin is Origin.DETECTED]
        assert mask.track == 1 and iou(mask.box, _red_face_box(frame.index)) > 0.8
    # frames at 160 px, one a frame; then windows 3 faces wide, the face enlarged towards
    # 64 px within the model's 160
    assert detector.pictures.count((120, 160)) == 30
    windows = [p for p in detector.pictures if p != (120, 160)]
    assert len(windows) == 20 and all(max(p) == 160 and min(p) >= 150 for p in windows)
    assert [f.masks for f in final_frames(record)] == [f.masks for f in record.frames]

    blind = run_job(src, detector=SmallFaceBlindDetector(), tracker=replace(tracker, recheck=0))
    assert [bool(f.masks) for f in blind.record.frames] == [True] * 12 + [False] * 18
