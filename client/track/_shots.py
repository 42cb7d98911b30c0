"""Hard cuts (where one shot ends and the next begins), camera motion between frames, and
frames blurred against their shot (motion blur, a focus hunt).

A cut is two consecutive frames whose 32x32 grey thumbnails differ both in their pixels (mean
absolute difference) and in their brightness histograms. Either alone fires on fast pans
(pixels) or lighting changes (histogram); measured on the public clips and sample videos,
real cuts score >= 0.10 / >= 0.19 and the fastest pan 0.13 / 0.08.
"""

from __future__ import annotations

import math
from collections import deque

import av
import cv2
import numpy as np
import numpy.typing as npt

_SIZE = 32
_BINS = 16
#: Thresholds on the mean absolute pixel difference and the histogram distance, both 0..1.
PIXEL_THRESHOLD = 0.08
HISTOGRAM_THRESHOLD = 0.15


class CutDetector:
    """Feed frames in order; ``is_cut`` says whether a frame starts a new shot."""

    def __init__(self) -> None:
        self._previous: npt.NDArray[np.float32] | None = None

    def is_cut(self, frame: av.VideoFrame) -> bool:
        thumb = frame.reformat(_SIZE, _SIZE, "gray", interpolation="AREA").to_ndarray()
        current = np.asarray(thumb, np.float32) / 255.0
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        pixels = float(np.abs(current - previous).mean())
        a, _ = np.histogram(previous, _BINS, (0.0, 1.0))
        b, _ = np.histogram(current, _BINS, (0.0, 1.0))
        histogram = float(np.abs(a - b).sum()) / (2 * current.size)
        return pixels >= PIXEL_THRESHOLD and histogram >= HISTOGRAM_THRESHOLD


#: Width of the grey thumbnails camera motion is measured on (height keeps the aspect).
_MOTION_WIDTH = 160
#: Smallest phase-correlation peak (0..1) for a measured motion to be used: below it the
#: picture has no single dominant translation (independent motions, no texture).
MOTION_MIN_RESPONSE = 0.3
#: Motions shorter than this (stored pixels) are noise around a still camera: reported as 0.
MOTION_MIN_PIXELS = 1.0


class CameraMotion:
    """Feed frames in order; ``measure`` gives how far the picture moved since the frame
    before (dx, dy in the frame's stored pixels), by phase correlation of grey thumbnails.

    Measured on the public GT clips and on generated whip pans (40-86 px a frame, motion
    blurred) to within a few pixels of the camera's true translation, where the detector
    finds nothing. Zero for the first frame, after a cut, and whenever the correlation peak
    is weak or the motion is sub-pixel noise, so a still camera's masks never drift.
    """

    def __init__(self) -> None:
        self._previous: npt.NDArray[np.float32] | None = None
        self._window: npt.NDArray[np.float32] | None = None
        #: The grey thumbnail of the frame measured last (what else needs the frame's
        #: levels reads them here: the residual risk's dark frames).
        self.thumbnail: npt.NDArray[np.uint8] = np.zeros((1, 1), np.uint8)

    def measure(self, frame: av.VideoFrame, *, cut: bool = False) -> tuple[float, float]:
        width = min(_MOTION_WIDTH, frame.width)
        height = max(8, round(frame.height * width / frame.width))
        thumb = frame.reformat(width, height, "gray", interpolation="AREA").to_ndarray()
        self.thumbnail = np.asarray(thumb, np.uint8)
        current = np.asarray(thumb, np.float32)
        previous, self._previous = self._previous, current
        if previous is None or cut or previous.shape != current.shape:
            return (0.0, 0.0)
        if self._window is None or self._window.shape != current.shape:
            self._window = np.asarray(cv2.createHanningWindow((width, height), cv2.CV_32F))
        # OpenCV gets windowed copies, never ``current`` (kept as the next ``previous``):
        # opencv-python-headless 5.0.0.93 writes the window into its input arrays when
        # their size is already a fast DFT size (160x90, 160x120), so each frame was then
        # correlated twice-windowed against once-windowed: weak, wandering peaks that
        # 5.1.0.95 (which leaves its inputs alone) no longer gives. Same result as passing
        # ``window``, bit for bit: OpenCV multiplies it in elementwise too.
        (dx, dy), response = cv2.phaseCorrelate(previous * self._window, current * self._window)
        dx, dy = dx * frame.width / width, dy * frame.height / height
        if response < MOTION_MIN_RESPONSE or math.hypot(dx, dy) < MOTION_MIN_PIXELS:
            return (0.0, 0.0)
        # rounded as the record stores it: a record replays to the same masks
        return (round(dx, 1), round(dy, 1))


#: A frame is blurred when its sharpness is under this share of its shot's sharp frames'
#: (the 90th percentile of the last ``BLUR_HISTORY`` frames of the shot, after
#: ``BLUR_WARMUP``). Measured on the generated fast pan: sharp frames 2,000-5,000, the
#: motion-blurred pan 280-1,300.
BLUR_SHARE = 0.35
BLUR_HISTORY = 100
BLUR_WARMUP = 2


def sharpness(thumbnail: npt.NDArray[np.uint8]) -> float:
    """The variance of a grey thumbnail's Laplacian: its fine detail (blur takes it away)."""
    return float(cv2.Laplacian(np.asarray(thumbnail, np.float32), cv2.CV_32F).var())


class BlurWatch:
    """Feed each frame's grey thumbnail in order; ``blurred`` says whether the frame has lost
    the fine detail its shot had (relative, so a soft but steady picture is not flagged)."""

    def __init__(self) -> None:
        self._shot: deque[float] = deque(maxlen=BLUR_HISTORY)

    def blurred(self, thumbnail: npt.NDArray[np.uint8], *, cut: bool = False) -> bool:
        if cut:
            self._shot.clear()
        value = sharpness(thumbnail)
        sharp = float(np.percentile(self._shot, 90)) if len(self._shot) >= BLUR_WARMUP else 0.0
        self._shot.append(value)
        return value < BLUR_SHARE * sharp
