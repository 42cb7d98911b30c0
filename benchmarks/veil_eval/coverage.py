"""Masked by record: which GT faces a set of mask boxes covers, with the renderer's geometry.

A GT face instance is *masked* when the union of the masks' covered areas covers at least
:data:`COVER_MIN` of its GT box (``bbox``, clipped to the frame). A mask's covered area is the
renderer's own geometry (``veil.mask.Geometry``: the box grown by the style margin; for an
ellipse, the ellipse circumscribing the grown box), opacity 1 only, so the feather band never
counts.

Why :data:`COVER_MIN` = 0.8: WIDER boxes are loose (hair, ears, part of the neck), dlib boxes
tight (brows to chin). A mask that leaves 20 % of a loose box uncovered leaves a strip of
hair or background, never both eyes; leaving more than that starts to uncover an eye or the
mouth on tight boxes. The default margin (0.2 per side) makes a detection of the face cover a
tight box completely, so on dlib clips the threshold is not what decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from veil import Record
from veil.core import Box
from veil.mask import Geometry, Shape, Style

from .score import Score, tally
from .truth import GtClip, GtFace

#: Smallest covered share of a GT box for the face to count as masked (see above).
COVER_MIN = 0.8


def _pixel_grid(box: Box, width: int, height: int) -> tuple[npt.NDArray[np.float64], ...] | None:
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5
    ys = np.arange(y0, y1, dtype=np.float64) + 0.5
    # only pixel centres inside the (fractional) box
    xs = xs[(xs >= box[0]) & (xs <= box[2])]
    ys = ys[(ys >= box[1]) & (ys <= box[3])]
    if not len(xs) or not len(ys):
        return None
    return xs, ys


def covered_share(
    box: Box, masks: Sequence[Box], style: Style, frame_size: tuple[int, int]
) -> float:
    """The share of ``box`` (clipped to the frame) inside the union of the masks' covered areas."""
    grid = _pixel_grid(box, *frame_size)
    if grid is None:
        return 1.0
    xs, ys = grid
    covered = np.zeros((len(ys), len(xs)), bool)
    for mask in masks:
        geometry = Geometry.of(mask, style)
        ex = (
            0.0
            if style.shape is Shape.BOX
            else (math.sqrt(2) - 1) * (geometry.x1 - geometry.x0) / 2
        )
        ey = (
            0.0
            if style.shape is Shape.BOX
            else (math.sqrt(2) - 1) * (geometry.y1 - geometry.y0) / 2
        )
        if (
            geometry.x1 + ex < box[0]
            or geometry.x0 - ex > box[2]
            or geometry.y1 + ey < box[1]
            or geometry.y0 - ey > box[3]
        ):
            continue
        covered |= geometry.alpha(style.shape, xs, ys) >= 0.999
        if covered.all():
            break
    return float(covered.mean())


_COLLATERAL_STEP = 4  # collateral from records is rasterised on a 4-pixel grid


def collateral_share(
    masks: Sequence[Box], faces: Sequence[GtFace], style: Style, frame_size: tuple[int, int]
) -> float:
    """Share of the frame covered by masks but outside every GT face's surroundings."""
    if not masks:
        return 0.0
    width, height = frame_size
    xs = np.arange(0, width, _COLLATERAL_STEP, dtype=np.float64) + _COLLATERAL_STEP / 2
    ys = np.arange(0, height, _COLLATERAL_STEP, dtype=np.float64) + _COLLATERAL_STEP / 2
    covered = np.zeros((len(ys), len(xs)), bool)
    for mask in masks:
        geometry = Geometry.of(mask, style)
        roi = geometry.roi(width, height, style.shape)
        if roi is None:
            continue
        ix = slice(roi[0] // _COLLATERAL_STEP, -(-roi[2] // _COLLATERAL_STEP))
        iy = slice(roi[1] // _COLLATERAL_STEP, -(-roi[3] // _COLLATERAL_STEP))
        covered[iy, ix] |= geometry.alpha(style.shape, xs[ix], ys[iy]) >= 0.999
    for face in faces:
        g = face.surroundings
        in_x = (xs >= g[0]) & (xs <= g[2])
        in_y = (ys >= g[1]) & (ys <= g[3])
        covered[np.ix_(in_y, in_x)] = False
    return float(covered.mean())


def score_masks(
    clip: GtClip, frame_masks: Sequence[Sequence[Box]], style: Style | None = None
) -> Score:
    """Score per-frame mask boxes (display pixels) against ``clip``'s ground truth."""
    style = style or Style()
    size = (clip.width, clip.height)
    masked: dict[tuple[int, int], bool] = {}
    collateral = []
    for i, faces in enumerate(clip.frames):
        boxes = list(frame_masks[i]) if i < len(frame_masks) else []
        for face in faces:
            if face.counts:
                masked[(i, face.id)] = covered_share(face.box, boxes, style, size) >= COVER_MIN
        collateral.append(collateral_share(boxes, faces, style, size))
    return tally(clip, masked, collateral)


def score_record(clip: GtClip, record: Record, style: Style | None = None) -> Score:
    """Score a detection record against ``clip``'s ground truth."""
    if len(record.frames) != len(clip.frames):
        raise ValueError(
            f"{clip.name}: the record has {len(record.frames)} frames, the GT {len(clip.frames)}"
        )
    return score_masks(clip, [[m.box for m in f.masks] for f in record.frames], style)
