"""The detection worker thread: one frame at a time, in process or through a remote detector,
each answer (or error) put in the engine's inbox."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter

from veil.core import Detector, DetectorError, Image, display_size, fit_size

from ._inbox import Inbox, Result

__all__ = ["Worker"]


class Worker(threading.Thread):
    """Runs the detector on one frame at a time. A daemon: a hung detector cannot keep the
    process alive; the engine notices the silence and masks by policy."""

    def __init__(
        self, detector: Detector, inbox: Inbox, sample_aspect: Fraction = Fraction(1)
    ) -> None:
        super().__init__(name="veil-live-detect", daemon=True)
        self._detector = detector
        self._inbox = inbox
        self._sample_aspect = sample_aspect
        self._jobs: queue.Queue[tuple[int, av.VideoFrame] | None] = queue.Queue(maxsize=1)
        self._max_side = detector.info.max_side
        self._scaler = VideoReformatter()

    def submit(self, index: int, frame: av.VideoFrame) -> None:
        self._jobs.put_nowait((index, frame))

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):  # busy: it stops after the job (or never: hung)
            self._jobs.put_nowait(None)

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            index, frame = job
            started = time.perf_counter()
            try:
                # detected as displayed (non-square pixels made square), masked as stored
                display = display_size(frame.width, frame.height, self._sample_aspect)
                w, h = fit_size(*display, self._max_side)
                # its own scaler: the frame's cached one is the engine's (render_frame), and
                # two threads in one SwsContext crash the process
                rgb = self._scaler.reformat(frame, w, h, "rgb24", interpolation="AREA")
                image: Image = rgb.to_ndarray()  # type: ignore[assignment]
                results = self._detector.detect([image], [display])
                if len(results) != 1:
                    raise DetectorError(f"the detector returned {len(results)} results for 1")
                found = results[0]
                if display != (frame.width, frame.height):
                    found = found.scaled(frame.width / display[0], frame.height / display[1])
                result = Result(index, found, None, time.perf_counter() - started)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                result = Result(index, None, error, time.perf_counter() - started)
            self._inbox.put_result(result)
