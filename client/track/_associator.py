"""Track ids and temporal smoothing: the tracker adds coverage, it never removes it.

Two parts, both deterministic and streaming:

* ``Associator`` gives each detection a track id, frame by frame (greedy matching on IoU and
  centre distance against each live track's constant-velocity prediction).
* ``Smoother`` turns per-track evidence (detected and manual masks) into the mask set of each
  frame: the evidence itself, plus boxes interpolated across gaps of up to ``max_gap`` frames,
  ``lead_in`` frames before a track's first evidence and ``lead_out`` after its last. It looks
  ``lookahead`` frames ahead, so memory is bounded whatever the video's length.

Both follow the camera: each frame may carry the camera's translation since the frame before
(``FrameMasks.motion``, measured by ``_shots.CameraMotion``), and boxes carried to frames
without evidence move with it, plus the face's own motion. In a whip pan, where motion blur
blinds the detector for a dozen frames, the masks stay on the faces instead of staying where
the faces were.

Weighed and not taken: norfair (Kalman tracking built for live use: a track is only reported
after ``initialization_delay`` hits, it cannot look ahead or fill gaps backwards, and it brings
scipy and rich) and ByteTrack as packaged in supervision (a large dependency for a matching
step of forty lines). Offline smoothing with look-ahead is the part that matters here, and no
library does it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.core import (
    EVIDENCE,
    POLICY_TRACK,
    Box,
    ConfigError,
    Detections,
    FrameMasks,
    Mask,
    Offset,
    Origin,
    centre,
    iou_matrix,
    shifted,
    union,
)


@dataclass(frozen=True, kw_only=True)
class TrackerConfig:
    """Tracking and smoothing parameters, in frames. Recorded in the detection record."""

    max_gap: int = 12
    lead_in: int = 6
    lead_out: int = 6
    match_iou: float = 0.1
    growth_per_frame: float = 0.03
    #: Track-aware threshold: a detection scoring below this (a weak one) is masked only as
    #: part of a confirmed track (0: every detection is). Run the detector lower than this.
    new_track_score: float = 0.0
    #: Weak sightings that confirm a track of weak detections alone: a face the detector
    #: sees only faintly (heavy compression, low light) but in the same place frame after
    #: frame, where a false positive flickers. 0: only a strong sighting confirms a track.
    confirm_hits: int = 0
    #: A detected box is joined by the blend of its track's nearest sightings before and
    #: after, when both lie within this many frames (``Smoother``): one frame's shrunken or
    #: shifted detection no longer opens a one-frame hole. 0: off.
    steady_span: int = 0
    #: A confirmed track the detector loses is followed by image evidence (``_follow``: the
    #: texture inside its box, frame to frame) up to this many frames past its last
    #: detection; the boxes found are evidence like detections. 0: off.
    follow_span: int = 0
    #: A confirmed track that no detection of a frame lies on (sighted within
    #: :data:`RECHECK_REACH` frames: occluded, turned, too small at the model's input) is
    #: looked for again in a window around it, enlarged so the face is
    #: ``RECHECK_FACE`` px; at most this many windows a frame. 0: off.
    recheck: int = 0

    def __post_init__(self) -> None:
        for name in ("max_gap", "lead_in", "lead_out", "follow_span"):
            if not 0 <= getattr(self, name) <= 300:
                raise ConfigError(f"tracker {name} must be between 0 and 300 frames")
        if not 0 < self.match_iou <= 1:
            raise ConfigError("tracker match_iou must be in (0, 1]")
        if not 0 <= self.growth_per_frame <= 0.5:
            raise ConfigError("tracker growth_per_frame must be between 0 and 0.5")
        if not 0 <= self.new_track_score < 1:
            raise ConfigError("tracker new_track_score must be in [0, 1)")
        if not 0 <= self.confirm_hits <= 16:
            raise ConfigError("tracker confirm_hits must be between 0 and 16")
        if not 0 <= self.recheck <= 64:
            raise ConfigError("tracker recheck must be between 0 and 64 windows a frame")
        if not 0 <= self.steady_span <= 8:
            raise ConfigError("tracker steady_span must be between 0 and 8")

    @property
    def lookahead(self) -> int:
        """Frames the smoother must see past a frame before that frame's masks are final."""
        return max(self.max_gap + 1, self.lead_in)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_gap": self.max_gap,
            "lead_in": self.lead_in,
            "lead_out": self.lead_out,
            "match_iou": self.match_iou,
            "growth_per_frame": self.growth_per_frame,
        } | {
            name: value
            for name, value in (
                ("new_track_score", self.new_track_score),
                ("confirm_hits", self.confirm_hits),
                ("steady_span", self.steady_span),
                ("follow_span", self.follow_span),
                ("recheck", self.recheck),
            )
            if value
        }


