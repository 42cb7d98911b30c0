"""The job commands: ``veil anonymize``, ``detect`` and ``render`` on one file, run here, with
detection on a veil server (hybrid, ``--detector``) or whole on a server (cloud,
``--remote``); and the parsers of those and of ``veil batch`` (run by :mod:`._batch`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from veil import anonymize, default_record_path, detect, open_detector, render
from veil.core import ConfigError, Detector, VeilError
from veil.job import manifest_path
from veil.mask import Style
from veil.media import EncoderSettings, check_paths, check_writable, probe, replacing

from ._options import (
    add_batch_args,
    add_detection_args,
    add_manifest_args,
    add_overwrite_arg,
    add_per_file_args,
    add_remote_args,
    add_render_args,
    add_stream_args,
)
from ._settings import channel_options, detection_config, encoder_settings, mask_style


def add_parsers(sub: Any) -> None:
    """``anonymize``, ``batch``, ``detect`` and ``render``."""
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
    add_overwrite_arg(p)
    add_per_file_args(p)
    add_batch_args(p)

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
    add_per_file_args(p)
    add_batch_args(p)

    p = sub.add_parser("detect", help="write the detection record only")
    p.add_argument("input", type=Path, help="input video")
    p.add_argument("-o", "--output", type=Path, required=True, help="record path (.json)")
    add_overwrite_arg(p)
    add_detection_args(p)
    add_remote_args(p)
    add_stream_args(p)

    p = sub.add_parser("render", help="mask a video as a (reviewed) record says")
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, required=True, help="output video")
    add_overwrite_arg(p)
    add_render_args(p)
    add_manifest_args(p)


def run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """One file: check every path first, then run the job remotely, hybrid or here."""
    progress = not args.quiet and sys.stderr.isatty()
    if args.command == "anonymize":
        args.input = args.input[0]
    _check_outputs(args, config)
    if getattr(args, "remote", None):
        return _remote_job(args, config, progress)
    detector = None
    if getattr(args, "detector", None):
        detector = open_detector(
            detection_config(args, config).detector,
            url=args.detector,
            channel=channel_options(args),
        )
    try:
        return _local(args, config, progress, detector)
    finally:
        if detector is not None:
            detector.close()


def _check_outputs(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Before any work: no two of the files read and written are one file, none written
    exists unless --overwrite (exit 2); the encoder settings against the output's container
    (exit 2); then every file the job writes can be created where asked (exit 5)."""
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
        encoder_settings(args, config)
    for path, hint in outputs:
        check_writable(path, hint=hint)


def _remote_job(args: argparse.Namespace, config: dict[str, Any], progress: bool) -> int:
    """``--remote``: the whole job on a veil server; the input is checked here first."""
    from veil.remote import run_remote_job  # gRPC: only for remote work
    from veil.wire import job_start

    if getattr(args, "sign_key", None) or getattr(args, "manifest", None):
        raise ConfigError("--remote jobs cannot take --sign-key or --manifest (yet)")
    detection = detection_config(args, config)
    video = args.output if args.command == "anonymize" else None
    record = args.output if args.command == "detect" else None
    if args.command == "anonymize" and not args.no_record:
        record = args.record or default_record_path(args.output)
    try:
        size = args.input.stat().st_size
    except OSError as exc:
        raise VeilError(f"{args.input}: cannot read ({exc.strerror or exc})") from exc
    probe(args.input, drop=args.drop_stream)  # refused here, as on-prem, before the upload
    start = job_start(
        input_name=args.input.name,
        input_size=size,
        output_name=video.name if video is not None else "",
        write_record=record is not None,
        preset=detection.preset.value,
        detector=detection.detector,
        tracker=detection.tracker,
        style=mask_style(args, config) if video is not None else Style(),
        encoder=encoder_settings(args, config) if video is not None else EncoderSettings(),
        drop_streams=args.drop_stream,
    )

    def report(done: int, total: int | None) -> None:
        if progress:
            print(f"\rremote: {done}/{total or '?'} frames", end="", file=sys.stderr, flush=True)

    with replacing([p for p in (video, record) if p is not None], overwrite=args.overwrite):
        result = run_remote_job(
            args.remote,
            args.input,
            output=video,
            record=record,
            start=start,
            options=channel_options(args),
            on_progress=report,
        )
    if progress:
        print(file=sys.stderr)
    print(f"{args.output}: {json.dumps(result.summary)} (remote {args.remote})")
    return 0


def _local(
    args: argparse.Namespace, config: dict[str, Any], progress: bool, detector: Detector | None
) -> int:
    if args.command == "anonymize":
        result = anonymize(
            args.input,
            args.output,
            record=args.record,
            write_record=not args.no_record,
            config=detection_config(args, config),
            detector=detector,
            drop_streams=args.drop_stream,
            style=mask_style(args, config),
            encoder=encoder_settings(args, config),
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
            config=detection_config(args, config),
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
            style=mask_style(args, config),
            encoder=encoder_settings(args, config),
            progress=progress,
            sign_key=args.sign_key,
            manifest=args.manifest,
            overwrite=args.overwrite,
        )
        print(f"{args.output}: sha256 {manifest['output']['sha256']}")
    return 0
