"""The seam between the pipeline and whatever finds faces (in process, Triton, remote gRPC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from ._detections import Detections, merge
from ._errors import DetectorError

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
    #: How frames reached a remote detector (hybrid/cloud mode), e.g. ``{"mode": "hybrid",
    #: "encoding": "png", "lossless": true}``; ``None`` in process. The only field of the
    #: detector block that differs between modes for the same model and settings.
    transport: dict[str, Any] | None = None
    #: The licence of the weights (the manifest's, e.g. ``"MIT"``; SCRFD's is for
    #: non-commercial research only); "" when unknown, and then left out of the record.
    license: str = ""

    @property
    def members(self) -> tuple[str, ...]:
        """A fused detector's members (``"yunet"``, ``"yunet@640"``), in the order of
        ``Detections.sources``' bits."""
        return tuple(str(m["name"]) for m in self.options.get("members", ()))

    def to_json(self) -> dict[str, Any]:
        document = {
            "model": self.model,
            "weights_sha256": self.weights_sha256,
            "backend": self.backend,
            "execution_provider": self.execution_provider,
            "max_side": self.max_side,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "options": dict(self.options),
        }
        if self.license:
            document["license"] = self.license
        if self.transport is not None:
            document["transport"] = dict(self.transport)
        return document


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


#: Longest side of the picture :func:`display_size` describes (the server takes up to 65536).
_MAX_DISPLAY_SIDE = 16384


