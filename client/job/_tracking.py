"""A detection run's tracking: each frame's detections to its masks, and its masks to final.

In frame order, a frame's detections go to the associator (tracks, a second look where a
confirmed track has no detection, following by texture where the detector lost a face), are
held ``lead_in`` frames (tentative tracks confirmed or dropped, new tracks followed back), then
go to the smoother, which adds the lead-in, lead-out and bridging masks and hands frames back
once it has seen enough frames ahead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from typing import cast

import cv2
from av.video.reformatter import VideoReformatter

from veil.core import (
    Box,
    Detections,
    Detector,
    Image,
    Mask,
    Origin,
    display_size,
    fit_size,
    merge,
    whole_frame,
)
from veil.media import DecodedFrame
from veil.track import Associator, Luma, Smoother, TrackerConfig, centred_on, follow, luma

from ._scene import Measured, Point
from ._source import Pair

#: A second look (``TrackerConfig.recheck``) spans this many times the face's size, enlarged
#: until the face is ``RECHECK_FACE`` px, the window at most ``RECHECK_MAX_SIDE`` px (and the
#: model's input size); a face the frame's own pass sees at ``RECHECK_FACE`` px or more, or a
#: window no closer than that pass, is not looked at again.
RECHECK_WINDOW = 3
RECHECK_FACE = 64
RECHECK_MAX_SIDE = 256


class Tracking:
    """Frames' detections in (:meth:`assign`, in frame order), frames with final masks out.

    The frames themselves are held (:meth:`hold`, as they are decoded) until their final
    masks are out: following reads the pictures of earlier frames, and the caller renders
    each frame with its masks.
    """

    def __init__(
        self,
        detector: Detector,
        tracker: TrackerConfig,
        sample_aspect: Fraction,
        frame_size: tuple[int, int] | None,
    ) -> None:
        self._detector = detector
        self._sample_aspect = sample_aspect
        self._associator = Associator(tracker, detector.info.members, frame_size)
        self._follow_span = tracker.follow_span
        self._recheck = tracker.recheck
        self._scaler = VideoReformatter()  # the calling thread's (``_look_closer``)
        self._smoother = Smoother(tracker)
        # frames assigned, waiting ``lead_in`` frames for their tentative tracks' confirmation
        # (only weak detections start tentative tracks) and for the tracks starting after
        # them to be followed back (``_follow_back``)
        self._release_delay = (
            tracker.lead_in if tracker.new_track_score or tracker.follow_span else 0
        )
        self._assigned: deque[tuple[int, int | None, list[Mask], bool, Point]] = deque()
        self._held: dict[int, DecodedFrame] = {}

    @property
    def near_misses(self) -> dict[int, tuple[int, float]]:
        """Frames with weak detections of tracks never confirmed (residual risk)."""
        return self._associator.near_misses

    def hold(self, item: DecodedFrame) -> None:
        self._held[item.index] = item

    def assign(
        self, item: DecodedFrame, detections: Detections | None, measured: Measured, whole: bool
    ) -> Iterator[Pair]:
        """Frame ``item``'s masks: the whole frame by policy (``whole``), else its tracks'
        from ``detections`` (None: not detected, the smoother derives its coverage)."""
        if whole:
            masks = [whole_frame(item.frame.width, item.frame.height)]
        elif detections is not None:
            if self._recheck:
                detections = self._look_closer(item, detections, measured.offset)
            masks = self._associator.assign(item.index, detections, measured.offset)
            if self._follow_span:
                masks += self._follow(item, masks, measured.offset)
        else:
            masks = []
        self._assigned.append((item.index, item.frame.pts, masks, measured.cut, measured.motion))
        if self._follow_span and detections is not None:
            self._follow_back()
        yield from self._release(item.index - self._release_delay)

    def flush(self) -> Iterator[Pair]:
        """Every frame still held, with its final masks (after the last :meth:`assign`)."""
        yield from self._release(None)
        for masks in self._smoother.flush():
            yield self._held.pop(masks.index), masks

    def _look_closer(self, item: DecodedFrame, detections: Detections, offset: Point) -> Detections:
        """``detections`` of ``item``'s frame, with what a second look finds where a
        confirmed track was and no detection is (``TrackerConfig.recheck``): a window of
        :data:`RECHECK_WINDOW` times the face's size around its predicted box, enlarged so
        the face is :data:`RECHECK_FACE` px, detected on its own. The full frame reaches the
        model shrunk (a 1080p frame to a third at 640 px): a face half behind another, or
        small, is lost there and found again at its own scale. Only faces whose centre lies
        on the prediction (grown by half) are kept; the union is merged by the model's NMS."""
        regions = self._associator.unmatched(item.index, detections, offset)
        if not regions:
            return detections
        frame = item.frame
        width, height = display_size(frame.width, frame.height, self._sample_aspect)
        sx, sy = width / frame.width, height / frame.height  # stored -> display pixels
        picture = self._scaler.reformat(frame, width, height, "rgb24").to_ndarray()
        max_side = self._detector.info.max_side
        frame_scale = fit_size(width, height, max_side)[0] / width  # the frame pass's
        images: list[Image] = []
        windows: list[tuple[int, int, int, int]] = []
        looked: list[Box] = []
        for box in regions:
            side = max((box[2] - box[0]) * sx, (box[3] - box[1]) * sy)
            cx, cy = (box[0] + box[2]) / 2 * sx, (box[1] + box[3]) / 2 * sy
            half = side * RECHECK_WINDOW / 2
            x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
            x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
            if min(x1 - x0, y1 - y0) < 8:
                continue
            span = max(x1 - x0, y1 - y0)
            scale = min(max(1.0, RECHECK_FACE / side), max_side / span, RECHECK_MAX_SIDE / span)
            if side * frame_scale >= RECHECK_FACE or scale <= frame_scale:
                continue  # the frame's own pass sees it as large, or larger
            # the enlarged window is a picture of its own size (even sides, as every
            # detector takes them, hybrid mode's server too)
            size = fit_size(round((x1 - x0) * scale), round((y1 - y0) * scale), max_side)
            images.append(cast(Image, cv2.resize(picture[y0:y1, x0:x1], size)))
            windows.append((x0, y0, x1, y1))
            looked.append(box)
        if not images:
            return detections
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        parts = [detections]
        for found, (w, h), (x0, y0, x1, y1), box in zip(
            self._detector.detect(images, sizes), sizes, windows, looked, strict=True
        ):
            # window pixels -> display pixels of the frame -> stored pixels
            found = (
                found.scaled((x1 - x0) / w, (y1 - y0) / h).shifted(x0, y0).scaled(1 / sx, 1 / sy)
            )
            parts.append(found[centred_on(found, box)])
        return merge(parts, self._detector.info.nms_threshold, (frame.width, frame.height))

    def _follow(self, item: DecodedFrame, masks: list[Mask], offset: Point) -> list[Mask]:
        """Masks of the tracks the detector lost in ``item``'s frame, followed there from
        their latest sighting by the texture inside the box (``veil.track.follow``)."""
        lost = self._associator.lost(item.index, {m.track for m in masks}, offset)
        if not lost:
            return []
        current = luma(item.frame)
        lumas: dict[int, Luma] = {}
        found = []
        for track, frame, box, shift in lost:
            if frame not in lumas:
                if frame not in self._held:
                    continue  # already rendered (a tracker with almost no look-ahead)
                lumas[frame] = luma(self._held[frame].frame)
            moved = follow(lumas[frame], current, box, shift)
            if moved is not None:
                found.append(self._associator.followed(item.index, track, moved, offset))
        return found

    def _follow_back(self) -> None:
        """Offline: the tracks the frame assigned last starts with a strong detection,
        followed back through the frames not yet released (up to ``lead_in``), to where the
        face was before the detector found it; the boxes found join those frames' masks.
        Never across a cut."""
        started = set(self._associator.started)
        entries = reversed(self._assigned)
        later = next(entries)
        boxes = {m.track: m for m in later[2] if m.track in started}
        if not boxes:
            return
        first, later_luma = later[0], luma(self._held[later[0]].frame)
        for earlier in entries:
            index, _, masks, _, _ = earlier
            if not boxes or first - index > self._follow_span or later[3]:
                break
            current = luma(self._held[index].frame)
            motion = later[4]  # the camera's, from ``earlier`` to ``later``
            found = {}
            for track, mask in boxes.items():
                moved = follow(later_luma, current, mask.box, (-motion[0], -motion[1]))
                if moved is not None:
                    found[track] = Mask(
                        track=track, origin=Origin.FOLLOWED, box=moved, score=mask.score
                    )
            masks.extend(found.values())
            boxes, later, later_luma = found, earlier, current

    def _release(self, upto: int | None) -> Iterator[Pair]:
        """Hand the frames assigned up to ``upto`` (None: all) to the smoother, their
        tentative tracks' masks dropped (``Associator.release``)."""
        while self._assigned and (upto is None or self._assigned[0][0] <= upto):
            index, pts, masks, cut, motion = self._assigned.popleft()
            masks = self._associator.release(index, masks)
            for final in self._smoother.push(index, pts, masks, cut, motion):
                yield self._held.pop(final.index), final
