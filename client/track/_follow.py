"""Image evidence for a face the detector lost: its box followed into the next frame by the
motion of the texture inside it.

A track the detector misses (a head turned to profile, a dark or blurred frame, a face half
behind another) is otherwise carried only by arithmetic: interpolation between sightings, a
fixed lead-out at the velocity it had. ``follow`` looks at the pixels instead: corners inside
the box (``cv2.goodFeaturesToTrack``) are tracked into the next frame by pyramidal
Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``), each checked by tracking it back,
and the box moves by the points' median motion and scales by the median change of their
spacing. When too few points survive the check, or a third of them disagree (the box
straddles a face and what passes in front of it), there is no evidence and the track is left
to the smoother.

The tracker keeps what is found as masks of origin ``followed`` beside what it derives from
detections (it never derives from them, and tracks detections as it would without them), so
following only ever adds coverage. Both windows are stretched to the old window's luma range
first, so a dim frame is followed as well as a lit one. Only the window around the box is
looked at, so the cost grows with the number of faces lost, not with the frame's size.

Weighed and not taken: OpenCV's own single-object trackers (KCF, CSRT: in the contrib
package, not in ``opencv-python-headless``; MIL, Nano, Vit: one stateful object per face,
no check that says when they lost it) and dense flow (Farneback: a whole-frame cost on
every frame for the few boxes that need it).
"""

from __future__ import annotations

import math
from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Box

Luma = npt.NDArray[np.uint8]

#: Smallest box side followed: below it there is no texture to track.
MIN_SIDE = 12
#: A face larger than this (px) is followed in a window scaled down to it.
FOLLOW_SIDE = 48
#: Corners sought inside a box, and the fewest that must survive the forward-backward check.
POINTS = 24
MIN_POINTS = 6
#: A point whose backward track misses its start by more than this (pixels, or this share of
#: the box's size when larger) is dropped.
FB_ERROR = 1.0
FB_SHARE = 0.03
#: Surviving points must move together: at least ``AGREE`` of them within this share of the
#: box's size of their median motion (the box then moves by those points alone).
COHERENCE = 0.08
AGREE = 2 / 3
#: The most a box may scale from one frame to the next.
MAX_SCALE_STEP = 0.1

#: 8-bit formats whose first plane is the luma, read in place.
_LUMA_PLANE = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
)


def luma(frame: av.VideoFrame) -> Luma:
    """The frame's luma in stored pixels: its first plane where that is 8-bit luma (no copy),
    else converted."""
    if frame.format.name in _LUMA_PLANE:
        plane = frame.planes[0]
        rows = np.frombuffer(cast(Any, plane), np.uint8).reshape(plane.height, plane.line_size)
        return rows[:, : plane.width]
    return cast(Luma, frame.to_ndarray(format="gray"))


def _window(
    box: Box, shift: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The box grown by half its larger side all round, clipped so that it lies inside the image
    both where it is and moved by ``shift``."""
    w, h = size
    pad = max(box[2] - box[0], box[3] - box[1]) / 2
    x0 = max(math.floor(box[0] - pad), 0, -shift[0])
    y0 = max(math.floor(box[1] - pad), 0, -shift[1])
    x1 = min(math.ceil(box[2] + pad), w, w - shift[0])
    y1 = min(math.ceil(box[3] + pad), h, h - shift[1])
    return (x0, y0, x1, y1) if x1 - x0 >= MIN_SIDE and y1 - y0 >= MIN_SIDE else None


def follow(
    previous: Luma, current: Luma, box: Box, shift: tuple[float, float] = (0.0, 0.0)
) -> Box | None:
    """Where ``box`` of ``previous`` lies in ``current``, by the texture inside it; None when
    the pixels give no reliable answer. ``shift``: the expected motion (the camera's and the
    face's own), where the search starts."""
    side = max(box[2] - box[0], box[3] - box[1])
    if min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
        return None
    height, width = previous.shape
    move = (round(shift[0]), round(shift[1]))
    window = _window(box, move, (width, height))
    if window is None:
        return None
    x0, y0, x1, y1 = window
    crops = [
        previous[y0:y1, x0:x1],
        current[y0 + move[1] : y1 + move[1], x0 + move[0] : x1 + move[0]],
    ]
    # a large face looked at no finer than ``FOLLOW_SIDE`` px (the cost stays that of a
    # small one), a small one through a light blur; both windows then stretched by the old
    # one's range (smoothed first, so noise does not set it)
    f = min(1.0, FOLLOW_SIDE / side)
    if f < 1.0:
        blurred = [cv2.resize(c, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) for c in crops]
    else:
        blurred = [cv2.GaussianBlur(c, (3, 3), 0) for c in crops]
    side *= f
    lo, hi, _, _ = cv2.minMaxLoc(blurred[0])
    if hi - lo < 8:
        return None  # flat: nothing to follow
    gain = 255.0 / (hi - lo)
    old, new = (cv2.convertScaleAbs(image, alpha=gain, beta=-lo * gain) for image in blurred)
    # corners inside the box's inner part (its rim is hair, ears or background)
    inner = np.zeros(old.shape, np.uint8)
    bx0, by0, bx1, by1 = (
        (box[0] - x0) * f,
        (box[1] - y0) * f,
        (box[2] - x0) * f,
        (box[3] - y0) * f,
    )
    mx, my = (bx1 - bx0) * 0.15, (by1 - by0) * 0.1
    inner[
        max(0, round(by0 + my)) : max(0, round(by1 - my)),
        max(0, round(bx0 + mx)) : max(0, round(bx1 - mx)),
    ] = 255
    points = cv2.goodFeaturesToTrack(
        old, POINTS, 0.01, max(2.0, side / 12), mask=inner, blockSize=3
    )
    if points is None or len(points) < MIN_POINTS:
        return None
    win = int(np.clip(side / 3, 7, 21)) | 1
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(
        old, new, points, cast(Any, None), winSize=(win, win), maxLevel=2
    )
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(
        new, old, ahead, cast(Any, None), winSize=(win, win), maxLevel=2
    )
    error = np.linalg.norm((back - points).reshape(-1, 2), axis=1)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (error <= max(FB_ERROR, FB_SHARE * side))
    if good.sum() < max(MIN_POINTS, len(points) // 2):
        return None
    p, q = points.reshape(-1, 2)[good], ahead.reshape(-1, 2)[good]
    motion = q - p
    median = np.median(motion, axis=0)
    together = np.linalg.norm(motion - median, axis=1) <= COHERENCE * side
    if together.mean() < AGREE:
        return None
    p, q = p[together], q[together]
    median = np.median(q - p, axis=0)
    i, j = np.triu_indices(len(p), 1)
    before = np.linalg.norm(p[i] - p[j], axis=1)
    after = np.linalg.norm(q[i] - q[j], axis=1)
    spaced = before > side / 8
    scale = float(np.median(after[spaced] / before[spaced])) if spaced.any() else 1.0
    scale = min(max(scale, 1 - MAX_SCALE_STEP), 1 + MAX_SCALE_STEP)
    cx = (box[0] + box[2]) / 2 + move[0] + float(median[0]) / f
    cy = (box[1] + box[3]) / 2 + move[1] + float(median[1]) / f
    hw, hh = (box[2] - box[0]) * scale / 2, (box[3] - box[1]) * scale / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)
