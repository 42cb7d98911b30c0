"""A cloud job's settings on the wire (``veil.v1.JobStart``).

The client sends every setting explicitly (:func:`job_start`): the preset's name, the
detector and tracker settings it resolved, the mask style and the encoder, so the server
runs exactly what the same command runs on-prem. :func:`read_job_start` turns them back into
a :class:`~veil.DetectionConfig`, a :class:`~veil.Style` and :class:`~veil.EncoderSettings`;
unset (zero) fields take veil's defaults, invalid values raise ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from veil.job import DetectionConfig, DetectorSettings, Preset
from veil.mask import Style
from veil.media import EncoderSettings
from veil.track import TrackerConfig
from veil.v1 import detection_pb2 as pb

from ._errors import WireError

__all__ = ["JobSettings", "job_start", "read_job_start"]


class JobSettings(NamedTuple):
    """What a cloud job runs: detection, mask style, encoder."""

    config: DetectionConfig
    style: Style
    encoder: EncoderSettings


def job_start(
    *,
    input_name: str,
    input_size: int,
    output_name: str,
    write_record: bool,
    preset: str,
    detector: DetectorSettings,
    tracker: TrackerConfig,
    style: Style,
    encoder: EncoderSettings,
    drop_streams: Sequence[int] = (),
) -> pb.JobStart:
    """The ``veil.v1.JobStart`` for these settings (all given explicitly); ``drop_streams``
    are the input's other picture streams, left out of the output (``--drop-stream``)."""
    return pb.JobStart(
        input_name=input_name,
        input_size=input_size,
        output_name=output_name,
        write_record=write_record,
        preset=preset,
        detector=pb.DetectorSettings(
            model=detector.model,
            max_side=detector.max_side,
            score_threshold=detector.score_threshold,
            nms_threshold=detector.nms_threshold,
            batch_size=detector.batch_size,
            track_threshold=detector.track_threshold,
            stride=detector.stride,
            flip=detector.flip,
            tiles=detector.tiles,
            low_light=detector.low_light,
        ),
        tracker=pb.TrackerSettings(
            set=True,
            max_gap=tracker.max_gap,
            lead_in=tracker.lead_in,
            lead_out=tracker.lead_out,
            match_iou=tracker.match_iou,
            growth_per_frame=tracker.growth_per_frame,
            confirm_hits=tracker.confirm_hits,
            steady_span=tracker.steady_span,
            follow_span=tracker.follow_span,
            recheck=tracker.recheck,
        ),
        style=pb.StyleSettings(
            set=True,
            effect=style.effect.value,
            shape=style.shape.value,
            margin=style.margin,
            feather=style.feather,
            blur_strength=style.blur_strength,
            pixel_blocks=style.pixel_blocks,
            color=list(style.color),
        ),
        encoder=pb.EncoderOptions(
            set=True,
            codec=encoder.codec or "",
            preset=encoder.preset,
            crf=encoder.crf,
            pix_fmt=encoder.pix_fmt or "",
            threads=encoder.threads,
        ),
        drop_streams=list(drop_streams),
    )


def read_job_start(start: pb.JobStart) -> JobSettings:
    """The settings ``start`` carries; an unknown preset is a :class:`WireError`, values out
    of range a ``ConfigError``."""
    try:
        preset = Preset(start.preset or Preset.BALANCED.value)
    except ValueError:
        raise WireError(f"unknown preset {start.preset!r}") from None
    d = start.detector
    detector = {
        "model": d.model or None,
        "max_side": d.max_side or None,
        "score_threshold": d.score_threshold or None,
        "nms_threshold": d.nms_threshold or None,
        "batch_size": d.batch_size or None,
        "stride": d.stride or None,
        "tiles": d.tiles or None,
        "flip": d.flip,
    }
    tracker: dict[str, Any] = {}
    if start.tracker.set:
        t = start.tracker
        tracker = {
            "max_gap": t.max_gap,
            "lead_in": t.lead_in,
            "lead_out": t.lead_out,
            "match_iou": t.match_iou,
            "growth_per_frame": t.growth_per_frame,
            "confirm_hits": t.confirm_hits,
            "steady_span": t.steady_span,
            "follow_span": t.follow_span,
            "recheck": t.recheck,
        }
    config = DetectionConfig.from_preset(preset, detector=detector, tracker=tracker)
    if d.model:  # the client's detector settings, all given: its track threshold or none
        track = d.track_threshold if d.HasField("track_threshold") else None
        config = DetectionConfig(
            preset=preset,
            detector=replace(config.detector, track_threshold=track, low_light=d.low_light),
            tracker=config.tracker,
        )
    style = Style()
    if start.style.set:
        s = start.style
        style = Style.from_json(
            {
                "effect": s.effect,
                "shape": s.shape,
                "margin": s.margin,
                "feather": s.feather,
                "blur_strength": s.blur_strength,
                "pixel_blocks": s.pixel_blocks,
                "color": tuple(s.color),
            }
        )
    encoder = EncoderSettings()
    if start.encoder.set:
        e = start.encoder
        encoder = EncoderSettings(
            codec=e.codec or None,
            preset=e.preset,
            crf=e.crf,
            pix_fmt=e.pix_fmt or None,
            threads=e.threads,
        )
    return JobSettings(config, style, encoder)
