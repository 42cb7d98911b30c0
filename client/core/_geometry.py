"""Boxes and their overlap, in display pixels of the original frame: the one ``Box``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: (x0, y0, x1, y1) in display pixels of the original frame.
Box = tuple[float, float, float, float]
#: A translation (dx, dy) in pixels: the camera's position, a face's motion.
Offset = tuple[float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_matrix(
    a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]
) -> npt.NDArray[np.floating]:
    """Pairwise :func:`iou` of (N, 4) and (M, 4) boxes: (N, M), in the boxes' own precision."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def shifted(box: Box, dx: float, dy: float, grow: float = 0.0) -> Box:
    """``box`` moved by (dx, dy) and grown by ``grow`` of its size, about its centre."""
    w, h = box[2] - box[0], box[3] - box[1]
    gx, gy = w * grow / 2, h * grow / 2
    return (box[0] + dx - gx, box[1] + dy - gy, box[2] + dx + gx, box[3] + dy + gy)


def union(a: Box, b: Box) -> Box:
    """The smallest box holding both."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
