"""Batch throughput (issue 16): one folder of short clips anonymised three ways, side by side
in one run: one file at a time (``--jobs 1``), two at once on this machine (``--jobs 2``,
each on its own share of the cores), and on a local Dask cluster of two single-threaded
workers (``veil batch --cluster``, the same per-file runs).

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--clips 8] [--frames 100] [--rounds 2]

Each way runs ``--rounds`` times into a fresh output folder (min wall time kept); every output
is checked to verify before a time counts. Prints wall seconds, files/min and frames/s, and
each way's ratio to one at a time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from dask_cluster import Cluster  # noqa: E402
from mediagen import cut  # noqa: E402

from veil.batch._batch import Item, is_done  # noqa: E402

SAMPLE = ROOT / "samples" / "astronaut.mp4"


def _batch(inputs: Path, out: Path, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "veil.cli", "batch", str(inputs), "-o", str(out), "-q", *extra],
        check=True,
    )
    seconds = time.perf_counter() - start
    for clip in sorted(inputs.iterdir()):
        assert is_done(Item(clip, out / clip.name)), f"{clip.name}: output does not verify"
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="veil-bench-batch-") as tmp:
        folder = Path(tmp)
        inputs = folder / "in"
        inputs.mkdir()
        for i in range(args.clips):
            cut(SAMPLE, inputs / f"clip{i}.mp4", args.frames)
        frames = args.clips * args.frames
        cluster = Cluster(folder)
        address = cluster.start(workers=2)
        try:
            ways = {
                "one at a time (--jobs 1)": ("--jobs", "1"),
                "two at once (--jobs 2)": ("--jobs", "2"),
                "Dask, 2 workers (--cluster)": ("--cluster", address),
            }
            best = {name: float("inf") for name in ways}
            for _ in range(args.rounds):
                for name, extra in ways.items():
                    best[name] = min(best[name], _batch(inputs, folder / "out", *extra))
        finally:
            cluster.stop()
    base = best["one at a time (--jobs 1)"]
    print(f"{args.clips} clips x {args.frames} frames (640x360, balanced), min of {args.rounds}")
    print(f"{'way':<30} {'wall s':>7} {'files/min':>10} {'frames/s':>9} {'vs one at a time':>17}")
    for name, seconds in best.items():
        print(
            f"{name:<30} {seconds:>7.1f} {args.clips / seconds * 60:>10.1f} "
            f"{frames / seconds:>9.1f} {base / seconds:>16.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
