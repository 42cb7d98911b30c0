"""Where masks are drawn: blur, pixelate or solid fill, box or ellipse, on planar YUV frames.

Masks are drawn on each plane of the frame that goes to the encoder (luma at full size, chroma
at its own subsampled size), so pixels outside the masks are never converted to RGB and back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Box, Mask

from ._style import Effect, Shape, Style

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Geometry:
    """A mask's covered area and feather band, in luma pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    size: float  # the face box's longer side: blur, pixel size and feather scale with it
    feather: float

    @classmethod
    def of(cls, box: Box, style: Style) -> Geometry:
        x0, y0, x1, y1 = box
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        gx, gy = style.margin * w, style.margin * h
        size = max(w, h)
        return cls(x0 - gx, y0 - gy, x1 + gx, y1 + gy, size, style.feather * size)

    def roi(self, width: int, height: int, shape: Shape) -> tuple[int, int, int, int] | None:
        """The integer luma rectangle the mask (covered area + feather) touches, clipped."""
        cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
        hw, hh = (self.x1 - self.x0) / 2, (self.y1 - self.y0) / 2
        if shape is Shape.ELLIPSE:
            hw, hh = hw * _SQRT2, hh * _SQRT2
        x0 = max(0, math.floor(cx - hw - self.feather))
        y0 = max(0, math.floor(cy - hh - self.feather))
        x1 = min(width, math.ceil(cx + hw + self.feather))
        y1 = min(height, math.ceil(cy + hh + self.feather))
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def alpha(
        self, shape: Shape, xs: npt.NDArray[np.floating[Any]], ys: npt.NDArray[np.floating[Any]]
    ) -> npt.NDArray[np.float32]:
        """Mask opacity at luma coordinates ``xs`` (row) x ``ys`` (column): 1 inside."""
        if shape is Shape.BOX:
            dx = np.maximum(np.maximum(self.x0 - xs, xs - self.x1), 0.0)[None, :]
            dy = np.maximum(np.maximum(self.y0 - ys, ys - self.y1), 0.0)[:, None]
            outside = np.sqrt(dx * dx + dy * dy)
        else:
            cx, cy = (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2
            a = (self.x1 - self.x0) / 2 * _SQRT2
            b = (self.y1 - self.y0) / 2 * _SQRT2
            u, v = ((xs - cx) / a)[None, :], ((ys - cy) / b)[:, None]
            outside = np.maximum(np.sqrt(u * u + v * v) - 1.0, 0.0) * min(a, b)
        if self.feather <= 0:
            return (outside <= 0).astype(np.float32)
        return np.clip(1.0 - outside / self.feather, 0.0, 1.0, dtype=np.float32)


def _blur(roi: npt.NDArray[Any], sigma: float) -> npt.NDArray[Any]:
    """A Gaussian blur of ``sigma`` pixels; large sigmas run on a downscaled copy."""
    h, w = roi.shape
    step = max(1, int(sigma // 3))
    if step == 1:
        return cv2.GaussianBlur(roi, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    small = cv2.resize(
        roi, (max(1, -(-w // step)), max(1, -(-h // step))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma / step, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pixelate(roi: npt.NDArray[Any], block: float) -> npt.NDArray[Any]:
    h, w = roi.shape
    small = cv2.resize(
        roi,
        (max(1, math.ceil(w / block)), max(1, math.ceil(h / block))),
        interpolation=cv2.INTER_AREA,
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _solid_values(color: tuple[int, int, int], full_range: bool, bits: int) -> tuple[int, ...]:
    """``color`` (R, G, B) as (Y, U, V) in BT.709, at the plane's range and bit depth."""
    r, g, b = (c / 255 for c in color)
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    u = (b - y) / 1.8556
    v = (r - y) / 1.5748
    if full_range:
        yuv = (y * 255, u * 255 + 128, v * 255 + 128)
    else:
        yuv = (16 + y * 219, 128 + u * 224, 128 + v * 224)
    return tuple(round(c * (1 << (bits - 8))) for c in yuv)


def single_threaded_opencv() -> None:
    """Turn OpenCV's own thread pool off (process-wide), as every veil job does.

    The jobs already run their stages on all cores (decode, detect, render pool, encoder);
    on mask-sized images OpenCV's per-call threads only add overhead: rendering a 720p frame
    with ten faces cost 35 ms CPU (19 ms wall) with its pool on two cores, 9 ms (9 ms wall)
    without.
    """
    cv2.setNumThreads(1)


def plane_arrays(frame: av.VideoFrame) -> list[npt.NDArray[Any]]:
    """Writable views of a planar frame's planes, each (plane height, plane width)."""
    bits = max(c.bits for c in frame.format.components)
    dtype = np.dtype(np.uint16 if bits > 8 else np.uint8)
    arrays = []
    for plane in frame.planes:
        flat = np.frombuffer(memoryview(plane), dtype)
        arrays.append(
            flat.reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width]
        )
    return arrays


def by_track(masks: Iterable[Mask]) -> list[list[Box]]:
    """A frame's masks as :func:`render_frame` draws them: one group of boxes per track.

    A face often has two masks in a frame (its detection and the blend that steadies it, or
    a followed box beside an interpolated one); drawn apart, the second blurs the first's
    blur again, at twice the cost for nothing."""
    groups: dict[int, list[Box]] = {}
    for mask in masks:
        groups.setdefault(mask.track, []).append(mask.box)
    return list(groups.values())


def render_frame(
    frame: av.VideoFrame, groups: Iterable[Sequence[Box]], style: Style, *, pix_fmt: str
) -> av.VideoFrame:
    """A new ``pix_fmt`` frame: ``frame`` with every group of boxes masked in ``style``.

    A group (one face's boxes: :func:`by_track`) is drawn once: its opacity is the largest of
    its boxes' at each pixel, its effect that of its largest box (the strongest blur, the
    coarsest blocks) over the union of their areas, so it covers everything each box would
    and at least as strongly. The input frame is never written to (decoders keep references
    to it).
    """
    src = frame.reformat(format=pix_fmt)
    out = av.VideoFrame(frame.width, frame.height, pix_fmt)
    planes = plane_arrays(out)
    for dst, source in zip(planes, plane_arrays(src), strict=True):
        dst[...] = source
    out.pts = frame.pts
    if frame.time_base is not None:
        out.time_base = frame.time_base
    out.color_range = frame.color_range
    out.colorspace = frame.colorspace
    bits = max(c.bits for c in out.format.components)
    full_range = frame.color_range == 2 or pix_fmt.startswith("yuvj")
    solid = _solid_values(style.color, full_range, bits)
    for group in groups:
        geometries = [Geometry.of(box, style) for box in group]
        rois = [
            roi
            for geometry in geometries
            if (roi := geometry.roi(frame.width, frame.height, style.shape)) is not None
        ]
        if not rois:
            continue
        roi = (
            min(r[0] for r in rois),
            min(r[1] for r in rois),
            max(r[2] for r in rois),
            max(r[3] for r in rois),
        )
        size = max(geometry.size for geometry in geometries)
        windows: dict[tuple[int, int], _Window | None] = {}  # chroma planes share theirs
        for plane, value in zip(planes, solid, strict=False):
            if plane.shape not in windows:
                windows[plane.shape] = _Window.of(
                    plane.shape, frame.width, frame.height, roi, geometries, style
                )
            window = windows[plane.shape]
            if window is not None:
                _mask_plane(plane, window, size, style, value)
    return out


@dataclass(frozen=True)
class _Window:
    """Where one mask touches a plane: the plane's rectangle, its opacity there, its scale."""

    x0: int
    y0: int
    x1: int
    y1: int
    alpha: npt.NDArray[np.float32]
    scale: float  # luma pixels per plane pixel (the larger of the two axes)

    @classmethod
    def of(
        cls,
        shape: tuple[int, int],
        width: int,
        height: int,
        roi: tuple[int, int, int, int],
        geometries: Sequence[Geometry],
        style: Style,
    ) -> _Window | None:
        ph, pw = shape
        sx, sy = width / pw, height / ph
        x0, y0 = math.floor(roi[0] / sx), math.floor(roi[1] / sy)
        x1, y1 = min(pw, math.ceil(roi[2] / sx)), min(ph, math.ceil(roi[3] / sy))
        if x1 <= x0 or y1 <= y0:
            return None
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5) * sx
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5) * sy
        alpha = geometries[0].alpha(style.shape, xs, ys)
        for geometry in geometries[1:]:
            np.maximum(alpha, geometry.alpha(style.shape, xs, ys), out=alpha)
        if not alpha.any():
            return None
        return cls(x0, y0, x1, y1, alpha, max(sx, sy))


def _mask_plane(
    plane: npt.NDArray[Any], window: _Window, size: float, style: Style, solid_value: int
) -> None:
    """Draws one group's ``window`` on ``plane``; ``size``: its largest face box's side."""
    region = plane[window.y0 : window.y1, window.x0 : window.x1]
    if style.effect is Effect.BLUR:
        effect = _blur(region, style.blur_strength * size / window.scale)
    elif style.effect is Effect.PIXELATE:
        effect = _pixelate(region, size / style.pixel_blocks / window.scale)
    else:
        effect = np.full_like(region, solid_value)
    alpha = window.alpha
    blended = alpha * effect.astype(np.float32) + (1.0 - alpha) * region.astype(np.float32)
    region[...] = np.rint(blended).astype(region.dtype)