def _own_velocity(
    box0: Box, frame0: int, offset0: Offset, box1: Box, frame1: int, offset1: Offset
) -> tuple[float, float]:
    """A face's own motion per frame between two sightings: its image motion less the
    camera's."""
    (x0, y0), (x1, y1) = centre(box0), centre(box1)
    dt = frame1 - frame0
    return (
        ((x1 - x0) - (offset1[0] - offset0[0])) / dt,
        ((y1 - y0) - (offset1[1] - offset0[1])) / dt,
    )


#: Sightings a carried track's velocity is taken from: the median of the steps between them.
#: From the last two alone, jitter made a velocity that flew off the face (issue 18: a 1080p
#: street clip's lead-out drifted 11 px a frame away from a face that barely moved).
VELOCITY_SIGHTINGS = 5
#: The most a face is taken to move by itself in a frame, as a share of its size (the
#: camera's motion is measured apart).
MAX_OWN_SPEED = 0.25
#: A lost track is followed from its latest sighting at most this many frames back, from
#: when it has been missed for ``FOLLOW_AFTER`` frames, at most ``FOLLOW_LIMIT`` tracks a
#: frame (a crowd's hundreds of flickering detections would otherwise cost more than the
#: detector: on the generated profile crowd, balanced's CPU a frame went 33 -> 102 ms).
FOLLOW_REACH = 3
FOLLOW_AFTER = 2
FOLLOW_LIMIT = 16
#: A track is looked for again (``TrackerConfig.recheck``) up to this many frames after its
#: latest detection.
RECHECK_REACH = 3
#: A weak detection larger than this share of the frame's shorter side never starts a track:
#: at a low threshold the detector reports frame-filling "faces" in texture and blur, while a
#: face that close scores high (it may still continue a confirmed track, as it approaches).
WEAK_MAX_SIDE = 0.33


def robust_velocity(points: Sequence[tuple[int, Box, Offset]]) -> tuple[float, float]:
    """A face's own motion per frame at its latest sighting (``points``: its sightings, in
    order, with the camera's position at each): the median step of the last
    :data:`VELOCITY_SIGHTINGS`, each component at most :data:`MAX_OWN_SPEED` of its size."""
    recent = points[-VELOCITY_SIGHTINGS:]
    if len(recent) < 2:
        return (0.0, 0.0)
    steps = [
        _own_velocity(a, fa, oa, b, fb, ob)
        for (fa, a, oa), (fb, b, ob) in itertools.pairwise(recent)
        if fb != fa  # two sightings in one frame (a detection and a reviewer's box)
    ]
    if not steps:
        return (0.0, 0.0)
    last = recent[-1][1]
    limit = MAX_OWN_SPEED * max(last[2] - last[0], last[3] - last[1])
    vx, vy = (statistics.median(s[axis] for s in steps) for axis in (0, 1))
    return (max(-limit, min(limit, vx)), max(-limit, min(limit, vy)))


def centred_on(detections: Detections, box: Box, grow: float = 0.5) -> npt.NDArray[np.bool_]:
    """Which of ``detections`` have their centre on ``box`` grown by ``grow`` of its size."""
    x0, y0, x1, y1 = shifted(box, 0.0, 0.0, grow)
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2
    return (  # type: ignore[no-any-return]
        (centres[:, 0] >= x0)
        & (centres[:, 0] <= x1)
        & (centres[:, 1] >= y0)
        & (centres[:, 1] <= y1)
    )


@dataclass
class _Live:
    box: Box
    frame: int
    offset: Offset  # the camera's position at ``frame`` (see Smoother)
    velocity: tuple[float, float] = (0.0, 0.0)  # the face's own motion, per frame
    # the latest sightings (frame, box, camera offset) the velocity is taken from
    sightings: tuple[tuple[int, Box, Offset], ...] = ()
    # weak sightings so far (see TrackerConfig.confirm_hits)
    hits: int = 0
    # the score of its latest detection
    score: float = 0.0


@dataclass(frozen=True)
class _Followed:
    """A track the detector lost, as followed by image evidence (``Associator.followed``)."""

    detected: int  # the frame of its latest detection
    frame: int  # its latest sighting by image evidence
    box: Box
    offset: Offset  # the camera's position at ``frame``
    velocity: tuple[float, float]  # its own motion, from its detections
    score: float  # its latest detection's


