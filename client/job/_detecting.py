"""A detection run's masks: frames in, frames with final masks out (``veil detect`` and
``veil anonymize``: the :class:`~veil.job._source.MaskSource` that finds faces).

Four parts, each in its own module: the scene measures of each frame (``_scene``: cuts,
camera motion, dark and blurred pictures), the detect worker with its adaptive stride
(``_stride``), the thread it runs in, a bounded number of batches ahead (``_threads``), and
the tracking that turns a frame's detections into its final masks (``_tracking``). This
class batches the frames and, when the detector fails on a batch, masks it whole by policy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future
from fractions import Fraction

from veil.core import Detections, Detector, DetectorLost
from veil.media import DecodedFrame
from veil.track import TrackerConfig

from ._scene import Measured, SceneWatch
from ._source import Pair
from ._stride import AdaptiveStride
from ._threads import InOrder
from ._tracking import Tracking

logger = logging.getLogger(__name__)

#: Detection batches allowed in flight ahead of rendering (bounds memory and latency).
_IN_FLIGHT = 2


class DetectedMasks:
    """Frames in, frames with final masks out: scene measures, detector, tracker.

    A batch holds every frame from just after the previous batch up to its ``batch_size``-th
    key frame (``AdaptiveStride``): if the detector fails on it, all of those frames,
    detected or not, are masked whole by policy (``policy``: frame -> why).
    """

    def __init__(
        self,
        detector: Detector,
        tracker: TrackerConfig,
        *,
        batch_size: int,
        stride: int = 1,
        sample_aspect: Fraction = Fraction(1),
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        self.stride = AdaptiveStride(detector, stride, sample_aspect)
        self.scene = SceneWatch()
        self._tracking = Tracking(detector, tracker, sample_aspect, frame_size)
        self._work: InOrder[list[DecodedFrame], list[Detections | None]] = InOrder(
            workers=1, depth=_IN_FLIGHT, name="veil-detect"
        )
        self._batch_size = batch_size
        self._batch: list[DecodedFrame] = []
        self._due = 0  # frames of self._batch due for detection
        self._measured: dict[int, Measured] = {}  # per frame not yet assigned
        self.policy: dict[int, str] = {}

    @property
    def near_misses(self) -> dict[int, tuple[int, float]]:
        """Frames with weak detections of tracks never confirmed (residual risk)."""
        return self._tracking.near_misses

    def push(self, item: DecodedFrame) -> Iterator[Pair]:
        self._tracking.hold(item)
        self._measured[item.index] = self.scene.measure(item)
        self._batch.append(item)
        if self.stride.is_key(item.index):
            self._due += 1
            if self._due >= self._batch_size:
                self._submit(last=False)
        for batch, future in self._work.ready():
            yield from self._resolve(batch, future)

    def flush(self) -> Iterator[Pair]:
        self._submit(last=True)
        for batch, future in self._work.drain():
            yield from self._resolve(batch, future)
        yield from self._tracking.flush()
        self.close()

    def close(self) -> None:
        self._work.close()

    def _submit(self, *, last: bool) -> None:
        if not self._batch:
            return
        batch, self._batch, self._due = self._batch, [], 0
        # The last frame is always detected: no face may enter in a video's final frames
        # unseen (lead-out covers faces leaving, nothing covers faces arriving).
        keys = [
            self.stride.is_key(item.index) or (last and k == len(batch) - 1)
            for k, item in enumerate(batch)
        ]
        cuts = [self._measured[item.index].cut for item in batch]
        offsets = [self._measured[item.index].offset for item in batch]
        frames = [item.frame for item in batch]
        self._work.submit(batch, self.stride.detect, frames, keys, cuts, offsets)

    def _resolve(
        self, batch: list[DecodedFrame], future: Future[list[Detections | None]]
    ) -> Iterator[Pair]:
        try:
            results = future.result()
        except DetectorLost:
            raise  # the job stops and writes nothing (fail closed, no whole-video policy mask)
        except Exception as exc:
            logger.error(
                "detection failed for frames %d-%d: %s", batch[0].index, batch[-1].index, exc
            )
            results = [None] * len(batch)
            for item in batch:
                self.policy[item.index] = f"detector error: {exc}"
        for item, detections in zip(batch, results, strict=True):
            measured = self._measured.pop(item.index)
            whole = item.index in self.policy
            yield from self._tracking.assign(item, detections, measured, whole)
