"""The Python API the CLI calls: detect, render, anonymize."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._detector import Detector
from ._errors import DetectorError
from ._media import EncoderSettings
from ._pipeline import JobResult, run_job
from ._record import Record
from ._settings import PRESETS, DetectorSettings, Preset
from ._style import Style
from ._tracker import TrackerConfig


@dataclass(frozen=True, kw_only=True)
class DetectionConfig:
    """Everything that decides the detection record: preset, detector and tracker settings."""

    preset: Preset = Preset.BALANCED
    detector: DetectorSettings = field(default_factory=lambda: PRESETS[Preset.BALANCED][0])
    tracker: TrackerConfig = field(default_factory=lambda: PRESETS[Preset.BALANCED][1])

    @classmethod
    def from_preset(
        cls,
        preset: Preset | str = Preset.BALANCED,
        *,
        detector: dict[str, Any] | None = None,
        tracker: dict[str, Any] | None = None,
    ) -> DetectionConfig:
        """The preset's settings with the given fields overridden (None values ignored)."""
        preset = Preset(preset)
        base_detector, base_tracker = PRESETS[preset]
        from dataclasses import replace

        return cls(
            preset=preset,
            detector=base_detector.updated(**(detector or {})),
            tracker=replace(
                base_tracker, **{k: v for k, v in (tracker or {}).items() if v is not None}
            ),
        )


def open_detector(settings: DetectorSettings) -> Detector:
    """The in-process detector (onnxruntime) for ``settings``."""
    try:
        from veil.server import load_detector
    except ImportError as exc:
        raise DetectorError(
            f"the in-process detector needs onnxruntime ({exc}); install veil[local]"
        ) from exc
    try:
        return load_detector(
            settings.model,
            max_side=settings.max_side,
            score_threshold=settings.score_threshold,
            nms_threshold=settings.nms_threshold,
            provider=settings.provider,
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise DetectorError(f"cannot load detector {settings.model!r}: {exc}") from exc


def _detect_job(
    input: Path,
    config: DetectionConfig,
    detector: Detector | None,
    **job: Any,
) -> JobResult:
    owned = detector is None
    detector = detector or open_detector(config.detector)
    try:
        detector_json = detector.info.to_json() | {"preset": config.preset.value}
        return run_job(
            Path(input),
            detector=detector,
            detector_json=detector_json,
            tracker=config.tracker,
            batch_size=config.detector.batch_size,
            **job,
        )
    finally:
        if owned:
            detector.close()


def detect(
    input: Path | str,
    record: Path | str | None = None,
    *,
    config: DetectionConfig | None = None,
    detector: Detector | None = None,
    progress: bool = False,
) -> Record:
    """Find and track every face in ``input``; write the record to ``record`` if given."""
    result = _detect_job(
        Path(input),
        config or DetectionConfig(),
        detector,
        record_path=None if record is None else Path(record),
        progress=progress,
    )
    return result.record


def render(
    input: Path | str,
    record: Record | Path | str,
    output: Path | str,
    *,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mask ``input`` as ``record`` says; writes ``output`` and ``output.manifest.json``."""
    if not isinstance(record, Record):
        record = Record.load(Path(record))
    result = run_job(
        Path(input),
        record=record,
        output=Path(output),
        style=style,
        encoder=encoder,
        progress=progress,
    )
    assert result.manifest is not None
    return result.manifest


def default_record_path(output: Path | str) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".veil.json")


def anonymize(
    input: Path | str,
    output: Path | str,
    *,
    record: Path | str | None = None,
    write_record: bool = True,
    config: DetectionConfig | None = None,
    detector: Detector | None = None,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
) -> JobResult:
    """Detect, track and mask in one pass; the record goes beside ``output`` by default."""
    record_path = None
    if write_record:
        record_path = Path(record) if record is not None else default_record_path(output)
    return _detect_job(
        Path(input),
        config or DetectionConfig(),
        detector,
        record_path=record_path,
        output=Path(output),
        style=style,
        encoder=encoder,
        progress=progress,
    )
