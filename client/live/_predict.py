"""Where live mode expects each face in a frame no detection of its own covers: live mode's
motion model, in one place.

The boxes come from the offline ``Associator`` (``Associator.predict``) and move by the one
motion model offline boxes move by (``veil.track``'s ``_motion``): the camera's motion,
measured on each frame's arrival, plus the face's own robust velocity (the median step of its
last sightings with the camera's taken out, capped at a share of its size); grown with
staleness. On top of it, live mode widens every predicted box by the model's uncertainty
(it cannot wait for the next detection, as the offline smoother does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from veil.core import Detections, Mask, Offset, Origin
from veil.track import STILL, Associator, TrackerConfig

from ._config import LiveConfig

__all__ = ["Predictor", "live_tracker"]


def live_tracker(config: LiveConfig, rate: Fraction) -> TrackerConfig:
    """The tracker a live run uses: tracks predicted for ``track_s``, boxes grown by live's
    ``growth_per_frame``. Following lost faces and second looks are offline passes (frames
    held, the detector's answers in order): live mode runs neither, and its record says so."""
    gap = min(300, max(config.tracker.max_gap, config.track_frames(rate)))
    return replace(
        config.tracker,
        max_gap=gap,
        growth_per_frame=config.growth_per_frame,
        follow_span=0,
        recheck=0,
    )


class Predictor:
    """The live tracks: detections go in (:meth:`detected`), predictions come out
    (:meth:`predicted`), each with the camera's position at its frame."""

    def __init__(
        self,
        config: LiveConfig,
        rate: Fraction,
        members: Sequence[str],
        frame_size: tuple[int, int],
    ) -> None:
        self.tracker = live_tracker(config, rate)
        self._associator = Associator(self.tracker, members, frame_size)
        self._uncertainty = config.velocity_uncertainty

    def detected(self, index: int, detections: Detections, offset: Offset) -> list[Mask]:
        """Frame ``index``'s detections (the camera at ``offset``), as masks of their tracks,
        tentative ones too: offline a frame waits until a weak sighting's track is confirmed
        or not, live cannot, so a weak sighting masks its own frame (a near miss all the
        same until confirmed) and is predicted into others only once confirmed."""
        masks = self._associator.assign(index, detections, offset)
        self._associator.release(index, masks)  # counts the near misses
        return masks

    def predicted(
        self,
        index: int,
        offset: Offset,
        grow: float,
        exclude: set[int] | frozenset[int] = frozenset(),
    ) -> list[Mask]:
        """Track predictions at ``index`` (the camera at ``offset``): carried by the motion
        model, grown with staleness by the tracker (``growth_per_frame``), by ``grow``, and by
        the model's uncertainty: each side moves out by ``velocity_uncertainty`` x how far
        the model carried the box (the face's own speed, or the scene's median if faster, x
        the frames since its detection, plus the camera's motion since). A track with no
        velocity of its own (seen once, or not moving) may stand still or move like the
        others: its sides move out by at least the whole of that distance."""
        predictions = self._associator.predict(index, offset=offset, grow=grow)
        speeds = sorted(math.hypot(*p.velocity) for p in predictions if p.velocity != STILL)
        scene = speeds[len(speeds) // 2] if speeds else 0.0
        masks = []
        for p in predictions:
            if p.track in exclude:
                continue
            speed = max(math.hypot(*p.velocity), scene)
            share = max(1.0, self._uncertainty) if p.velocity == STILL else self._uncertainty
            camera = math.hypot(offset[0] - p.offset[0], offset[1] - p.offset[1])
            pad = share * (speed * abs(p.stale) + camera)
            box = (p.box[0] - pad, p.box[1] - pad, p.box[2] + pad, p.box[3] + pad)
            masks.append(Mask(track=p.track, origin=Origin.EXTRAPOLATED, box=box, score=p.score))
        return masks
