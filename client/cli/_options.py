"""The argument groups several commands share: detection, mask style, encoding, streams,
remote detection, provenance, batches. One definition each, so an option reads the same in
every command that takes it (and a batch can pass a file's options on to ``veil anonymize``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veil.job import Preset
from veil.mask import Effect, Shape


def add_detection_args(parser: argparse.ArgumentParser) -> None:
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


def add_style_args(group: argparse._ArgumentGroup) -> None:
    """How masks look: the ``[style]`` table's keys as options."""
    group.add_argument("--style", choices=[e.value for e in Effect], help="default: blur")
    group.add_argument("--shape", choices=[s.value for s in Shape], help="default: box")
    group.add_argument("--margin", type=float, help="grow each face box by this share per side")
    group.add_argument("--feather", type=float, help="soft edge beyond the mask, share of face")
    group.add_argument("--blur-strength", type=float, help="blur sigma as a share of face size")
    group.add_argument("--pixel-blocks", type=int, help="pixel blocks across a face")


def add_render_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mask style and encoding")
    add_style_args(group)
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


def add_stream_args(parser: argparse.ArgumentParser) -> None:
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


def add_remote_args(parser: argparse.ArgumentParser) -> None:
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
    add_channel_args(group, frame_encoding="png")


def add_channel_args(group: argparse._ArgumentGroup, *, frame_encoding: str) -> None:
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


def add_per_file_args(parser: argparse.ArgumentParser) -> None:
    """The options of one ``veil anonymize`` run, which a batch passes to each file's."""
    add_detection_args(parser)
    add_render_args(parser)
    add_manifest_args(parser)
    add_remote_args(parser)
    add_stream_args(parser)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
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


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-y",
        "--overwrite",
        action="store_true",
        help="replace files that exist (without it, an existing output is an error); if the "
        "run then fails, the old files are removed too",
    )


def add_manifest_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("provenance")
    group.add_argument(
        "--sign-key", type=Path, metavar="KEY", help="sign the manifest with this Ed25519 key (PEM)"
    )
    group.add_argument(
        "--manifest", type=Path, metavar="F", help="manifest path (default: OUT.manifest.json)"
    )
