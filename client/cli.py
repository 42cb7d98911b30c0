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
  veil eval --clips ../shared/data/clips --compare-deface   leak rate vs ground truth
  veil serve --listen 0.0.0.0:50051 --tls-cert srv.pem --tls-key srv.key --token-file tokens
  veil anonymize in.mp4 -o out.mp4 --detector grpcs://pool:50051 --tls-ca ca.pem   (hybrid)
  veil anonymize in.mp4 -o out.mp4 --remote grpcs://pool:50051 --tls-ca ca.pem     (cloud)

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


def _add_remote_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote detection (hybrid) or remote job (cloud)")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--detector",
        metavar="URL",
        help="detect on a veil server, grpc[s]://HOST:PORT; everything else stays local",
    )
    where.add_argument(
        "--remote", metavar="URL", help="run the whole job on a veil server, grpc[s]://HOST:PORT"
    )
    group.add_argument("--tls-ca", type=Path, metavar="F", help="CA that signed the server (PEM)")
    group.add_argument("--tls-cert", type=Path, metavar="F", help="client certificate (mTLS)")
    group.add_argument("--tls-key", type=Path, metavar="F", help="client key (mTLS)")
    group.add_argument(
        "--token-file", type=Path, metavar="F", help="bearer token file (default: $VEIL_TOKEN)"
    )
    group.add_argument(
        "--frame-encoding",
        choices=["png", "raw", "jpeg"],
        default="png",
        help="how frames travel to --detector (png and raw are lossless; default png)",
    )


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the detection service (gRPC)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus /metrics address")
    p.add_argument("--backend", choices=["onnxruntime", "triton"], help="default onnxruntime")
    p.add_argument("--triton", metavar="HOST:PORT", help="Triton's gRPC address (--backend triton)")
    p.add_argument("--model", help="the model served (default centerface)")
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], help="onnxruntime provider")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--tls-cert", type=Path, metavar="F", help="server certificate (PEM)")
    p.add_argument("--tls-key", type=Path, metavar="F", help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, metavar="F", help="require client certs (mTLS)")
    p.add_argument("--token-file", type=Path, metavar="F", help="bearer tokens, one a line")
    p.add_argument(
        "--insecure", action="store_true", default=None, help="allow plaintext off loopback"
    )
    p.add_argument("--max-batch", type=int, help="frames per inference at most (default 16)")
    p.add_argument("--max-delay-ms", type=float, help="longest wait for a batch (default 5)")
    p.add_argument("--max-queue", type=int, help="frames waiting at most (default 256)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil",
        description="Video face anonymisation: faces gone, audio intact, every run auditable.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    common.add_argument(
        "--config", type=Path, help="TOML file with [style] [detector] [tracker] [encoder] tables"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub_add_parser = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub_add_parser(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("anonymize", help="detect and mask every face (writes OUT and a record)")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    p.add_argument("--record", type=Path, help="record path (default: OUT.veil.json)")
    p.add_argument("--no-record", action="store_true", help="do not write the record")
    _add_detection_args(p)
    _add_render_args(p)
    _add_remote_args(p)

    p = sub.add_parser("detect", help="write the detection record only")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="record path (.json)")
    _add_detection_args(p)
    _add_remote_args(p)

    p = sub.add_parser("render", help="mask a video as a (reviewed) record says")
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    _add_render_args(p)
    _add_serve_parser(sub)
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


def _serve(args: argparse.Namespace, config: dict[str, Any]) -> int:
    import os

    try:
        from veil.server._serve import ServeConfig, serve
    except ImportError as exc:
        raise ConfigError(f"veil serve needs veil[server] ({exc})") from exc
    names = "listen metrics backend triton model provider threads tls_cert tls_key"
    names += " tls_client_ca token_file insecure max_batch max_delay_ms max_queue"
    flags = {name: getattr(args, name) for name in names.split()}
    serve(ServeConfig.from_sources(flags=flags, env=os.environ, toml=_section(config, "serve")))
    return 0


def _channel(args: argparse.Namespace) -> Any:
    from ._remote import ChannelOptions, read_token

    return ChannelOptions(
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=read_token(args.token_file),
        encoding=args.frame_encoding,
    )


def _remote_job(args: argparse.Namespace, config: dict[str, Any], progress: bool) -> int:
    from ._api import default_record_path
    from ._remote import job_start, run_remote_job

    detection = _detection(args, config)
    video = args.output if args.command == "anonymize" else None
    record = args.output if args.command == "detect" else None
    if args.command == "anonymize" and not args.no_record:
        record = args.record or default_record_path(args.output)
    try:
        size = args.input.stat().st_size
    except OSError as exc:
        raise VeilError(f"{args.input}: cannot read ({exc.strerror or exc})") from exc
    start = job_start(
        input_name=args.input.name,
        input_size=size,
        output_name=video.name if video is not None else "",
        write_record=record is not None,
        preset=detection.preset.value,
        detector=detection.detector,
        tracker=detection.tracker,
        style=_style(args, config) if video is not None else Style(),
        encoder=_encoder(args, config) if video is not None else EncoderSettings(),
    )

    def report(done: int, total: int | None) -> None:
        if progress:
            print(f"\rremote: {done}/{total or '?'} frames", end="", file=sys.stderr, flush=True)

    result = run_remote_job(
        args.remote,
        args.input,
        output=video,
        record=record,
        start=start,
        options=_channel(args),
        on_progress=report,
    )
    if progress:
        print(file=sys.stderr)
    print(f"{args.output}: {json.dumps(result.summary)} (remote {args.remote})")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else {}
    progress = not args.quiet and sys.stderr.isatty()
    if args.command == "serve":
        return _serve(args, config)
    if getattr(args, "remote", None):
        return _remote_job(args, config, progress)
    detector = None
    if getattr(args, "detector", None):
        from ._api import open_detector

        detector = open_detector(
            _detection(args, config).detector, url=args.detector, channel=_channel(args)
        )
    try:
        return _local(args, config, progress, detector)
    finally:
        if detector is not None:
            detector.close()


def _local(args: argparse.Namespace, config: dict[str, Any], progress: bool, detector: Any) -> int:
    if args.command == "anonymize":
        result = anonymize(
            args.input,
            args.output,
            record=args.record,
            write_record=not args.no_record,
            config=_detection(args, config),
            detector=detector,
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
        record = detect(
            args.input,
            args.output,
            config=_detection(args, config),
            detector=detector,
            progress=progress,
        )
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
    elif args.command == "eval":
        return _eval(args)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ._eval import evaluate, find_clips
    from ._eval_clips import generate_all

    clips = find_clips(args.clips)
    if args.generated:
        clips += generate_all(args.data, args.cache / "clips")
    stills = []
    if args.stills:
        stills = [args.data / "stills/widerface/annotations.json",
                  args.data / "stills/dlib_faces/annotations.json"]
    if not clips and not stills:
        raise ConfigError("no GT clips found (give --clips DIR_OR_FILES, --generated or --stills)")
    presets = [p.value for p in Preset] if args.all_presets else (args.preset or ["balanced"])
    try:
        report = evaluate(clips, presets=presets, compare_deface=args.compare_deface,
                          pixels=not args.no_pixels, stills=stills,
                          stills_limit=args.stills_limit, cache=args.cache)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps(report.to_json(), indent=1) if args.json else report.format())
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
