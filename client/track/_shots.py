"""Frames judged against their shot: hard cuts (where one shot ends and the next begins) and
frames blurred against the shot's own sharpness (motion blur, a focus hunt).

A cut is two consecutive frames whose 32x32 grey thumbnails (shrunk from
``grey_thumbnail``'s) differ both in their pixels (mean
absolute difference) and in their brightness histograms. Either alone fires on fast pans
(pixels) or lighting changes (histogram); measured on the public clips and sample videos,
real cuts score >= 0.10 / >= 0.19 and the fastest pan 0.13 / 0.08.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
import numpy.typing as npt

_SIZE = 32
_BINS = 16
#: Thresholds on the mean absolute pixel difference and the histogram distance, both 0..1.
PIXEL_THRESHOLD = 0.08
HISTOGRAM_THRESHOLD = 0.15


class CutDetector:
    """Feed frames' grey thumbnails (``grey_thumbnail``) in order; ``is_cut`` says whether a
    frame starts a new shot."""

    def __init__(self) -> None:
        self._previous: npt.NDArray[np.float32] | None = None

    def is_cut(self, thumbnail: npt.NDArray[np.uint8]) -> bool:
        thumb = cv2.resize(thumbnail, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA)
        current = np.asarray(thumb, np.float32) / 255.0
        previous, self._previous = self._previous, current
        if previous is None:
            return False
        pixels = float(np.abs(current - previous).mean())
        a, _ = np.histogram(previous, _BINS, (0.0, 1.0))
        b, _ = np.histogram(current, _BINS, (0.0, 1.0))
        histogram = float(np.abs(a - b).sum()) / (2 * current.size)
        return pixels >= PIXEL_THRESHOLD and histogram >= HISTOGRAM_THRESHOLD


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
    """Feed each frame's grey thumbnail in order (``grey_thumbnail``); ``blurred`` says
    whether the frame has lost the fine detail its shot had (relative, so a soft but steady
    picture is not flagged)."""

    def __init__(self) -> None:
        self._shot: deque[float] = deque(maxlen=BLUR_HISTORY)

    def blurred(self, thumbnail: npt.NDArray[np.uint8], *, cut: bool = False) -> bool:
        if cut:
            self._shot.clear()
        value = sharpness(thumbnail)
        sharp = float(np.percentile(self._shot, 90)) if len(self._shot) >= BLUR_WARMUP else 0.0
        self._shot.append(value)
        return value < BLUR_SHARE * sharp
