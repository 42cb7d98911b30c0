"""Hard cuts: where one shot ends and the next begins.

A cut is two consecutive frames whose 32x32 grey thumbnails differ both in their pixels (mean
absolute difference) and in their brightness histograms. Either alone fires on fast pans
(pixels) or lighting changes (histogram); measured on the public clips and sample videos,
real cuts score >= 0.10 / >= 0.19 and the fastest pan 0.13 / 0.08.
"""

from __future__ import annotations

import av
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
