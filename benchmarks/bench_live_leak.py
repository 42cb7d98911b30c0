"""How many faces ``veil live`` lets through on GT clips (issue 18, item 5).

Each clip (the public WIDER pan and the generated hard clips, ``benchmarks/eval.py --generated``) is
published over loopback UDP at its native rate and anonymised by ``veil live`` in this process
with a preset's detector and tracker (default ``fast``, ``veil live``'s), then every frame that
came back is checked as ``tests/test_live_outage.py`` checks it: a GT face (>= 20 px tall,
>= 60 % visible) leaks when the frame's masks cover less than 80 % of it or its pixels keep more
than half their fine structure. Prints, per clip, faces checked, leaks and their share, and how the
frames were masked (detected / tracked / late / policy). Real time: a run varies with the
machine's load, so run it on a quiet box and compare runs of one session.

    .venv/bin/python benchmarks/bench_live_leak.py [--preset fast] [--delay-ms 200]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from live_loopback import check_masked, gt_faces, live_in_process  # noqa: E402

from veil import DetectionConfig, client_passes, open_detector  # noqa: E402
from veil_eval import live_clips  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--delay-ms", type=int, default=200)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA}: the shared test data is needed", file=sys.stderr)
        return 2
    config = DetectionConfig.from_preset(args.preset)
    clips = live_clips(DATA, ROOT / ".cache" / "eval" / "clips")
    detector = client_passes(open_detector(config.detector), config.detector)  # as `veil live`
    checked = leaked = 0
    try:
        for gt in clips:
            with tempfile.TemporaryDirectory(prefix="veil-live-leak-") as tmp:
                run = live_in_process(
                    Path(tmp),
                    gt.with_suffix(".mp4"),
                    detector,
                    delay_s=args.delay_ms / 1000,
                    tracker=config.tracker_for_run,
                )
                result = check_masked(run, gt_faces(gt))
            modes = collections.Counter(line["mode"] for line in run.frames.values())
            n, k = result["faces_checked"], len(result["leaks"])
            checked, leaked = checked + n, leaked + k
            print(
                f"{gt.stem:<26} faces {n:6d}  leaks {k:5d}  {100 * k / max(n, 1):5.2f} %  "
                f"modes {dict(modes)}",
                flush=True,
            )
    finally:
        detector.close()
    print(f"pooled: {leaked} of {checked} faces, {100 * leaked / max(checked, 1):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
