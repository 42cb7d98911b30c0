"""How the tracker is tuned: one frozen config, validated once and recorded in the detection
record, so a record replays (``veil render``) to the masks it was made with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veil.core import ConfigError


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
    #: ``_associator.RECHECK_REACH`` frames: occluded, turned, too small at the model's
    #: input) is looked for again in a window around it, enlarged so the face is
    #: ``RECHECK_FACE`` px (``veil.job``); at most this many windows a frame. 0: off.
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
