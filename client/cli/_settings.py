"""Arguments and the ``--config`` TOML file into settings objects: the mask style, the encoder,
the detection config and the channel to a veil server. An option given on the command line
wins over its TOML key; a bad value is a :class:`ConfigError` (exit 2) before any work.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from veil.core import ConfigError
from veil.job import DetectionConfig, Preset
from veil.mask import Style
from veil.media import EncoderSettings

if TYPE_CHECKING:
    from veil.remote import ChannelOptions


def config_table(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``[name]`` table of the TOML config (empty when absent)."""
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config [{name}] must be a table")
    return value


def mask_style(args: argparse.Namespace, config: dict[str, Any]) -> Style:
    return Style.from_json(config_table(config, "style")).updated(
        effect=args.style,
        shape=args.shape,
        margin=args.margin,
        feather=args.feather,
        blur_strength=args.blur_strength,
        pixel_blocks=args.pixel_blocks,
    )


def encoder_settings(args: argparse.Namespace, config: dict[str, Any]) -> EncoderSettings:
    """The encoder settings, checked against the output's container."""
    section = config_table(config, "encoder")
    try:
        base = EncoderSettings(**section)
    except TypeError as exc:
        raise ConfigError(f"config [encoder]: {exc}") from exc
    changes = {
        "codec": args.codec,
        "crf": args.crf,
        "preset": args.encoder_preset,
        "threads": args.encoder_threads,
    }
    settings = replace(base, **{k: v for k, v in changes.items() if v is not None})
    settings.check(args.output)
    return settings


def detection_config(args: argparse.Namespace, config: dict[str, Any]) -> DetectionConfig:
    """The preset (``--preset``, else ``[detector] preset``, else balanced) with the
    ``[detector]`` and ``[tracker]`` tables and the detection options over it."""
    detector = dict(config_table(config, "detector"))
    preset = args.preset or detector.pop("preset", Preset.BALANCED.value)
    detector.update(
        {
            k: v
            for k, v in {
                "model": args.model,
                "score_threshold": args.threshold,
                "max_side": args.max_side,
                "provider": args.provider,
                "stride": args.stride,
            }.items()
            if v is not None
        }
    )
    try:
        return DetectionConfig.from_preset(
            preset, detector=detector, tracker=config_table(config, "tracker")
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid detection settings: {exc}") from exc


def channel_options(args: argparse.Namespace) -> ChannelOptions:
    """How to reach the veil server of ``--detector`` or ``--remote``."""
    from veil.remote import ChannelOptions, read_token  # gRPC: only for remote work

    return ChannelOptions(
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=read_token(args.token_file),
        encoding=args.frame_encoding,
    )
