"""Per-track evidence (detected and manual masks) turned into each frame's masks,
streaming, with look-ahead: the tracker adds coverage, it never removes it.

A frame's masks are its evidence, plus, for each track without evidence there, a box bridged
across a gap of up to ``max_gap`` frames, ``lead_in`` frames before the track's first
evidence and ``lead_out`` after its last, all carried with the camera (``_motion``). A track
followed by image evidence (``followed`` masks, ``veil.track.follow``) is bridged the same way
between its sightings, followed or detected, wherever one of them is followed: a face followed
on the key frames of a strided run, long past its lead-out, is masked on the frames between
too, not every other frame. The
smoother looks ``lookahead`` frames ahead, so memory is bounded whatever the video's length.
In a whip pan, where motion blur blinds the detector for a dozen frames, the masks stay on the
faces instead of staying where the faces were.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import cast

from veil.core import EVIDENCE, Box, FrameMasks, Mask, Offset, Origin, union

from ._config import TrackerConfig
from ._motion import VELOCITY_SIGHTINGS, carried, robust_velocity

#: One piece of a track's evidence: its frame, the mask, and the camera's position there.
_Point = tuple[int, Mask, Offset]


class Smoother:
    """Adds interpolated and extrapolated masks around per-track evidence, streaming.

    Feed frames in order with ``push``; each frame comes back from ``push`` (or ``flush``)
    once ``config.lookahead`` later frames have been seen, with its final masks.

    Lead-in and lead-out masks stop at hard cuts (``cut=True`` on the first frame of a shot):
    a face's first detection says nothing about the previous shot. Interpolation between two
    detections of one track is kept even across a cut, so a falsely detected cut can never
    open a gap the tracker would otherwise bridge.
    """

    def __init__(self, config: TrackerConfig) -> None:
        self._config = config
        # frame index, pts, evidence, cut, motion, camera offset at that frame
        self._pending: deque[tuple[int, int | None, list[Mask], bool, Offset, Offset]] = deque()
        self._evidence: dict[int, list[_Point]] = {}
        self._followed: dict[int, list[_Point]] = {}
        self._cuts: deque[int] = deque()
        self._offset: Offset = (0.0, 0.0)

    def push(
        self,
        index: int,
        pts: int | None,
        masks: list[Mask],
        cut: bool = False,
        motion: Offset = (0.0, 0.0),
    ) -> Iterator[FrameMasks]:
        offset = self._offset = (self._offset[0] + motion[0], self._offset[1] + motion[1])
        self._pending.append((index, pts, masks, cut, motion, offset))
        if cut:
            self._cuts.append(index)
        for mask in masks:
            if mask.origin in EVIDENCE and mask.origin is not Origin.POLICY:
                self._evidence.setdefault(mask.track, []).append((index, mask, offset))
            elif mask.origin is Origin.FOLLOWED:
                self._followed.setdefault(mask.track, []).append((index, mask, offset))
        while self._pending and self._pending[0][0] <= index - self._config.lookahead:
            yield self._finalise(*self._pending.popleft())

    def flush(self) -> Iterator[FrameMasks]:
        while self._pending:
            yield self._finalise(*self._pending.popleft())

    def _crosses_cut(self, first: int, last: int) -> bool:
        """Whether a shot starts in (first, last]: frames first and last lie in two shots."""
        return any(first < cut <= last for cut in self._cuts)

    def _finalise(
        self,
        index: int,
        pts: int | None,
        evidence: list[Mask],
        cut: bool,
        motion: Offset,
        offset: Offset,
    ) -> FrameMasks:
        cfg = self._config
        masks = set(evidence)
        masks.update(s for s in (self._steadying(index, offset, m) for m in evidence) if s)
        present = {m.track for m in evidence if m.origin in EVIDENCE}
        for track, points in list(self._evidence.items()):
            if track in present:
                continue
            derived = self._derive(index, offset, points)
            if derived is not None:
                masks.add(derived)
        followed = {m.track for m in evidence if m.origin is Origin.FOLLOWED}
        for track, points in self._followed.items():
            if track in present or track in followed:
                continue
            bridged = self._bridge_followed(index, offset, points, self._evidence.get(track, []))
            if bridged is not None:
                masks.add(bridged)
        horizon = index - max(cfg.max_gap + 1, cfg.lead_out)
        for sightings in (self._evidence, self._followed):
            _prune(sightings, horizon)
        while self._cuts and self._cuts[0] <= horizon:
            self._cuts.popleft()
        return FrameMasks(index, pts, sorted(masks), cut, motion)

    def _steadying(self, index: int, offset: Offset, mask: Mask) -> Mask | None:
        """For a detected ``mask`` at ``index``: the blend of its track's nearest sightings
        before and after (carried with the camera), when both lie within ``steady_span``
        frames and the blend reaches outside the mask, as an interpolated mask of the same
        track beside it. One frame's shrunken or shifted detection of a face seen steadily
        around it then no longer opens a one-frame hole. Only ever adds."""
        span = self._config.steady_span
        if not span or mask.origin is not Origin.DETECTED:
            return None
        points = self._evidence.get(mask.track, ())
        before = [p for p in points if index - span <= p[0] < index]
        after = [p for p in points if index < p[0] <= index + span]
        if not before or not after:
            return None
        # compared unrounded (a Mask rounds its box): a blend reaching outside by less than
        # the rounding still adds its mask
        if union(mask.box, _blend(index, offset, before[-1], after[0])) == mask.box:
            return None
        return _bridged(index, offset, before[-1], after[0])

    def _derive(self, index: int, offset: Offset, points: list[_Point]) -> Mask | None:
        """The mask of a track at a frame without its evidence, carried from the nearest
        evidence with the camera (``offset``: the camera's position at ``index``)."""
        cfg = self._config
        before = after = None
        for k in range(len(points) - 1, -1, -1):
            if points[k][0] < index:
                before = k
                break
        if before is None:
            after = 0 if points[0][0] > index else None
        elif before + 1 < len(points):
            after = before + 1

        if (
            before is not None
            and after is not None
            and points[after][0] - points[before][0] - 1 <= cfg.max_gap
        ):
            return _bridged(index, offset, points[before], points[after])
        if (
            after is not None
            and points[after][0] - index <= cfg.lead_in
            and not self._crosses_cut(index, points[after][0])
        ):
            # carried back with the camera alone: before its first sighting, a face's own
            # motion is unknown
            f1, m1, o1 = points[after]
            box = carried(m1.box, index - f1, start=o1, end=offset, growth=cfg.growth_per_frame)
            return Mask(track=m1.track, origin=Origin.EXTRAPOLATED, box=box, score=m1.score)
        if (
            before is not None
            and index - points[before][0] <= cfg.lead_out
            and not self._crosses_cut(points[before][0], index)
        ):
            # Carried with the camera and the face's own robust velocity, the box also keeps
            # where the face was last seen (the union): a wrong velocity cannot carry the
            # mask off a face that stopped, and the mask still follows one that moves on.
            f0, m0, o0 = points[before]
            velocity = robust_velocity([(f, m.box, o) for f, m, o in points[: before + 1]])
            frames, growth = index - f0, cfg.growth_per_frame
            stopped = carried(m0.box, frames, start=o0, end=offset, growth=growth)
            moving = carried(m0.box, frames, start=o0, end=offset, velocity=velocity, growth=growth)
            box = union(stopped, moving)
            return Mask(track=m0.track, origin=Origin.EXTRAPOLATED, box=box, score=m0.score)
        return None

    def _bridge_followed(
        self, index: int, offset: Offset, followed: list[_Point], detected: list[_Point]
    ) -> Mask | None:
        """A followed track's mask at a frame without a sighting of it: the blend of its
        nearest sightings (followed or detected) before and after, when they lie within
        ``max_gap`` frames of each other and one of them is followed (two detections are
        :meth:`_derive`'s to bridge)."""
        before = max((p for p in (*followed, *detected) if p[0] < index), default=None, key=_frame)
        after = min((p for p in (*followed, *detected) if p[0] > index), default=None, key=_frame)
        if before is None or after is None or after[0] - before[0] - 1 > self._config.max_gap:
            return None
        if before[1].origin is not Origin.FOLLOWED and after[1].origin is not Origin.FOLLOWED:
            return None
        return _bridged(index, offset, before, after)


def _frame(point: _Point) -> int:
    return point[0]


def _prune(sightings: dict[int, list[_Point]], horizon: int) -> None:
    """Forget sightings no frame at or after ``horizon`` can use (keep the last
    :data:`VELOCITY_SIGHTINGS` of each track)."""
    for track in list(sightings):
        points = sightings[track]
        if points[-1][0] < horizon:
            del sightings[track]
            continue
        keep = 0
        while keep < len(points) - VELOCITY_SIGHTINGS and points[keep + 1][0] < horizon:
            keep += 1
        if keep:
            del points[:keep]


def _blend(index: int, offset: Offset, first: _Point, last: _Point) -> Box:
    """A track's box at frame ``index`` (the camera at ``offset``) between two of its
    sightings: both carried to the frame with the camera, then blended by where the frame lies
    between them (a face's own motion is the blend itself)."""
    (f0, m0, o0), (f1, m1, o1) = first, last
    t = (index - f0) / (f1 - f0)
    a = carried(m0.box, index - f0, start=o0, end=offset)
    b = carried(m1.box, index - f1, start=o1, end=offset)
    return cast(Box, tuple(p + (q - p) * t for p, q in zip(a, b, strict=True)))


def _bridged(index: int, offset: Offset, first: _Point, last: _Point) -> Mask:
    """The interpolated mask of :func:`_blend`'s box, scored by the weaker sighting."""
    (_, m0, _), (_, m1, _) = first, last
    box = _blend(index, offset, first, last)
    return Mask(track=m0.track, origin=Origin.INTERPOLATED, box=box, score=min(m0.score, m1.score))
