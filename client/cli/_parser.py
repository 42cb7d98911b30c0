"""The ``veil`` argument parser: the global options, every command's subparser (each defined
beside the code that runs it) and the help's examples and exit codes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from veil import __version__

from . import _audit, _jobs, _live, _service

_EPILOG = """\
examples:
  veil models fetch                                once: download and verify the detector weights
  veil anonymize in.mp4 -o out.mp4                 detect, track and mask in one pass
  veil detect in.mp4 -o in.veil.json               1st pass: the detection record
  veil render in.mp4 in.veil.json -o out.mp4       2nd pass: render a (reviewed) record
  veil anonymize in.mp4 -o out.mp4 --style pixelate --shape ellipse --preset thorough
  veil anonymize archive/ -o out/ --jobs 2        a batch: every video below archive/
  veil batch /nfs/archive -o /nfs/out --cluster tcp://head:8786   on a Dask cluster
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil",
        description="Video face anonymisation: faces gone, audio intact, every run auditable.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    _add_common_args(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _jobs.add_parsers(sub)
    _service.add_models_parser(sub)
    _service.add_serve_parser(sub)
    _live.add_parser(sub)
    _audit.add_parsers(sub)
    # The same options after the command name (`veil anonymize -q ...`); SUPPRESS keeps a
    # value given before the command name from being reset by the subcommand's default.
    for command in sub.choices.values():
        _add_common_args(command, defaults=False)
    return parser
