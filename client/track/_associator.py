"""Track ids for detections, one frame at a time, in frame order: greedy matching on overlap
and centre distance against each live track's prediction (``_motion``: the camera's motion
plus the face's own). Also where the detector should look again (``unmatched``), which lost
tracks image evidence may follow (``lost``), and, live, where each track is expected
(``predict``).

Weighed and not taken: norfair (Kalman tracking built for live use: a track is only reported
after ``initialization_delay`` hits, it cannot look ahead or fill gaps backwards, and it brings
scipy and rich) and ByteTrack as packaged in supervision (a large dependency for a matching
step of forty lines). Offline smoothing with look-ahead (``Smoother``) is the part that matters
here, and no library does it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from veil.core import POLICY_TRACK, Box, Detections, Mask, Offset, Origin, iou_matrix, shifted

from ._config import TrackerConfig
from ._motion import (
    ORIGIN,
    STILL,
    VELOCITY_SIGHTINGS,
    Sighting,
    Velocity,
    carried,
    expected_shift,
    robust_velocity,
)

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


def centred_on(detections: Detections, box: Box, grow: float = 0.5) -> npt.NDArray[np.bool_]:
    """Which of ``detections`` have their centre on ``box`` grown by ``grow`` of its size."""
    x0, y0, x1, y1 = shifted(box, 0.0, 0.0, grow)
    centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2
    return (
        (centres[:, 0] >= x0)
        & (centres[:, 0] <= x1)
        & (centres[:, 1] >= y0)
        & (centres[:, 1] <= y1)
    )


@dataclass
class _Live:
    box: Box
    frame: int
    offset: Offset  # the camera's position at ``frame`` (see ``_motion``)
    velocity: Velocity = STILL  # the face's own motion, per frame
    # the latest sightings the velocity is taken from
    sightings: tuple[Sighting, ...] = ()
    # weak sightings so far (see TrackerConfig.confirm_hits)
    hits: int = 0
    # the score of its latest detection
    score: float = 0.0


class Prediction(NamedTuple):
    """Where a live track is expected in a frame (``Associator.predict``)."""

    track: int
    box: Box
    stale: int  # frames since its latest detection
    velocity: Velocity  # the face's own motion, per frame, the box was carried by
    score: float  # its latest detection's
    offset: Offset  # the camera's position at its latest detection


@dataclass(frozen=True)
class _Followed:
    """A track the detector lost, as followed by image evidence (``Associator.followed``)."""

    detected: int  # the frame of its latest detection
    frame: int  # its latest sighting by image evidence
    box: Box
    offset: Offset  # the camera's position at ``frame``
    velocity: Velocity  # its own motion, from its detections
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
        return carried(
            state.box, index - state.frame, start=state.offset, end=offset, velocity=state.velocity
        )

    def assign(self, index: int, detections: Detections, offset: Offset = (0.0, 0.0)) -> list[Mask]:
        """Track ids for ``detections`` of frame ``index``; ``offset``: the camera's position
        there (the sum of the frames' ``motion`` so far), so predictions follow the camera.
        The masks of tentative tracks are among them until ``release`` drops them."""
        cfg = self._config
        self._live = {t: s for t, s in self._live.items() if index - s.frame <= cfg.max_gap + 1}
        boxes = [cast(Box, tuple(map(float, b))) for b in detections.boxes]
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
                    box,
                    index,
                    offset,
                    sightings=((index, box, offset),),
                )
                if weak[j]:
                    self._tentative[track] = index
                else:
                    self.started.append(track)
            else:
                state = self._live[track]
                seen = (*state.sightings, (index, box, offset))[-VELOCITY_SIGHTINGS:]
                self._live[track] = _Live(
                    box,
                    index,
                    offset,
                    robust_velocity(seen),
                    seen,
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
                    box=box,
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
            shift = expected_shift(
                index - followed.frame,
                start=followed.offset,
                end=offset,
                velocity=followed.velocity,
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

    def predict(
        self, index: int, *, offset: Offset = ORIGIN, grow: float = 0.0
    ) -> list[Prediction]:
        """Where each live track is expected at frame ``index`` (the camera at ``offset``):
        its last box carried by the motion model (the camera's motion since, plus the face's
        own velocity; backwards for a frame before its last detection) and grown by
        ``growth_per_frame`` per frame of staleness plus ``grow`` (a share of the box).

        Live mode's stand-in for the ``Smoother``, which needs look-ahead live mode cannot have.
        """
        cfg = self._config
        predicted = []
        for track, state in sorted(self._live.items()):
            dt = index - state.frame
            if dt > cfg.max_gap + 1 or track in self._tentative:
                continue
            box = carried(
                state.box,
                dt,
                start=state.offset,
                end=offset,
                velocity=state.velocity,
                growth=cfg.growth_per_frame,
                grow=grow,
            )
            predicted.append(Prediction(track, box, dt, state.velocity, state.score, state.offset))
        return predicted
