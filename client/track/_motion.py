"""The motion model: where a face is in a frame it was not seen in, the one rule every carried
box follows (the associator's predictions, the shift ``follow`` starts its search from, the
smoother's gap bridging, lead-in, lead-out and steadying).

A face's image motion is the camera's plus its own. The camera's is measured apart, frame to
frame (``CameraMotion``), and summed into its *position*: each sighting keeps the camera's
position at its frame, and the camera's motion between two frames is the difference of their
positions. The face's own motion is the median step of its latest sightings with the camera's
taken out, capped at a share of its size (``robust_velocity``). A carried box grows with the
frames it is carried, as the caller asks: the longer since a sighting, the less sure the place.

Live mode measures the camera's motion as each frame arrives and carries its predictions by
this model too (``veil.live``'s ``Predictor``).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from veil.core import Box, Offset, centre, shifted

#: A face's own motion, pixels per frame (x, y).
Velocity = tuple[float, float]
#: One sighting of a face: its frame, its box there, and the camera's position at that frame.
Sighting = tuple[int, Box, Offset]

STILL: Velocity = (0.0, 0.0)
ORIGIN: Offset = (0.0, 0.0)

#: Sightings a carried track's velocity is taken from: the median of the steps between them.
#: From the last two alone, jitter made a velocity that flew off the face (issue 18: a 1080p
#: street clip's lead-out drifted 11 px a frame away from a face that barely moved).
VELOCITY_SIGHTINGS = 5
#: The most a face is taken to move by itself in a frame, as a share of its size (the
#: camera's motion is measured apart).
MAX_OWN_SPEED = 0.25


def _own_velocity(a: Sighting, b: Sighting) -> Velocity:
    """A face's own motion per frame between two sightings: its image motion less the
    camera's."""
    (frame0, box0, offset0), (frame1, box1, offset1) = a, b
    (x0, y0), (x1, y1) = centre(box0), centre(box1)
    dt = frame1 - frame0
    return (
        ((x1 - x0) - (offset1[0] - offset0[0])) / dt,
        ((y1 - y0) - (offset1[1] - offset0[1])) / dt,
    )


def robust_velocity(points: Sequence[Sighting]) -> Velocity:
    """A face's own motion per frame at its latest sighting (``points``: its sightings, in
    order): the median step of the last :data:`VELOCITY_SIGHTINGS`, each component at most
    :data:`MAX_OWN_SPEED` of its size."""
    recent = points[-VELOCITY_SIGHTINGS:]
    if len(recent) < 2:
        return STILL
    steps = [
        _own_velocity(a, b)
        for a, b in itertools.pairwise(recent)
        if b[0] != a[0]  # two sightings in one frame (a detection and a reviewer's box)
    ]
    if not steps:
        return STILL
    last = recent[-1][1]
    limit = MAX_OWN_SPEED * max(last[2] - last[0], last[3] - last[1])
    vx, vy = (statistics.median(s[axis] for s in steps) for axis in (0, 1))
    return (max(-limit, min(limit, vx)), max(-limit, min(limit, vy)))


def expected_shift(
    frames: int, *, start: Offset = ORIGIN, end: Offset = ORIGIN, velocity: Velocity = STILL
) -> Offset:
    """How far a face moves in the image over ``frames`` frames (back, when negative): the
    camera's motion from its position ``start`` to its position ``end``, plus ``frames``
    steps of the face's own ``velocity``."""
    return (
        end[0] - start[0] + velocity[0] * frames,
        end[1] - start[1] + velocity[1] * frames,
    )


def carried(
    box: Box,
    frames: int,
    *,
    start: Offset = ORIGIN,
    end: Offset = ORIGIN,
    velocity: Velocity = STILL,
    growth: float = 0.0,
    grow: float = 0.0,
) -> Box:
    """``box`` carried ``frames`` frames on (back, when negative): moved by
    :func:`expected_shift` and grown, about its centre, by ``growth`` of its size per frame
    carried plus ``grow``."""
    dx, dy = expected_shift(frames, start=start, end=end, velocity=velocity)
    return shifted(box, dx, dy, growth * abs(frames) + grow)
