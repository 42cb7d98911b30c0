"""The seam between the pipeline and whatever finds faces (in process, Triton, remote gRPC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ._detections import Detections

Image = npt.NDArray[np.uint8]
"""An RGB uint8 image, shape (H, W, 3)."""


@dataclass(frozen=True, kw_only=True)
class DetectorInfo:
    """What the detection record says about the detector (its identity and settings)."""

    model: str
    weights_sha256: str
    backend: str
    execution_provider: str
    max_side: int
    score_threshold: float
    nms_threshold: float
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "backend": self.backend,
            "execution_provider": self.execution_provider,
            "max_side": self.max_side,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "options": dict(self.options),
        }


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size a ``width`` x ``height`` frame is scaled to before detection.

    Keeps the aspect ratio, never upscales, and makes the longer side at most ``max_side``.
    Both sides are at least 1 and even (swscale and JPEG like even sizes).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} is not positive")
    scale = min(1.0, max_side / max(width, height))
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


class Detector(Protocol):
    """Finds faces in frames.

    ``detect`` takes RGB images already scaled by the caller to ``fit_size(display,
    info.max_side)`` and the display size of each original frame; it returns one
    ``Detections`` per image with boxes in display pixels of the original frame.
    """

    @property
    def info(self) -> DetectorInfo: ...

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]: ...

    def close(self) -> None: ...
