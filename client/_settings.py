"""Detector settings and the presets that bundle them (fast, balanced, thorough)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ._errors import ConfigError
from ._tracker import TrackerConfig


class Preset(StrEnum):
    FAST = "fast"
    BALANCED = "balanced"
    THOROUGH = "thorough"


@dataclass(frozen=True, kw_only=True)
class DetectorSettings:
    """Which model runs, at what size and thresholds, where. ``max_side`` in pixels."""

    model: str = "centerface"
    max_side: int = 640
    score_threshold: float = 0.4
    nms_threshold: float = 0.3
    provider: str = "cpu"
    batch_size: int = 4
    #: Track-aware threshold: detections down to this score are kept when they continue a
    #: track (``score_threshold`` still decides which may start one). None: off.
    track_threshold: float | None = None
    #: Second opinion: also detect on the horizontal mirror (about 2x detector time).
    flip: bool = False
    #: 2: also detect on 2x2 overlapping tiles upscaled 2x, for small faces (about 5x).
    tiles: int = 1
    #: Detect on every ``stride``-th frame (the key frames, and the last), and on the frames
    #: between two key frames whose faces disagree (moved, scaled, a cut); the tracker covers
    #: the rest (interpolated). 1: every frame. Recorded in the record.
    stride: int = 1

    def __post_init__(self) -> None:
        if not 32 <= self.max_side <= 8192:
            raise ConfigError(f"max_side {self.max_side} must be between 32 and 8192")
        if not 0 < self.score_threshold < 1:
            raise ConfigError(f"score_threshold {self.score_threshold} must be in (0, 1)")
        if not 0 < self.nms_threshold < 1:
            raise ConfigError(f"nms_threshold {self.nms_threshold} must be in (0, 1)")
        if not 1 <= self.batch_size <= 64:
            raise ConfigError(f"batch_size {self.batch_size} must be between 1 and 64")
        if (
            self.track_threshold is not None
            and not 0 < self.track_threshold <= self.score_threshold
        ):
            raise ConfigError(
                f"track_threshold {self.track_threshold} must be in (0, score_threshold]"
            )
        if self.tiles not in (1, 2):
            raise ConfigError(f"tiles {self.tiles} must be 1 or 2")
        if not 1 <= self.stride <= 8:
            raise ConfigError(f"stride {self.stride} must be between 1 and 8")

    @property
    def model_threshold(self) -> float:
        """The threshold the model runs at: the track threshold when there is one."""
        return self.score_threshold if self.track_threshold is None else self.track_threshold

    def updated(self, **changes: Any) -> DetectorSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[Preset, tuple[DetectorSettings, TrackerConfig]] = {
    # Lead-in/out and gaps are in frames, checked by `veil eval` (no leaks >= 20 px and no
    # single-frame holes on the public GT clips, docs/quality.md). Balanced's were swept on
    # the public and generated GT clips (27 settings, docs/quality.md): lead-in matters most
    # (4 -> 8 -> 12 frames: 30.5 -> 28.3 -> 26.9 % leak by record, collateral +0.2 points per
    # step), lead-out less, max_gap 8-12 not at all; 12 / 12 / 8 was taken.
    # Issue 5 (docs/quality.md): lead-in/out masks over frames with no face are most of the
    # collateral (e.g. past a hard cut), but shortening them raises leaks on the hard clips,
    # so they stay. Balanced gets no mirror pass: on WIDER stills it adds ~2 points to both
    # profile and frontal recall (the gap stays ~18) at ~2.5x detector time.
    # Fast and balanced detect every other frame, and the frames between wherever the faces
    # moved (adaptive stride, docs/throughput.md): on every GT clip the record's leak rate
    # stayed within a point of stride 1 (the same on the public clips), with 59-78 % of
    # frames detected on the moving-camera clips.
    Preset.FAST: (
        DetectorSettings(
            model="retinaface_mnet025",
            max_side=640,
            score_threshold=0.5,
            track_threshold=0.3,
            nms_threshold=0.4,
            stride=2,
        ),
        TrackerConfig(max_gap=8, lead_in=6, lead_out=6),
    ),
    Preset.BALANCED: (
        DetectorSettings(
            model="centerface", max_side=640, score_threshold=0.4, track_threshold=0.2, stride=2
        ),
        TrackerConfig(max_gap=12, lead_in=12, lead_out=8),
    ),
    Preset.THOROUGH: (
        DetectorSettings(
            model="centerface", max_side=1280, score_threshold=0.3, track_threshold=0.15, flip=True
        ),
        TrackerConfig(max_gap=15, lead_in=10, lead_out=10),
    ),
}