def display_size(width: int, height: int, sample_aspect: Fraction) -> tuple[int, int]:
    """The size a stored ``width`` x ``height`` frame shows at, its pixels made square.

    ``sample_aspect`` is the frame's sample (pixel) aspect ratio, SAR: a player shows each
    stored pixel ``sample_aspect`` times as wide as tall. Faces are detected in this geometry
    (a face squeezed 3:1 in storage is no face to a detector). One side is stretched, never
    the other shrunk, so no stored detail is lost before :func:`fit_size`; a side past
    16384 pixels (an absurd SAR) scales both down, the shape kept.
    """
    if sample_aspect <= 0 or sample_aspect == 1:
        return width, height
    w, h = (width * sample_aspect, Fraction(height))
    if sample_aspect < 1:
        w, h = Fraction(width), height / sample_aspect
    longest = max(w, h)
    if longest > _MAX_DISPLAY_SIDE:
        w, h = w * _MAX_DISPLAY_SIDE / longest, h * _MAX_DISPLAY_SIDE / longest
    return max(1, round(w)), max(1, round(h))


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


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns that bring a decoded frame upright, as displayed.

    ``rotation`` is the display matrix's angle as PyAV's ``VideoFrame.rotation`` gives it.
    """
    return round(rotation / 90) % 4


def unrotate(detections: Detections, turns: int, size: tuple[int, int]) -> Detections:
    """Map detections found on a frame turned ``turns`` quarter turns counter-clockwise back
    to pixels of the decoded frame of ``size`` (width, height)."""
    if turns == 0 or len(detections) == 0:
        return detections
    w, h = size

    def back(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if turns == 1:
            return w - y, x
        if turns == 2:
            return w - x, h - y
        return y, h - x

    b = detections.boxes
    xa, ya = back(b[:, 0], b[:, 1])
    xb, yb = back(b[:, 2], b[:, 3])
    boxes = np.stack(
        [np.minimum(xa, xb), np.minimum(ya, yb), np.maximum(xa, xb), np.maximum(ya, yb)], axis=1
    )
    landmarks = None
    if detections.landmarks is not None:
        lx, ly = back(detections.landmarks[..., 0], detections.landmarks[..., 1])
        landmarks = np.stack([lx, ly], axis=-1)
    return Detections(boxes, detections.scores, landmarks, detections.sources)


class Upright:
    """A detector that sees frames upright, as a player displays them.

    Phone videos are often stored sideways with a rotation in their metadata; a face detector
    misses sideways faces. Images are turned upright before detection and the boxes turned
    back, so records and masks stay in pixels of the decoded frame (the frame masks are
    drawn on; the output keeps the rotation metadata).
    """

    def __init__(self, inner: Detector, rotation: float) -> None:
        self._inner = inner
        self._turns = _quarter_turns(rotation)

    @property
    def info(self) -> DetectorInfo:
        return self._inner.info

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        if self._turns == 0:
            return self._inner.detect(images, display_sizes)
        turned = [np.ascontiguousarray(np.rot90(image, self._turns)) for image in images]
        sizes = [(h, w) if self._turns % 2 else (w, h) for w, h in display_sizes]
        results = self._inner.detect(turned, sizes)
        return [unrotate(d, self._turns, s) for d, s in zip(results, display_sizes, strict=True)]

    def close(self) -> None:
        self._inner.close()


#: A frame whose luma spans fewer grey levels than this (its 1st to 99.5th percentile) is dark
#: or flat: the low-light pass detects on it a second time, its range stretched to 0..255.
#: Chosen on the generated clips (docs/quality.md, "Dark frames"): their dark frames span 46-64
#: levels, every normally lit one 170 or more.
LOW_LIGHT_RANGE = 128
#: The stretch never multiplies by more than this (a black frame's noise is not a face).
LOW_LIGHT_MAX_GAIN = 8.0


def luma_span(luma: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """The 1st and 99.5th percentile of a grey image's levels: its range, noise and a few
    highlights left out."""
    cdf = np.cumsum(np.bincount(luma.ravel(), minlength=256))
    lo, hi = np.searchsorted(cdf, [0.01 * cdf[-1], 0.995 * cdf[-1]])
    return int(lo), int(hi)


def is_dark(luma: npt.NDArray[np.uint8]) -> bool:
    """Whether a grey image is dark or flat: its range spans fewer than ``LOW_LIGHT_RANGE``
    levels (what the low-light pass looks at twice, and the residual risk flags)."""
    lo, hi = luma_span(luma)
    return hi - lo < LOW_LIGHT_RANGE


def stretched(image: Image) -> Image | None:
    """``image`` with its luma range (1st to 99.5th percentile) stretched to 0..255, the same
    table on every channel; None when the range spans ``LOW_LIGHT_RANGE`` levels or more."""
    lo, hi = luma_span(np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), np.uint8))
    if hi - lo >= LOW_LIGHT_RANGE:
        return None
    gain = min(255.0 / max(int(hi - lo), 1), LOW_LIGHT_MAX_GAIN)
    table = np.clip(np.rint((np.arange(256) - lo) * gain), 0, 255).astype(np.uint8)
    return np.asarray(cv2.LUT(image, table), np.uint8)


class LowLightPass:
    """A detector that looks three times at dark or flat frames: as they are, stretched (see
    :func:`stretched`), and stretched at half the size; the answers merged by the model's NMS.

    Every detector lost faces in dim, noisy, compressed footage, and no transform helped every
    model on every frame: the stretched frame is a second opinion, never a replacement. At
    half the size the noise that hides a large face at fine scales is averaged away. The
    second opinions count only from ``min_score`` (the new-track threshold): below it, the
    stretched noise gave two to five false faces for each true one. The cost, a second
    inference and a quarter of one, is paid on dark frames only. It runs in the client on the
    scaled images (the half-size one sent as a frame of its own size), so on-prem, hybrid and
    cloud jobs detect on the same pixels.
    """

    def __init__(self, inner: Detector, min_score: float) -> None:
        self._inner = inner
        self._min_score = min_score
        info = inner.info
        self._info = replace(
            info,
            options=info.options
            | {
                "low_light": {
                    "range": LOW_LIGHT_RANGE,
                    "max_gain": LOW_LIGHT_MAX_GAIN,
                    "min_score": min_score,
                }
            },
        )

    @property
    def info(self) -> DetectorInfo:
        return self._info

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        extra: list[tuple[int, Image, tuple[int, int]]] = []  # image index, view, its display
        for i, image in enumerate(images):
            bright = stretched(image)
            if bright is None:
                continue
            extra.append((i, bright, display_sizes[i]))
            h, w = image.shape[:2]
            half = fit_size(w, h, max(w, h) // 2)
            if min(half) >= 32:
                smaller = np.asarray(
                    cv2.resize(bright, half, interpolation=cv2.INTER_AREA), np.uint8
                )
                extra.append((i, smaller, half))
        if not extra:
            return self._inner.detect(images, display_sizes)
        found = self._inner.detect(
            [*images, *(view for _, view, _ in extra)],
            [*display_sizes, *(size for _, _, size in extra)],
        )
        if len(found) != len(images) + len(extra):
            raise DetectorError(
                f"the detector returned {len(found)} results for {len(images) + len(extra)}"
            )
        parts = [[d] for d in found[: len(images)]]
        for (i, _, (w, h)), second in zip(extra, found[len(images) :], strict=True):
            dw, dh = display_sizes[i]
            parts[i].append(second[second.scores >= self._min_score].scaled(dw / w, dh / h))
        nms_threshold = self._info.nms_threshold
        return [
            merge(p, nms_threshold, size) if len(p) > 1 else p[0]
            for p, size in zip(parts, display_sizes, strict=True)
        ]

    def close(self) -> None:
        self._inner.close()
