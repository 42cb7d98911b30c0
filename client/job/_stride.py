"""The adaptive detection stride: which frames the detector sees, and the rule that lets the
tracker interpolate the others.

With stride n > 1 the detector sees frame 0, n, 2n, ... (the key frames) and the last frame.
The frames between two key frames are detected too unless the two agree (:func:`agree`: the
same faces, each moved less than :data:`STRIDE_AGREE_IOU` allows, no cut between): only then
are they left to the smoother's interpolation, exactly as ``veil render`` re-derives it from
the record (whose detector block states the stride and the rule).
"""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from veil.core import Detections, Detector, Image, display_size, fit_size, iou_matrix

#: With a detection stride, the frames between two key frames are interpolated only when
#: every face of one pairs with a face of the other at this IoU or more (else detected).
STRIDE_AGREE_IOU = 0.5

Point = tuple[float, float]


class AdaptiveStride:
    """The detector as the job's detect worker runs it: frames scaled to the model's input
    (as displayed: non-square pixels made square), key frames detected, and the frames
    between two key frames that disagree.

    One worker thread calls :meth:`detect`, batch after batch in frame order: the previous
    batch's last key frame is the first comparison of the next.
    """

    def __init__(self, detector: Detector, stride: int, sample_aspect: Fraction) -> None:
        if stride < 1:
            raise ValueError(f"detection stride {stride} is below 1")
        self.stride = stride
        self._detector = detector
        self._sample_aspect = sample_aspect
        self._scaler = VideoReformatter()
        # the previous batch's last key frame: its detections and the camera's position
        self._last_key: tuple[Detections | None, Point] | None = None
        self.frames_detected = 0

    def is_key(self, index: int) -> bool:
        """Whether frame ``index`` is a key frame (the last frame is one too: the caller's)."""
        return index % self.stride == 0

    def detect(
        self,
        frames: list[av.VideoFrame],
        keys: list[bool],
        cuts: list[bool],
        offsets: list[Point],
    ) -> list[Detections | None]:
        """Detect the key frames, then the frames between two that disagree once the
        camera's motion between them is taken out (``offsets``: the camera's position at
        each frame; ``cuts``: the frames that start a shot).

        Returns one entry per frame, None where the frame was not detected.
        """
        found: list[Detections | None] = [None] * len(frames)
        key_at = [k for k, key in enumerate(keys) if key]
        for k, detections in zip(key_at, self._run([frames[k] for k in key_at]), strict=True):
            found[k] = detections
        between: list[int] = []
        previous, start = self._last_key, 0
        self._last_key = None  # unknown until this batch succeeds (a failure: detect all)
        for k in key_at:
            gap = range(start, k)
            current = found[k], offsets[k]
            if gap and (
                previous is None
                or any(cuts[start : k + 1])
                or not agree(previous[0], current[0], _minus(current[1], previous[1]))
            ):
                between.extend(gap)
            previous, start = current, k + 1
        for k, detections in zip(between, self._run([frames[k] for k in between]), strict=True):
            found[k] = detections
        self.frames_detected += len(key_at) + len(between)
        self._last_key = previous
        return found

    def _run(self, frames: list[av.VideoFrame]) -> list[Detections]:
        """Scale each frame to the model's input size, then detect."""
        if not frames:
            return []
        max_side = self._detector.info.max_side
        images: list[Image] = []
        sizes: list[tuple[int, int]] = []
        for frame in frames:
            # Detected as displayed: non-square pixels made square (``display_size``).
            display = display_size(frame.width, frame.height, self._sample_aspect)
            w, h = fit_size(*display, max_side)
            scaled = self._scaler.reformat(frame, w, h, "rgb24", interpolation=Interpolation.AREA)
            images.append(cast(Image, scaled.to_ndarray()))
            sizes.append(display)
        found = self._detector.detect(images, sizes)
        if len(found) != len(frames):
            raise RuntimeError(f"detector returned {len(found)} results for {len(frames)} frames")
        # Boxes back to stored pixels, where the masks are drawn.
        return [
            d if (f.width, f.height) == s else d.scaled(f.width / s[0], f.height / s[1])
            for d, f, s in zip(found, frames, sizes, strict=True)
        ]


def _minus(a: Point, b: Point) -> Point:
    return (a[0] - b[0], a[1] - b[1])


def agree(a: Detections | None, b: Detections | None, camera: Point) -> bool:
    """Two key frames' detections agree: interpolating between them is safe.

    ``a``'s boxes are first moved by ``camera`` (the camera's motion from ``a``'s frame to
    ``b``'s), as the smoother carries them. A face of one frame and a face of the other are
    taken for the same face when their centres lie within the larger one's size. They agree
    when every such pair's best overlap is at least ``STRIDE_AGREE_IOU``: the face itself
    moved or scaled little, so the interpolated box follows it. A face with no such
    counterpart appeared or vanished (or the detector missed it in one of the two): the
    smoother's lead-in, lead-out and gap bridging cover the frames between, as they cover a
    missed frame at stride 1.
    """
    assert a is not None and b is not None  # key frames are always detected
    if not len(a) or not len(b):
        return True
    boxes_a = a.boxes + np.array([camera[0], camera[1], camera[0], camera[1]], np.float32)
    boxes_b = b.boxes
    ca, cb = (boxes_a[:, :2] + boxes_a[:, 2:]) / 2, (boxes_b[:, :2] + boxes_b[:, 2:]) / 2
    sa = np.max(boxes_a[:, 2:] - boxes_a[:, :2], axis=1)
    sb = np.max(boxes_b[:, 2:] - boxes_b[:, :2], axis=1)
    offset = ca[:, None, :] - cb[None, :, :]
    same = np.hypot(offset[..., 0], offset[..., 1]) <= np.maximum(sa[:, None], sb[None, :])
    overlap = np.where(same, iou_matrix(boxes_a, boxes_b), -1.0)
    rows, cols = same.any(axis=1), same.any(axis=0)
    return bool(
        (overlap.max(axis=1)[rows] >= STRIDE_AGREE_IOU).all()
        and (overlap.max(axis=0)[cols] >= STRIDE_AGREE_IOU).all()
    )
