"""Stand-in detectors for the ``veil live`` tests: ``_Fixed`` finds one fixed box in every
frame, instantly; ``_Dying`` wraps a detector and, from a given time on, raises or hangs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from veil import Detections, DetectorError
from veil.core._detector import DetectorInfo


class _Fixed:
    """A detector that finds one fixed box in every frame, instantly."""

    def __init__(self, box: tuple[float, float, float, float] = (10, 10, 60, 70)) -> None:
        self.box = box

    @property
    def info(self) -> DetectorInfo:
        return DetectorInfo(
            model="fixed",
            weights_sha256="0" * 64,
            backend="test",
            execution_provider="none",
            max_side=320,
            score_threshold=0.5,
            nms_threshold=0.3,
        )

    def detect(self, images: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        return [
            Detections(np.array([self.box], np.float32), np.array([0.9], np.float32))
            for _ in images
        ]

    def close(self) -> None:
        pass


class _Dying:
    """Wraps a detector; from ``after_s`` seconds after its first call it raises or hangs."""

    def __init__(self, inner: Any, after_s: float, how: str) -> None:
        self._inner, self._after, self._how = inner, after_s, how
        self._t0: float | None = None
        self.died_at: float | None = None
        self._never = threading.Event()

    @property
    def info(self) -> DetectorInfo:
        return self._inner.info  # type: ignore[no-any-return]

    def detect(self, images: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        now = time.monotonic()
        self._t0 = self._t0 or now
        if now - self._t0 >= self._after:
            self.died_at = self.died_at or now
            if self._how == "hang":
                self._never.wait(3600)
            raise DetectorError("the detector was killed by the test")
        return self._inner.detect(images, sizes)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._never.set()
