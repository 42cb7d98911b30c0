"""Write tests/golden/eval_public.json: each preset's scores on the public GT clips, by record,
which tests/test_eval.py holds every later run to (``make golden``, also run by ``make eval``).

Usage::

    .venv/bin/python benchmarks/golden_eval.py [--out tests/golden/eval_public.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from veil import DetectionConfig, Preset, detect
from veil_eval import GtClip, find_clips, score_record

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ROOT.parent / "shared" / "data" / "clips"
ABOUT = (
    "benchmarks/golden_eval.py (make golden): per preset and public GT clip, the leak rate by "
    "record (faces >= 20 px, >= 60% visible, not ignore; masked = >= 80% of the GT box "
    "covered), single-frame holes and collateral. tests/test_eval.py fails when one rises. "
    "Regenerate when a change lowers them, or explain the rise in the commit."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / "eval_public.json")
    args = parser.parse_args()
    clips = [GtClip.load(p) for p in find_clips([CLIPS])]
    if not clips:
        print(f"{CLIPS}: no public GT clips", file=sys.stderr)
        return 2
    golden: dict[str, object] = {"_about": ABOUT}
    for preset in Preset:
        config = DetectionConfig(preset=preset)
        scores = {}
        for clip in clips:
            score = score_record(clip, detect(clip.video, config=config))
            scores[clip.name] = {
                "collateral": round(score.collateral, 5),
                "leak_rate_20px": score.leak_rate(),
                "single_frame_holes": score.holes,
            }
            print(f"{preset.value:<9} {clip.name:<30} {scores[clip.name]}", flush=True)
        golden[preset.value] = scores
    args.out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
