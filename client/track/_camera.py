"""How far the camera moved between two frames: the translation of the whole picture, measured
by phase correlation of grey thumbnails. Boxes carried to frames without a detection move with
it (``_motion``), so in a whip pan, where motion blur blinds the detector, the masks stay on
the faces instead of staying where the faces were.
"""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Interpolation, VideoReformatter

#: Width of the grey thumbnails camera motion is measured on (height keeps the aspect).
_MOTION_WIDTH = 160
#: Smallest phase-correlation peak (0..1) for a measured motion to be used: below it the
#: picture has no single dominant translation (independent motions, no texture).
MOTION_MIN_RESPONSE = 0.3
#: Motions shorter than this (stored pixels) are noise around a still camera: reported as 0.
MOTION_MIN_PIXELS = 1.0


def grey_thumbnail(frame: av.VideoFrame, scaler: VideoReformatter) -> npt.NDArray[np.uint8]:
    """The frame's grey thumbnail, :data:`_MOTION_WIDTH` px wide (its aspect kept): made once
    a frame, what camera motion, cut detection and the dark and blur watches read.

    ``scaler``: the caller's own, kept from frame to frame (one thread's): it keeps its
    swscale context, which ``frame.reformat`` builds anew for every frame (0.3 against
    0.6-0.7 ms CPU a 720p frame, ``benchmarks/bench_stages.py``)."""
    width = min(_MOTION_WIDTH, frame.width)
    height = max(8, round(frame.height * width / frame.width))
    thumb = scaler.reformat(frame, width, height, "gray", interpolation=Interpolation.AREA)
    return np.asarray(thumb.to_ndarray(), np.uint8)


class CameraMotion:
    """Feed frames' grey thumbnails in order; ``measure`` gives how far the picture moved
    since the frame before (dx, dy in the frame's stored pixels), by phase correlation.

    Measured on the public GT clips and on generated whip pans (40-86 px a frame, motion
    blurred) to within a few pixels of the camera's true translation, where the detector
    finds nothing. Zero for the first frame, after a cut, and whenever the correlation peak
    is weak or the motion is sub-pixel noise, so a still camera's masks never drift.
    """

    def __init__(self) -> None:
        self._previous: npt.NDArray[np.float32] | None = None
        self._window: npt.NDArray[np.float32] | None = None

    def measure(
        self, thumbnail: npt.NDArray[np.uint8], size: tuple[int, int], *, cut: bool = False
    ) -> tuple[float, float]:
        """The motion since the frame before; ``thumbnail``: :func:`grey_thumbnail` of a
        frame of ``size`` (stored width, height)."""
        height, width = thumbnail.shape
        current = np.asarray(thumbnail, np.float32)
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
        dx, dy = dx * size[0] / width, dy * size[1] / height
        if response < MOTION_MIN_RESPONSE or math.hypot(dx, dy) < MOTION_MIN_PIXELS:
            return (0.0, 0.0)
        # rounded as the record stores it: a record replays to the same masks
        return (round(dx, 1), round(dy, 1))
