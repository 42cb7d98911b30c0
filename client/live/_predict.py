"""Where live mode expects each face in a frame no detection of its own covers: live mode's
motion model, in one place.

The boxes come from the offline ``Associator`` (``Associator.predict``: each track's last box
moved at its robust velocity, ``veil.track.robust_velocity``, the median step of its last
sightings, capped at a share of its size; grown with staleness). Live mode measures no camera
motion, so that velocity holds the camera's too. On top of it, live mode widens every
predicted box by the velocity's uncertainty, from its own estimate of each track's speed:
the step between the track's last two detections (uncapped), and the scene's median speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from veil.core import Box, Detections, Mask, Origin, centre
from veil.track import Associator, TrackerConfig

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
    (:meth:`predicted`)."""

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
        # tracks not detected for this many frames are forgotten (once there are many)
        self._forget = 2 * max(1, config.track_frames(rate))
        self._scores: dict[int, float] = {}
        # each track's last detected frame and box, and its velocity (px per frame)
        self._motion: dict[int, tuple[int, Box, tuple[float, float]]] = {}

    def detected(self, index: int, detections: Detections) -> list[Mask]:
        """Frame ``index``'s detections, as masks of their tracks (tentative ones held back,
        as offline)."""
        masks = self._associator.release(index, self._associator.assign(index, detections))
        for mask in masks:
            self._scores[mask.track] = mask.score
            self._track_motion(index, mask)
        return masks

    def _track_motion(self, index: int, mask: Mask) -> None:
        last = self._motion.get(mask.track)
        velocity = (0.0, 0.0)
        if last is not None and index > last[0]:
            (ox, oy), (nx, ny) = centre(last[1]), centre(mask.box)
            velocity = ((nx - ox) / (index - last[0]), (ny - oy) / (index - last[0]))
        self._motion[mask.track] = (index, mask.box, velocity)
        if len(self._motion) > 256:  # tracks long gone
            horizon = index - self._forget
            self._motion = {t: m for t, m in self._motion.items() if m[0] >= horizon}

    def predicted(
        self,
        index: int,
        grow: float,
        exclude: set[int] | frozenset[int] = frozenset(),
    ) -> list[Mask]:
        """Track predictions at ``index``: constant velocity, grown with staleness by the
        tracker (``growth_per_frame``), by ``grow``, and by the velocity's uncertainty: each
        side moves out by ``velocity_uncertainty`` x the track's speed (the scene's median
        track speed if faster) x the frames since it was detected. A track with no velocity of
        its own (seen once, or not moving) may stand still or move with the scene (a face
        coming in at the frame's edge as the camera pans), so its sides move out by the
        scene's whole speed."""
        speeds = sorted(math.hypot(*m[2]) for m in self._motion.values() if m[2] != (0.0, 0.0))
        scene = speeds[len(speeds) // 2] if speeds else 0.0
        masks = []
        for track, box in self._associator.predict(index, grow=grow):
            if track in exclude:
                continue
            motion = self._motion.get(track)
            if motion is not None:
                speed = max(math.hypot(*motion[2]), scene)
                share = 1.0 if motion[2] == (0.0, 0.0) else self._uncertainty
                pad = max(share, self._uncertainty) * speed * abs(index - motion[0])
                box = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
            score = self._scores.get(track, 0.0)
            masks.append(Mask(track=track, origin=Origin.EXTRAPOLATED, box=box, score=score))
        return masks