class Associator:
    """Gives detections stable track ids, one frame at a time, in frame order.

    With ``config.new_track_score`` set, a weak detection (below it) that continues no live
    track starts a tentative one. A track is confirmed by a strong detection, or by
    ``config.confirm_hits`` weak ones; ``release`` keeps the masks of confirmed tracks and
    lists the rest in ``near_misses`` (frame index -> count and best score), where a reviewer
    should look. Offline, a frame is released ``lead_in`` frames late, so the weak sightings
    before a track's confirmation are masked too; live, at once.
    ``members`` names a fused detector's members, so each detected mask says which found it.
    """

    def __init__(
        self,
        config: TrackerConfig,
        members: Sequence[str] = (),
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        self._config = config
        self._members = tuple(members)
        # the largest a weak detection may be and still start a track (WEAK_MAX_SIDE)
        self._weak_max = WEAK_MAX_SIDE * min(frame_size) if frame_size else math.inf
        self._live: dict[int, _Live] = {}
        self._next_id = POLICY_TRACK + 1
        # tracks not (yet) confirmed -> the frame of their latest sighting
        self._tentative: dict[int, int] = {}
        # tracks the detector lost, being followed by image evidence (``lost``)
        self._following: dict[int, _Followed] = {}
        self.near_misses: dict[int, tuple[int, float]] = {}
        #: the tracks the latest ``assign`` started with a strong detection
        self.started: list[int] = []

    @staticmethod
    def _predict(state: _Live, index: int, offset: Offset) -> Box:
        """Where a live track's face is expected in frame ``index`` (camera offset ``offset``)."""
        dt = index - state.frame
        cx0, cy0 = offset[0] - state.offset[0], offset[1] - state.offset[1]
        return shifted(state.box, cx0 + state.velocity[0] * dt, cy0 + state.velocity[1] * dt)

    def assign(self, index: int, detections: Detections, offset: Offset = (0.0, 0.0)) -> list[Mask]:
        """Track ids for ``detections`` of frame ``index``; ``offset``: the camera's position
        there (the sum of the frames' ``motion`` so far), so predictions follow the camera.
        The masks of tentative tracks are among them until ``release`` drops them."""
        cfg = self._config
        self._live = {t: s for t, s in self._live.items() if index - s.frame <= cfg.max_gap + 1}
        boxes = [tuple(map(float, b)) for b in detections.boxes]
        weak = [float(s) < cfg.new_track_score for s in detections.scores]
        track_of: dict[int, int] = {}
        tracks = list(self._live)
        if tracks and boxes:
            # every live track's prediction against every detection, at once (a crowd at a
            # low track threshold is hundreds of each)
            predicted = np.array([self._predict(self._live[t], index, offset) for t in tracks])
            found = np.array(boxes, np.float64)
            overlap = iou_matrix(predicted, found)
            psize = np.maximum((predicted[:, 2:] - predicted[:, :2]).max(axis=1), 1.0)
            size = np.maximum((found[:, 2:] - found[:, :2]).max(axis=1), 1.0)
            step = (found[None, :, :2] + found[None, :, 2:]) / 2 - (
                predicted[:, None, :2] + predicted[:, None, 2:]
            ) / 2
            near = np.hypot(step[..., 0], step[..., 1]) / psize[:, None]
            ratio = size[None, :] / psize[:, None]
            similar = (ratio >= 0.5) & (ratio <= 2.0)
            fit = overlap + np.maximum(0.0, 1.0 - near) * 0.5
            # a weak detection continues only a track of about its size (low scores come
            # with boxes around a face and its neighbours, or around a whole blurred crowd)
            match = (overlap >= cfg.match_iou) | ((near <= 0.5) & similar)
            rows, cols = np.nonzero(match & (similar | ~np.array(weak)[None, :]))
            # greedy, best pair first: strong detections pick first, confirmed tracks before
            # tentative ones, then the better fit (ties: lower track id, then detection)
            ids = np.array(tracks)[rows]
            rank = 2 * np.array(weak, np.int64)[cols] + np.isin(ids, list(self._tentative))
            order = np.lexsort((cols, ids, -fit[rows, cols], rank))
            taken: set[int] = set()
            for candidate, j in zip(ids[order].tolist(), cols[order].tolist(), strict=True):
                if candidate in taken or j in track_of:
                    continue
                taken.add(candidate)
                track_of[j] = candidate
        masks = []
        self.started = []
        for j, box in enumerate(boxes):
            track = track_of.get(j)
            size = max(box[2] - box[0], box[3] - box[1])
            if weak[j] and size > self._weak_max and (track is None or track in self._tentative):
                self._near_miss(index, float(detections.scores[j]))
                continue
            if track is None:
                track = self._next_id
                self._next_id += 1
                self._live[track] = _Live(
                    box,  # type: ignore[arg-type]
                    index,
                    offset,
                    sightings=((index, box, offset),),  # type: ignore[arg-type]
                )
                if weak[j]:
                    self._tentative[track] = index
                else:
                    self.started.append(track)
            else:
                state = self._live[track]
                seen = (*state.sightings, (index, box, offset))[-VELOCITY_SIGHTINGS:]
                self._live[track] = _Live(
                    box,  # type: ignore[arg-type]
                    index,
                    offset,
                    robust_velocity(seen),  # type: ignore[arg-type]
                    seen,  # type: ignore[arg-type]
                    state.hits,
                )
            self._live[track].score = float(detections.scores[j])
            if weak[j]:
                self._live[track].hits += 1
            if track in self._tentative:
                if not weak[j] or 0 < cfg.confirm_hits <= self._live[track].hits:
                    del self._tentative[track]
                else:
                    self._tentative[track] = index
            landmarks = None
            if detections.landmarks is not None:
                landmarks = tuple((float(x), float(y)) for x, y in detections.landmarks[j])
            found_by = None
            if detections.sources is not None and self._members:
                bits = int(detections.sources[j])
                found_by = tuple(m for k, m in enumerate(self._members) if bits >> k & 1)
            masks.append(
                Mask(
                    track=track,
                    origin=Origin.DETECTED,
                    box=box,  # type: ignore[arg-type]
                    score=float(detections.scores[j]),
                    landmarks=landmarks,
                    found_by=found_by,
                )
            )
        return sorted(masks)

    def unmatched(self, index: int, detections: Detections, offset: Offset) -> list[Box]:
        """Where to look again in frame ``index`` (``TrackerConfig.recheck``): the predicted
        boxes of the confirmed tracks detected within :data:`RECHECK_REACH` frames that no
        detection of the frame lies on (no centre inside the prediction grown by half),
        the most recently detected first, at most ``recheck`` of them."""
        regions: list[Box] = []
        recent = sorted(self._live.items(), key=lambda item: (-item[1].frame, item[0]))
        for track, state in recent:
            if len(regions) == self._config.recheck or index - state.frame > RECHECK_REACH:
                break
            if track in self._tentative:
                continue
            box = self._predict(state, index, offset)
            if not centred_on(detections, box).any():
                regions.append(box)
        return regions

    def lost(
        self, index: int, seen: Collection[int], offset: Offset
    ) -> list[tuple[int, int, Box, Offset]]:
        """The confirmed tracks not ``seen`` in frame ``index`` that may be followed there by
        image evidence (``TrackerConfig.follow_span``): sighted (detected or followed) within
        :data:`FOLLOW_REACH` frames, detected within ``follow_span``, and, to start, missed
        for :data:`FOLLOW_AFTER` frames (a detector's one-frame flicker is the smoother's to
        bridge). At most :data:`FOLLOW_LIMIT`, those followed already first, then the most
        recently detected. Each as (track, frame of its latest sighting, its box there, its
        expected motion since: the camera's and its own). Following only adds masks: it
        changes nothing in how detections are tracked."""
        span = self._config.follow_span
        candidates = dict(self._following)
        for track, state in self._live.items():
            if track in self._tentative or index - state.frame < FOLLOW_AFTER:
                continue
            known = candidates.get(track)
            if known is None or known.frame < state.frame:  # detected since it was followed
                candidates[track] = _Followed(
                    state.frame, state.frame, state.box, state.offset, state.velocity, state.score
                )
        self._following = {
            track: followed
            for track, followed in candidates.items()
            if track not in seen
            and index - followed.detected <= span
            and index - followed.frame <= FOLLOW_REACH
        }
        order = sorted(
            self._following.items(),
            key=lambda item: (item[1].frame == item[1].detected, -item[1].detected, item[0]),
        )
        lost = []
        for track, followed in order[:FOLLOW_LIMIT]:
            dt = index - followed.frame
            shift = (
                offset[0] - followed.offset[0] + followed.velocity[0] * dt,
                offset[1] - followed.offset[1] + followed.velocity[1] * dt,
            )
            lost.append((track, followed.frame, followed.box, shift))
        return lost

    def followed(self, index: int, track: int, box: Box, offset: Offset) -> Mask:
        """A box ``lost``'s track was followed to in frame ``index``: its latest sighting by
        image evidence, as a mask (with its latest detection's score)."""
        state = replace(self._following[track], frame=index, box=box, offset=offset)
        self._following[track] = state
        return Mask(track=track, origin=Origin.FOLLOWED, box=box, score=state.score)

    def _near_miss(self, index: int, score: float) -> None:
        count, best = self.near_misses.get(index, (0, 0.0))
        self.near_misses[index] = (count + 1, max(best, round(score, 4)))

    def release(self, index: int, masks: Sequence[Mask]) -> list[Mask]:
        """``masks`` of frame ``index`` (``assign``'s, or a policy mask) less those of tracks
        still tentative, which are counted in ``near_misses``."""
        kept = []
        for mask in masks:
            if mask.track not in self._tentative:
                kept.append(mask)
                continue
            self._near_miss(index, mask.score)
        # a tentative track that ended before this frame can have no mask after it
        for track, last in list(self._tentative.items()):
            if last < index and track not in self._live:
                del self._tentative[track]
        return kept

    def predict(self, index: int, *, grow: float = 0.0) -> list[tuple[int, Box]]:
        """Where each live track is expected at frame ``index``: its last box moved at constant
        velocity (forwards, or backwards for a frame before its last detection) and grown by
        ``growth_per_frame`` per frame of staleness plus ``grow`` (a share of the box).

        Live mode's stand-in for the ``Smoother``, which needs look-ahead live mode cannot have.
        """
        cfg = self._config
        predicted = []
        for track, state in sorted(self._live.items()):
            dt = index - state.frame
            if dt > cfg.max_gap + 1 or track in self._tentative:
                continue
            vx, vy = state.velocity
            box = shifted(state.box, vx * dt, vy * dt, cfg.growth_per_frame * abs(dt) + grow)
            predicted.append((track, box))
        return predicted


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
        self._evidence: dict[int, list[tuple[int, Mask, Offset]]] = {}
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
        horizon = index - max(cfg.max_gap + 1, cfg.lead_out)
        self._prune(horizon)
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
        (f0, m0, o0), (f1, m1, o1) = before[-1], after[0]
        t = (index - f0) / (f1 - f0)
        a = shifted(m0.box, offset[0] - o0[0], offset[1] - o0[1])
        b = shifted(m1.box, offset[0] - o1[0], offset[1] - o1[1])
        blend = tuple(p + (q - p) * t for p, q in zip(a, b, strict=True))
        if union(mask.box, blend) == mask.box:  # type: ignore[arg-type]
            return None
        return Mask(
            track=mask.track,
            origin=Origin.INTERPOLATED,
            box=blend,  # type: ignore[arg-type]
            score=min(m0.score, m1.score),
        )

    def _derive(
        self, index: int, offset: Offset, points: list[tuple[int, Mask, Offset]]
    ) -> Mask | None:
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

        def moved(box: Box, at: Offset, dx: float = 0.0, dy: float = 0.0, grow: float = 0.0) -> Box:
            return shifted(box, offset[0] - at[0] + dx, offset[1] - at[1] + dy, grow)

        if before is not None and after is not None:
            (f0, m0, o0), (f1, m1, o1) = points[before], points[after]
            if f1 - f0 - 1 <= cfg.max_gap:
                # both ends carried to this frame with the camera, then blended
                t = (index - f0) / (f1 - f0)
                a, b = moved(m0.box, o0), moved(m1.box, o1)
                box = tuple(p + (q - p) * t for p, q in zip(a, b, strict=True))
                return Mask(
                    track=m0.track,
                    origin=Origin.INTERPOLATED,
                    box=box,  # type: ignore[arg-type]
                    score=min(m0.score, m1.score),
                )
        if (
            after is not None
            and points[after][0] - index <= cfg.lead_in
            and not self._crosses_cut(index, points[after][0])
        ):
            f1, m1, o1 = points[after]
            box = moved(m1.box, o1, grow=cfg.growth_per_frame * (f1 - index))
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
            vx, vy = robust_velocity([(f, m.box, o) for f, m, o in points[: before + 1]])
            dt = index - f0
            grow = cfg.growth_per_frame * dt
            box = union(moved(m0.box, o0, grow=grow), moved(m0.box, o0, vx * dt, vy * dt, grow))
            return Mask(track=m0.track, origin=Origin.EXTRAPOLATED, box=box, score=m0.score)
        return None

    def _prune(self, horizon: int) -> None:
        """Forget evidence no frame at or after ``horizon`` can use (keep the last
        :data:`VELOCITY_SIGHTINGS` of each track)."""
        for track in list(self._evidence):
            points = self._evidence[track]
            if points[-1][0] < horizon:
                del self._evidence[track]
                continue
            keep = 0
            while keep < len(points) - VELOCITY_SIGHTINGS and points[keep + 1][0] < horizon:
                keep += 1
            if keep:
                del points[:keep]
