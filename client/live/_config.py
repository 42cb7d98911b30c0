"""Live-mode settings: the delay budget, the trust horizon, what an outage does, reconnecting.

Frozen and validated once, here: the engine and the policy read them, never re-check them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from veil.core import ConfigError, backoff
from veil.mask import Style
from veil.media import LiveEncoder
from veil.track import TrackerConfig

__all__ = ["LiveConfig", "OutagePolicy", "ReconnectPolicy"]


class OutagePolicy(StrEnum):
    """What happens when the detector is gone for longer than the delay budget."""

    MASK = "mask"  # mask every frame whole until it is back
    STOP = "stop"  # finish the output (all masked) and stop with an error


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """Reconnecting to a lost network source: sleep ``initial_s``, ``multiplier`` times more
    after each failure, at most ``max_s``; ``attempts`` failures in a row end the run
    (None: never give up)."""

    initial_s: float = 0.5
    max_s: float = 10.0
    multiplier: float = 2.0
    attempts: int | None = None

    def backoff(self, failures: int) -> float:
        return backoff(
            failures, initial=self.initial_s, multiplier=self.multiplier, ceiling=self.max_s
        )


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """Live-mode settings. Times in seconds; shares of the face box."""

    delay_s: float = 0.2
    on_outage: OutagePolicy = OutagePolicy.MASK
    #: extra growth of predicted boxes for a frame whose own detection is late or failed
    late_margin: float = 0.3
    #: how long a track keeps being predicted after its last detection
    track_s: float = 1.0
    #: growth of a predicted box per frame since its track's last detection (live mode has
    #: no look-ahead to interpolate with, and the camera may pan: more than offline's 0.03)
    growth_per_frame: float = 0.06
    #: the trust horizon (fail closed): a frame is masked from its detection or from track
    #: predictions only when the detections that came back around it are at most this much
    #: media time apart, in whole frames, at least one (0.12 s: 3 frames at 25 or 30 fps):
    #: its own and the one before it (a face missed in one is in the other's tracks), the
    #: two it lies between (the later one's boxes carried back: for a track seen in both, an
    #: interpolation), or, after the newest one, that one and the one before it. Otherwise it
    #: is masked whole. The trade-off: when the detector cannot keep up (a stride above the
    #: horizon: a slow detector, a large frame, a loaded CPU), or its answer is not back
    #: within the delay, frames are masked whole; raising it (and ``extrapolate_s``) masks
    #: fewer whole at the risk of a leak (a face the detector missed, one that entered since,
    #: or a prediction outrun by the camera)
    trust_s: float = 0.12
    #: the horizon for a frame after the newest detection that came back (none after it yet:
    #: not sent to the detector, or its own detection late): predictions extrapolated this far
    #: (in whole frames, may be 0: never) are trusted (0.04 s: 1 frame at 25 or 30 fps).
    #: Shorter than ``trust_s``: a face that entered since, or a camera that accelerates, pans
    #: or zooms, is not in the extrapolation, and would show
    extrapolate_s: float = 0.04
    #: extra growth of a predicted box, as a share of how far the motion model carried it:
    #: the face's own speed (or, if larger, the scene's median: a track with no velocity yet
    #: takes the scene's whole) x the frames since its detection, plus the camera's motion
    #: since. The model's uncertainty (a face turns, the camera accelerates or zooms); 1.0
    #: missed the fewest faces of 0.5, 0.75 and 1.0, for more collateral (docs/live.md, "One
    #: motion model")
    velocity_uncertainty: float = 1.0
    #: frames older than this when their turn comes are dropped (None: max(1 s, 3 x delay))
    max_lag_s: float | None = None
    read_timeout_s: float = 5.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    style: Style = field(default_factory=Style)
    encoder: LiveEncoder = field(default_factory=LiveEncoder)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_outage", OutagePolicy(self.on_outage))
        if not 0.02 <= self.delay_s <= 30:
            raise ConfigError(f"delay {self.delay_s * 1000:g} ms must be between 20 ms and 30 s")
        if not 0 <= self.late_margin <= 2:
            raise ConfigError(f"late_margin {self.late_margin} must be between 0 and 2")
        if not 0 < self.track_s <= 10:
            raise ConfigError(f"track_s {self.track_s} must be in (0, 10]")
        if not 0 <= self.growth_per_frame <= 0.5:
            raise ConfigError(f"growth_per_frame {self.growth_per_frame} must be in [0, 0.5]")
        if not 0 < self.trust_s <= 10:
            raise ConfigError(f"trust_s {self.trust_s} must be in (0, 10]")
        if not 0 <= self.extrapolate_s <= self.trust_s:
            raise ConfigError(f"extrapolate_s {self.extrapolate_s} must be in [0, trust_s]")
        if not 0 <= self.velocity_uncertainty <= 5:
            raise ConfigError(f"velocity_uncertainty {self.velocity_uncertainty} must be in [0, 5]")
        if self.max_lag_s is not None and self.max_lag_s < self.delay_s:
            raise ConfigError("max_lag_s must be at least the delay")

    def trust_frames(self, rate: Fraction) -> tuple[int, int]:
        """The trust horizons in whole frames at ``rate`` frames per second: between two
        detections (at least one), and after the newest one."""
        between = max(1, math.floor(rate * Fraction(self.trust_s) + Fraction(1, 1000)))
        after = math.floor(rate * Fraction(self.extrapolate_s) + Fraction(1, 1000))
        return between, min(after, between)

    def track_frames(self, rate: Fraction) -> int:
        """How long a track is predicted after its last detection (``track_s``), in whole
        frames at ``rate`` frames per second."""
        return round(rate * Fraction(self.track_s))

    @property
    def max_lag(self) -> float:
        return self.max_lag_s if self.max_lag_s is not None else max(1.0, 3 * self.delay_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "delay_ms": round(self.delay_s * 1000, 3),
            "on_outage": self.on_outage.value,
            "late_margin": self.late_margin,
            "track_s": self.track_s,
            "growth_per_frame": self.growth_per_frame,
            "trust_ms": round(self.trust_s * 1000, 3),
            "extrapolate_ms": round(self.extrapolate_s * 1000, 3),
            "velocity_uncertainty": self.velocity_uncertainty,
            "max_lag_ms": round(self.max_lag * 1000, 3),
        }
