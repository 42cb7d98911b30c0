"""Dynamic micro-batching of frames from concurrent requests and streams.

Frames from every caller enter one bounded queue. A worker takes the oldest frame and waits
up to ``max_delay_s`` after it arrived for more frames with the same thresholds, then runs up
to ``max_batch`` of them as one inference. A full queue refuses new frames at once
(:class:`Overloaded`); a frame whose deadline passed before its batch ran is answered
:class:`DeadlineExceeded` without being run; a cancelled one is dropped.

A stream reserves queue room for its whole window when it starts (:meth:`Batcher.reserve`):
its frames always fit, so a stream that keeps to its window is never refused a frame. Streams
together reserve at most :data:`STREAM_SHARE` of the queue; the rest is for unreserved frames
(``Detect`` calls, cloud jobs), which are refused, or wait, when it is full.

Batching never changes a result: the detector is deterministic per image, whatever else
shares its batch (``veil.server.engine.LocalDetector``'s promise), so a remote client gets the same
detections as the same model in process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from veil.core import Detections, Detector, DetectorInfo, Image
from veil.server.engine import InferenceBackend, build_detector

from ._metrics import Metrics
from ._status import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable

__all__ = ["Batcher", "BatcherConfig", "DetectorKey", "Reservation", "detector_key"]

logger = logging.getLogger(__name__)

DetectorKey = tuple[float, float, int]
"""``(score_threshold, nms_threshold, max_side)`` of a detector's info: frames batch together
only when these match (a fused model's members may scale by ``max_side``)."""


def detector_key(info: DetectorInfo) -> DetectorKey:
    """The key of the detector ``info`` describes (made by :meth:`Batcher.detector`)."""
    return (info.score_threshold, info.nms_threshold, info.max_side)


STREAM_SHARE = 0.75
"""The share of ``max_queue`` that stream reservations may hold together (a quarter, 64 frames
of the default 256, stays for ``Detect`` calls of up to 64 frames and for cloud jobs)."""

_MAX_DETECTORS = 32
"""Threshold pairs kept at once (least recently used dropped): clients choose thresholds, so
an unbounded cache would let them grow the server's memory without limit."""


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    """``max_batch`` frames per inference at most, and at most ``max_batch_pixels`` pixels (a
    larger frame runs alone): inference memory grows with pixels per batch (centerface on
    CPU: about 1.2 GB of RSS for 8 frames of 1024x576, 2.2 GB for one 4096x2304 frame), so
    clients sending large frames cannot multiply it by ``max_batch``. Wait at most
    ``max_delay_s`` for a batch to fill; at most ``max_queue`` frames waiting; ``workers``
    inferences at a time (1 suits an in-process CPU backend, more keep a remote Triton busy)."""

    max_batch: int = 16
    max_batch_pixels: int = 16 * 640 * 480
    max_delay_s: float = 0.005
    max_queue: int = 256
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch {self.max_batch} must be between 1 and 256")
        if not 0 <= self.max_delay_s <= 1:
            raise ValueError(f"max_delay_s {self.max_delay_s} must be between 0 and 1")
        if self.max_queue < self.max_batch:
            raise ValueError(f"max_queue {self.max_queue} is below max_batch {self.max_batch}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers {self.workers} must be between 1 and 64")
        if self.max_batch_pixels < 1:
            raise ValueError(f"max_batch_pixels {self.max_batch_pixels} must be positive")


@dataclass(eq=False)
class Reservation:
    """Queue room set aside for one stream: ``frames`` queued at a time at most (its window).
    ``queued`` counts its frames in the queue now; ``open`` until :meth:`Batcher.release`."""

    frames: int
    queued: int = 0
    open: bool = True


@dataclass(frozen=True, kw_only=True)
class _Item:
    key: DetectorKey
    image: Image
    display_size: tuple[int, int]
    deadline: float  # time.monotonic()
    queued: float
    future: Future[Detections]
    reservation: Reservation | None = None


class Batcher:
    """Runs one model (a fused one: its members, each on its backend) for every caller; see
    the module docstring."""

    def __init__(
        self,
        *,
        backends: dict[str, InferenceBackend],
        model: str,
        config: BatcherConfig,
        metrics: Metrics | None = None,
    ) -> None:
        self._backends = backends
        self._model = model
        self._config = config
        self._metrics = metrics
        self._labels = ("+".join(sorted({b.name for b in backends.values()})), model)
        self._detectors: dict[DetectorKey, Detector] = {}
        self._queue: deque[_Item] = deque()
        # Queue room accounted: ``_held``, the frames open reservations hold plus the frames
        # still queued of closed ones; ``_unreserved``, the queued frames of no reservation.
        # Their sum never passes ``max_queue``.
        self._held = self._unreserved = 0
        self._cond = threading.Condition()
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"veil-batch-{i}", daemon=True)
            for i in range(config.workers)
        ]
        for worker in self._workers:
            worker.start()

    @property
    def model(self) -> str:
        return self._model

    @property
    def config(self) -> BatcherConfig:
        return self._config

    def detector(
        self, score_threshold: float | None, nms_threshold: float | None, max_side: int
    ) -> Detector:
        """The model with these thresholds (``None``: its defaults), for images scaled to
        ``max_side``, on the shared backends."""
        made = build_detector(
            self._model,
            self._backends,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            max_side=max_side,
            max_batch=self._config.max_batch,
        )
        key = detector_key(made.info)
        with self._cond:
            found = self._detectors.pop(key, None) or made
            self._detectors[key] = found  # most recently used last
            while len(self._detectors) > _MAX_DETECTORS:
                del self._detectors[next(iter(self._detectors))]
            return found

    def submit(
        self,
        key: DetectorKey,
        images: Sequence[Image],
        display_sizes: Sequence[tuple[int, int]],
        *,
        deadline: float,
        reservation: Reservation | None = None,
    ) -> list[Future[Detections]]:
        """Queue frames for detection; one future per frame. ``key`` must come from a
        :meth:`detector` call. All the frames are queued, or none (:class:`Overloaded`): with
        a ``reservation``, when they would pass its frames; without, when the queue's
        unreserved room is full."""
        now = time.monotonic()
        items = [
            _Item(
                key=key,
                image=image,
                display_size=size,
                deadline=deadline,
                queued=now,
                future=Future(),
                reservation=reservation,
            )
            for image, size in zip(images, display_sizes, strict=True)
        ]
        with self._cond:
            if self._closed:
                raise Unavailable("the server is shutting down")
            n = len(items)
            if reservation is not None:
                if not reservation.open or reservation.queued + n > reservation.frames:
                    self._count("overloaded", n)
                    raise Overloaded(
                        f"more than the {reservation.frames} frames reserved for this stream"
                    )
                reservation.queued += n
            else:
                if self._held + self._unreserved + n > self._config.max_queue:
                    self._count("overloaded", n)
                    raise Overloaded(
                        f"detection queue full ({len(self._queue)} of {self._config.max_queue} "
                        f"frames waiting, {self._held} reserved for streams); retry with backoff"
                    )
                self._unreserved += n
            self._queue.extend(items)
            self._gauge()
            self._cond.notify_all()
        return [item.future for item in items]

    def reserve(self, frames: int, *, least: int = 1) -> Reservation:
        """Set aside queue room for a stream's window: ``frames``, or less when less is free
        (but at least ``least``, else :class:`Overloaded`). Give it back with
        :meth:`release` when the stream ends."""
        cap = int(self._config.max_queue * STREAM_SHARE)
        with self._cond:
            free = min(cap - self._held, self._config.max_queue - self._held - self._unreserved)
            granted = min(frames, free)
            if granted < least:
                raise Overloaded(
                    f"no queue room for another stream ({self._held} of the {cap} frames streams "
                    f"may reserve are held by open streams, {self._unreserved} frames of other "
                    "calls wait); retry later or use another replica"
                )
            self._held += granted
            return Reservation(granted)

    def release(self, reservation: Reservation) -> None:
        """End ``reservation``: its room is free again once its queued frames leave."""
        with self._cond:
            if reservation.open:
                reservation.open = False
                self._held -= reservation.frames - reservation.queued

    @property
    def reserved(self) -> int:
        """Queue room held by stream reservations now (see :meth:`reserve`)."""
        with self._cond:
            return self._held

    def close(self, timeout: float | None = None) -> None:
        """Stop taking frames, finish the queued ones, stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._queue))

    def _take(self) -> list[_Item] | None:
        """The next batch, once full or due; ``None`` when closed and drained."""
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                first = self._queue[0]
                due = first.queued + self._config.max_delay_s
                same = sum(1 for item in self._queue if item.key == first.key)
                now = time.monotonic()
                if same >= self._config.max_batch or now >= due or self._closed:
                    break
                self._cond.wait(due - now)
            batch: list[_Item] = []
            rest: deque[_Item] = deque()
            pixels, full = 0, False
            for item in self._queue:
                size = item.image.shape[0] * item.image.shape[1]
                if not full and item.key == first.key and len(batch) < self._config.max_batch:
                    if batch and pixels + size > self._config.max_batch_pixels:
                        full = True  # keep the order: later frames wait for the next batch
                    else:
                        batch.append(item)
                        pixels += size
                        continue
                rest.append(item)
            self._queue = rest
            for item in batch:
                reservation = item.reservation
                if reservation is None:
                    self._unreserved -= 1
                else:
                    reservation.queued -= 1
                    if not reservation.open:
                        self._held -= 1
            self._gauge()
            return batch

    def _count(self, outcome: str, n: int = 1) -> None:
        if self._metrics is not None and n:
            self._metrics.frames.labels(*self._labels, outcome).inc(n)

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            now = time.monotonic()
            live = []
            for item in batch:
                if not item.future.set_running_or_notify_cancel():
                    self._count("cancelled")
                elif item.deadline <= now:
                    self._count("expired")
                    item.future.set_exception(
                        DeadlineExceeded("the deadline passed while the frame was queued")
                    )
                else:
                    live.append(item)
            if live:
                self._run(live)

    def _run(self, batch: list[_Item]) -> None:
        key = batch[0].key
        with self._cond:
            detector = self._detectors.get(key)
        if detector is None:  # dropped from the cache while its frames waited
            detector = self.detector(*key)
        start = time.perf_counter()
        try:
            found = detector.detect(
                [item.image for item in batch], [item.display_size for item in batch]
            )
        except Exception as exc:
            self._count("failed", len(batch))
            error: Exception
            if isinstance(exc, ConnectionError):  # e.g. Triton down: clients retry UNAVAILABLE
                logger.error("inference on %d frames failed: %s", len(batch), exc)
                error = Unavailable("the inference backend is unreachable; retry shortly")
            else:
                logger.error("inference on %d frames failed", len(batch), exc_info=exc)
                error = InferenceFailed(f"inference failed: {exc}")
            for item in batch:
                item.future.set_exception(error)
            return
        end = time.perf_counter()
        if self._metrics is not None:
            self._metrics.batch_size.labels(*self._labels).observe(len(batch))
            self._metrics.inference_seconds.labels(*self._labels).observe(end - start)
        self._count("detected", len(batch))
        done = time.monotonic()
        for item, detections in zip(batch, found, strict=True):
            if self._metrics is not None:
                self._metrics.frame_latency.labels(*self._labels).observe(done - item.queued)
            item.future.set_result(detections)
