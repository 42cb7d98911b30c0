"""What a detection run measures of every frame, in frame order, before any detection: where
a shot starts, how the camera moved, and the pictures where faces are likelier missed (dark
or flat, or blurred against their shot). The tracker uses the first two; the residual risk
lists the others."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from av.video.reformatter import VideoReformatter

from veil.core import is_dark
from veil.media import DecodedFrame
from veil.track import BlurWatch, CameraMotion, CutDetector, grey_thumbnail

Point = tuple[float, float]


@dataclass(frozen=True)
class Measured:
    """One frame's measures: it starts a new shot (``cut``), the camera's translation since
    the frame before (``motion``), and the camera's position (``offset``: the motions summed
    since the first frame), in stored pixels."""

    cut: bool
    motion: Point
    offset: Point


class SceneWatch:
    """Measures each frame as it is decoded (:meth:`measure`, in frame order) and keeps the
    runs of dark or flat frames and of blurred frames ([first, last] per run)."""

    def __init__(self) -> None:
        self._shots = CutDetector()
        self._camera = CameraMotion()
        self._blur = BlurWatch()
        self._scaler = VideoReformatter()  # the measuring thread's
        self._offset = (0.0, 0.0)
        self._dark: list[list[int]] = []
        self._blurred: list[list[int]] = []

    def measure(self, item: DecodedFrame) -> Measured:
        thumbnail = grey_thumbnail(item.frame, self._scaler)
        cut = self._shots.is_cut(thumbnail)
        motion = self._camera.measure(thumbnail, (item.frame.width, item.frame.height), cut=cut)
        for hard, runs in (
            (is_dark(thumbnail), self._dark),
            (self._blur.blurred(thumbnail, cut=cut), self._blurred),
        ):
            if not hard:
                continue
            if runs and runs[-1][1] == item.index - 1:
                runs[-1][1] = item.index
            else:
                runs.append([item.index, item.index])
        self._offset = (self._offset[0] + motion[0], self._offset[1] + motion[1])
        return Measured(cut, motion, self._offset)

    def dark_frames(self) -> Iterator[int]:
        """The dark or flat frames' indices, in increasing order (residual risk)."""
        for first, last in self._dark:
            yield from range(first, last + 1)

    def blurred_frames(self) -> Iterator[int]:
        """The frames blurred against their shot, in increasing order (residual risk)."""
        for first, last in self._blurred:
            yield from range(first, last + 1)
