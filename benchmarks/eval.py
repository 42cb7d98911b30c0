"""Score presets (and deface) against ground-truth clips: the evaluation harness's command
(``make eval`` runs it with every option; docs/quality.md has the definitions and results).

Usage::

    .venv/bin/python benchmarks/eval.py --clips ../shared/data/clips --compare-deface [--json]
    .venv/bin/python benchmarks/eval.py --generated --no-pixels --preset thorough

Exit status: 0 scored, 2 nothing to score or deface missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from veil import Preset
from veil_eval import evaluate, find_clips, generate_all


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/eval.py",
        description="score presets (and deface) against ground-truth clips",
    )
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
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
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
        print(
            "eval: error: no GT clips found (give --clips DIR_OR_FILES, --generated or --stills)",
            file=sys.stderr,
        )
        return 2
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
        print(f"eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=1) if args.json else report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
