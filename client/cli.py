"""The ``veil`` command line. User-facing output goes to stdout/stderr here and only here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from ._api import DetectionConfig, anonymize, detect, render
from ._errors import ConfigError, VeilError
from ._media import EncoderSettings
from ._settings import Preset
from ._style import Effect, Shape, Style, load_config

logger = logging.getLogger("veil")

_EPILOG = """\
examples:
  veil anonymize in.mp4 -o out.mp4                 detect, track and mask in one pass
  veil detect in.mp4 -o in.veil.json               1st pass: the detection record
  veil render in.mp4 in.veil.json -o out.mp4       2nd pass: render a (reviewed) record
  veil anonymize in.mp4 -o out.mp4 --style pixelate --shape ellipse --preset thorough

exit codes: 0 ok, 2 bad usage or config, 3 bad input, 4 bad record, 5 output error,
6 detector error, 130 interrupted.
"""


def _add_detection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection")
    group.add_argument(
        "--preset",
        choices=[p.value for p in Preset],
        help="speed/recall trade-off (default: balanced)",
    )
    group.add_argument("--model", help="detector model (centerface, retinaface_mnet025)")
    group.add_argument("--threshold", type=float, help="detection score threshold (0..1)")
    group.add_argument("--max-side", type=int, help="detect on frames scaled to this longer side")
    group.add_argument(
        "--provider", choices=["cpu", "cuda", "tensorrt"], help="onnxruntime execution provider"
    )


def _add_render_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mask style and encoding")
    group.add_argument("--style", choices=[e.value for e in Effect], help="default: blur")
    group.add_argument("--shape", choices=[s.value for s in Shape], help="default: box")
    group.add_argument("--margin", type=float, help="grow each face box by this share per side")
    group.add_argument("--feather", type=float, help="soft edge beyond the mask, share of face")
    group.add_argument("--blur-strength", type=float, help="blur sigma as a share of face size")
    group.add_argument("--pixel-blocks", type=int, help="pixel blocks across a face")
    group.add_argument("--codec", help="video encoder (default libx264; libvpx-vp9 for .webm)")
    group.add_argument("--crf", type=int, help="encoder quality (default 18)")
    group.add_argument("--encoder-preset", help="encoder speed preset (default veryfast)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil",
        description="Video face anonymisation: faces gone, audio intact, every run auditable.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    parser.add_argument("--config", type=Path, help="TOML file: [style] [detector] [tracker] [encoder]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("anonymize", help="detect and mask every face (writes OUT and a record)")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    p.add_argument("--record", type=Path, help="record path (default: OUT.veil.json)")
    p.add_argument("--no-record", action="store_true", help="do not write the record")
    _add_detection_args(p)
    _add_render_args(p)

    p = sub.add_parser("detect", help="write the detection record only")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="record path (.json)")
    _add_detection_args(p)

    p = sub.add_parser("render", help="mask a video as a (reviewed) record says")
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    _add_render_args(p)
    return parser


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"config [{name}] must be a table")
    return value


def _style(args: argparse.Namespace, config: dict[str, Any]) -> Style:
    return Style.from_json(_section(config, "style")).updated(
        effect=args.style,
        shape=args.shape,
        margin=args.margin,
        feather=args.feather,
        blur_strength=args.blur_strength,
        pixel_blocks=args.pixel_blocks,
    )


def _encoder(args: argparse.Namespace, config: dict[str, Any]) -> EncoderSettings:
    section = _section(config, "encoder")
    try:
        base = EncoderSettings(**section)
    except TypeError as exc:
        raise ConfigError(f"config [encoder]: {exc}") from exc
    from dataclasses import replace

    changes = {"codec": args.codec, "crf": args.crf, "preset": args.encoder_preset}
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def _detection(args: argparse.Namespace, config: dict[str, Any]) -> DetectionConfig:
    detector = dict(_section(config, "detector"))
    preset = args.preset or detector.pop("preset", Preset.BALANCED.value)
    detector.update(
        {
            k: v
            for k, v in {
                "model": args.model,
                "score_threshold": args.threshold,
                "max_side": args.max_side,
                "provider": args.provider,
            }.items()
            if v is not None
        }
    )
    try:
        return DetectionConfig.from_preset(
            preset, detector=detector, tracker=_section(config, "tracker")
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid detection settings: {exc}") from exc


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else {}
    progress = not args.quiet and sys.stderr.isatty()
    if args.command == "anonymize":
        result = anonymize(
            args.input,
            args.output,
            record=args.record,
            write_record=not args.no_record,
            config=_detection(args, config),
            style=_style(args, config),
            encoder=_encoder(args, config),
            progress=progress,
        )
        summary = result.record.summary()
        print(
            f"{args.output}: {summary['frames']} frames, {summary['tracks']} face tracks, "
            f"{summary['frames_with_masks']} frames masked"
        )
    elif args.command == "detect":
        record = detect(args.input, args.output, config=_detection(args, config), progress=progress)
        print(f"{args.output}: {json.dumps(record.summary())}")
    elif args.command == "render":
        manifest = render(
            args.input,
            args.record,
            args.output,
            style=_style(args, config),
            encoder=_encoder(args, config),
            progress=progress,
        )
        print(f"{args.output}: sha256 {manifest['output']['sha256']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.ERROR if args.quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[
        min(args.verbose, 2)
    ]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except VeilError as exc:
        print(f"veil: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("veil: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
