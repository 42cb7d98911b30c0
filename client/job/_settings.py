"""Detector settings and the presets that bundle them (fast, balanced, thorough)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from veil.core import ConfigError
from veil.track import TrackerConfig

from ._header import PresetChoice


class Preset(StrEnum):
    FAST = "fast"
    BALANCED = "balanced"
    THOROUGH = "thorough"


@dataclass(frozen=True, kw_only=True)
class DetectorSettings:
    """Which model runs, at what size and thresholds, where. ``max_side`` in pixels."""

    model: str = "yunet"
    max_side: int = 640
    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    provider: str = "cpu"
    batch_size: int = 4
    #: Track-aware threshold: the model runs down to this score; a detection below
    #: ``score_threshold`` (weak) is kept when it continues a track, or once its own track is
    #: confirmed (``TrackerConfig.confirm_hits``). None: off.
    track_threshold: float | None = None
    #: Second opinion: also detect on the horizontal mirror (about 2x detector time).
    flip: bool = False
    #: 2: also detect on 2x2 overlapping tiles upscaled 2x, for small faces (about 5x).
    tiles: int = 1
    #: Second opinion on dark or flat frames: detect again on the frame with its luma range
    #: stretched (``veil.core._detector.LowLightPass``; 2x detector time on those frames only).
    low_light: bool = True
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
    # on every hard clip. The model runs at the track threshold (``track_threshold``); a
    # detection below the new-track threshold (weak) is masked when it continues a track, or
    # when its own track is confirmed by ``confirm_hits`` weak sightings (a face faint in
    # every frame under heavy compression or in the dark, where a false positive flickers).
    # Dark frames are detected again stretched and at half the size (``low_light``; dim room
    # crf 35: fast 38.9 -> 11.2 %, balanced 13.2 -> 7.8 %); a detection is joined by the
    # blend of its track's sightings 2 frames around it (``steady_span``: holes 41 -> 24);
    # lead-in/out of 20/12 frames (balanced 2.9 -> 2.2 % for collateral 14.5 -> 16.9 %); a
    # track the detector loses is followed by the texture in its box for up to 50 frames past
    # its last detection (``follow_span``) and, in balanced and thorough, looked for again in
    # a window around it enlarged to a 64 px face (``recheck``: 4 / 8 windows a frame):
    # balanced 2.16 -> 1.80 % by record, 1.46 -> 1.22 % by pixels (`make eval`).
    # Fast: YuNet at 640 px, weak from 0.25: 5.1 %. Balanced: YuNet at 800 px, weak from
    # 0.12: 1.17 % at 61 CPU ms a frame, WIDER profile faces 87.4 % against typical 96.6 %
    # (at 640 px from 0.15: 1.80 % at 47.5 ms, profile 77.8 / 94.0 %; paid for by drawing a
    # face's masks once and one thumbnail a frame); at 1280 px 1.9 % for 1.7x (and 23.5 % in
    # the dim room), with the mirror pass 1.6 % for 1.9x. Thorough: CenterFace at 1280 px
    # fused with YuNet at 800 and 320 px (the coarse scale holds large faces in noise: dim
    # room 14.3 -> 5.6 % against YuNet at 1280 px), weak from 0.12, every frame, two weak
    # sightings confirm: 0.45 % by record, 0.27 % by pixels, below balanced or level with it
    # on every clip by pixels (with YuNet at 640 px, weak from 0.15: 0.66 / 0.42 %, above the
    # new balanced in low light and on small faces). The price is collateral: 20 % of the
    # frame outside labelled faces for balanced by record, most of it on the unlabelled
    # small heads of crowds.
    # Fused thresholds are on the shared scale (veil.server.engine._fusion: 0.4 runs YuNet at 0.52,
    # CenterFace at 0.32). Fast and balanced detect every other frame, and the frames
    # between wherever the faces moved (adaptive stride, docs/throughput.md).
    Preset.FAST: (
        DetectorSettings(
            model="yunet", max_side=640, score_threshold=0.5, track_threshold=0.25, stride=2
        ),
        TrackerConfig(
            max_gap=12, lead_in=20, lead_out=12, confirm_hits=3, steady_span=2, follow_span=50
        ),
    ),
    Preset.BALANCED: (
        DetectorSettings(
            model="yunet", max_side=800, score_threshold=0.5, track_threshold=0.12, stride=2
        ),
        TrackerConfig(
            max_gap=12,
            lead_in=20,
            lead_out=12,
            confirm_hits=3,
            steady_span=2,
            follow_span=50,
            recheck=4,
        ),
    ),
    Preset.THOROUGH: (
        DetectorSettings(
            model="centerface+yunet@800+yunet@320",
            max_side=1280,
            score_threshold=0.4,
            track_threshold=0.12,
            # its 320 px member already looks coarsely: the pass cost 1.3x for nothing
            low_light=False,
        ),
        TrackerConfig(
            max_gap=15,
            lead_in=20,
            lead_out=12,
            confirm_hits=2,
            steady_span=2,
            follow_span=50,
            recheck=8,
        ),
    ),
}


@dataclass(frozen=True, init=False)
class DetectionConfig:
    """Everything that decides the detection record: preset, detector and tracker settings.

    ``preset`` (a :class:`Preset` or its name) supplies whatever ``detector`` and ``tracker``
    leave out, so ``DetectionConfig(preset="fast")`` runs the fast preset's detector. Settings
    that differ from the preset's are named in the record (``preset_overrides``).
    """

    preset: Preset
    detector: DetectorSettings
    tracker: TrackerConfig

    def __init__(
        self,
        *,
        preset: Preset | str = Preset.BALANCED,
        detector: DetectorSettings | None = None,
        tracker: TrackerConfig | None = None,
    ) -> None:
        try:
            preset = Preset(preset)
        except ValueError:
            names = ", ".join(p.value for p in Preset)
            raise ConfigError(f"unknown preset {preset!r}; choose one of {names}") from None
        base_detector, base_tracker = PRESETS[preset]
        object.__setattr__(self, "preset", preset)
        object.__setattr__(self, "detector", detector or base_detector)
        object.__setattr__(self, "tracker", tracker or base_tracker)

    @property
    def tracker_for_run(self) -> TrackerConfig:
        """The tracker settings a detection run uses: with a track threshold, only detections
        at ``score_threshold`` or above start tracks (the model runs at the track threshold)."""
        if self.detector.track_threshold is None:
            return self.tracker
        return replace(self.tracker, new_track_score=self.detector.score_threshold)

    @property
    def overrides(self) -> list[str]:
        """The settings that differ from the preset's, as ``detector.NAME``/``tracker.NAME``."""
        base_detector, base_tracker = PRESETS[self.preset]
        return [
            f"{part}.{f.name}"
            for part, ours, base in (
                ("detector", self.detector, base_detector),
                ("tracker", self.tracker, base_tracker),
            )
            for f in fields(ours)
            if getattr(ours, f.name) != getattr(base, f.name)
        ]

    @property
    def choice(self) -> PresetChoice:
        """The preset and the settings changed from it, as the record names them."""
        return PresetChoice(preset=self.preset.value, preset_overrides=tuple(self.overrides))

    def to_record(self) -> dict[str, Any]:
        """What the record's detector block says of the preset."""
        return self.choice.to_json()

    @classmethod
    def from_preset(
        cls,
        preset: Preset | str = Preset.BALANCED,
        *,
        detector: dict[str, Any] | None = None,
        tracker: dict[str, Any] | None = None,
    ) -> DetectionConfig:
        """The preset's settings with the given fields overridden (None values ignored)."""
        base = cls(preset=preset)
        return cls(
            preset=base.preset,
            detector=base.detector.updated(**(detector or {})),
            tracker=replace(
                base.tracker, **{k: v for k, v in (tracker or {}).items() if v is not None}
            ),
        )
