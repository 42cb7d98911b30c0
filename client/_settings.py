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

    model: str = "yunet@640+yunet"
    max_side: int = 960
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
    # Picked on the leak-vs-cost Pareto front of `make sweep` (benchmarks/sweep_presets.py;
    # docs/quality.md, docs/pareto.png: public and generated GT clips, faces >= 20 px, by
    # record, against CPU ms a frame). YuNet found more faces than CenterFace for less time
    # on every hard clip. Fast: YuNet at 640 px (its own 0.5; 0.25 continues a track) leaks
    # 14.6 % where the old balanced (CenterFace 640) leaked 26.4 %, at 0.6x its cost.
    # Balanced: YuNet at two scales, fused: fit to 640 px (large faces in noise: on the
    # held-back low-light clip every detector lost at 1280 faces it found at 640) and to
    # 960 px (small faces): 8.0 % at about the old balanced's cost (1280 px: 7.2 % at 1.3x).
    # Thorough: CenterFace at 1280 px fused with YuNet at 640 and 1280 px, every frame:
    # 4.8 %, below balanced on every clip. Fused thresholds are on the shared scale
    # (veil.server._fusion: 0.4 runs YuNet at 0.52, CenterFace at 0.32). Lead-in/out and
    # gaps in frames were swept earlier on the same clips (docs/quality.md). Fast and
    # balanced detect every other frame, and the frames between wherever the faces moved
    # (adaptive stride, docs/throughput.md).
    Preset.FAST: (
        DetectorSettings(
            model="yunet", max_side=640, score_threshold=0.5, track_threshold=0.25, stride=2
        ),
        TrackerConfig(max_gap=12, lead_in=12, lead_out=8),
    ),
    Preset.BALANCED: (
        DetectorSettings(
            model="yunet@640+yunet",
            max_side=960,
            score_threshold=0.4,
            track_threshold=0.2,
            stride=2,
        ),
        TrackerConfig(max_gap=12, lead_in=12, lead_out=8),
    ),
    Preset.THOROUGH: (
        DetectorSettings(
            model="centerface+yunet@640+yunet",
            max_side=1280,
            score_threshold=0.4,
            track_threshold=0.2,
        ),
        TrackerConfig(max_gap=15, lead_in=10, lead_out=10),
    ),
}
