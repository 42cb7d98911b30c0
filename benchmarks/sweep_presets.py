"""Leak rate against detection cost for candidate presets (issue 18): the measurements the
presets are picked from, and the picture in docs/quality.md.

Usage::

    .venv/bin/python benchmarks/sweep_presets.py [--candidates a,b,...] [--png docs/pareto.png]

Each candidate (a detector and tracker setting, table ``CANDIDATES``) runs ``veil detect`` on
the public GT clips and the generated hard clips (``benchmarks/eval.py --generated``, cached in
``.cache/eval/clips``). Every record is scored against ground truth (faces >= 20 px, by
record, the eval's definitions); cost is the process CPU time of the detect run per frame
(decode, detection, tracking: all threads), so a loaded box changes it little. Prints one
row per candidate (pooled leak, holes, collateral, CPU ms a frame; each clip's leak/collateral) and
draws leak against cost; the Pareto front is marked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from veil import DetectionConfig, DetectorSettings, TrackerConfig
from veil_eval import GtClip, Score, find_clips, generate_all, score_record

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


BEFORE: dict[str, tuple[DetectorSettings, TrackerConfig]] = {
    # The presets as they were before issue 18 (client/_settings.py at cae0bf1): the
    # baseline, and the settings each candidate starts from (no low-light pass: it came last).
    "fast": (
        DetectorSettings(
            model="retinaface_mnet025",
            max_side=640,
            score_threshold=0.5,
            track_threshold=0.3,
            nms_threshold=0.4,
            stride=2,
            low_light=False,
        ),
        TrackerConfig(max_gap=8, lead_in=6, lead_out=6),
    ),
    "balanced": (
        DetectorSettings(
            model="centerface",
            max_side=640,
            score_threshold=0.4,
            track_threshold=0.2,
            stride=2,
            low_light=False,
        ),
        TrackerConfig(max_gap=12, lead_in=12, lead_out=8),
    ),
    "thorough": (
        DetectorSettings(
            model="centerface",
            max_side=1280,
            score_threshold=0.3,
            track_threshold=0.15,
            flip=True,
            low_light=False,
        ),
        TrackerConfig(max_gap=15, lead_in=10, lead_out=10),
    ),
}


@dataclass(frozen=True)
class Candidate:
    base: str
    detector: dict[str, Any]
    tracker: dict[str, Any]

    def config(self) -> DetectionConfig:
        detector, tracker = BEFORE[self.base]
        return DetectionConfig(
            detector=detector.updated(**self.detector), tracker=replace(tracker, **self.tracker)
        )


def _c(base: str, tracker: dict[str, Any] | None = None, **detector: Any) -> Candidate:
    return Candidate(base, detector, tracker or {})


@dataclass(frozen=True)
class Current:
    """A preset as client/job/_settings.py defines it now, with ``detector`` and ``tracker``
    changes."""

    preset: str
    detector: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)

    def config(self) -> DetectionConfig:
        return DetectionConfig.from_preset(
            self.preset, detector=self.detector, tracker=self.tracker
        )


CANDIDATES: dict[str, Candidate | Current] = {
    # the presets before issue 18 (the thorough one, 221 ms a frame, is in an earlier run)
    "fast (before)": _c("fast"),
    "balanced (before)": _c("balanced"),
    # the presets now (client/job/_settings.py)
    "fast: yunet 640 0.5/t0.25": Current("fast"),
    "balanced: yunet 800 0.5/t0.12": Current("balanced"),
    "thorough: cf+yunet@800+yunet@320 1280 s1 0.4/t0.12": Current("thorough"),
    # the tracker's image evidence: without it (the previous run's presets), following
    # lost faces alone, more second looks
    "balanced (no follow/recheck)": Current("balanced", tracker={"follow_span": 0, "recheck": 0}),
    "balanced (follow only)": Current("balanced", tracker={"recheck": 0}),
    "balanced recheck 8": Current("balanced", tracker={"recheck": 8}),
    # the mirror pass (profile faces)
    "balanced + flip": Current("balanced", {"flip": True}),
    # the profile gap on stills against leaks, collateral and cost: balanced as it was (640
    # px, weak from 0.15), with a lower weak threshold, with the mirror pass
    "balanced 640 t0.15": Current("balanced", {"max_side": 640, "track_threshold": 0.15}),
    "balanced 640 t0.10": Current("balanced", {"max_side": 640, "track_threshold": 0.10}),
    "balanced 640 t0.08": Current("balanced", {"max_side": 640, "track_threshold": 0.08}),
    "balanced 640 + flip t0.10": Current(
        "balanced", {"max_side": 640, "flip": True, "track_threshold": 0.10}
    ),
    # thorough against the new balanced: as it was (YuNet at 640 px, weak from 0.15), its
    # YuNet at balanced's 800 px alone, the low-light pass
    "thorough 640 t0.15": Current(
        "thorough", {"model": "centerface+yunet@640+yunet@320", "track_threshold": 0.15}
    ),
    "thorough t0.15": Current("thorough", {"track_threshold": 0.15}),
    "thorough + low light": Current("thorough", {"low_light": True}),
}


def _clips() -> list[GtClip]:
    public = find_clips([DATA / "clips"])
    generated = generate_all(DATA, ROOT / ".cache" / "eval" / "clips")
    return [GtClip.load(p) for p in [*public, *generated]]


def measure(candidate: Candidate | Current, clips: list[GtClip]) -> dict[str, Any]:
    from veil import detect

    pooled = Score()
    per_clip: dict[str, float | None] = {}
    per_clip_collateral: dict[str, float] = {}
    cpu = 0.0
    frames = 0
    for clip in clips:
        start = time.process_time()
        record = detect(clip.video, config=candidate.config())
        cpu += time.process_time() - start
        frames += len(record.frames)
        score = score_record(clip, record)
        per_clip[clip.name] = score.leak_rate()
        per_clip_collateral[clip.name] = score.collateral
        pooled.add(score)
    return {
        "leak": pooled.leak_rate(),
        "clear": pooled.clear_leak_rate(),
        "holes": pooled.holes,
        "collateral": pooled.collateral,
        "cpu_ms_per_frame": 1e3 * cpu / max(frames, 1),
        "clips": per_clip,
        "clips_collateral": per_clip_collateral,
    }


def pareto(rows: dict[str, dict[str, Any]]) -> set[str]:
    """Candidates no other one beats on both leak and cost."""
    front = set()
    for name, r in rows.items():
        if not any(
            o["leak"] <= r["leak"]
            and o["cpu_ms_per_frame"] <= r["cpu_ms_per_frame"]
            and (o["leak"], o["cpu_ms_per_frame"]) != (r["leak"], r["cpu_ms_per_frame"])
            for other, o in rows.items()
            if other != name
        ):
            front.add(name)
    return front


def plot(rows: dict[str, dict[str, Any]], front: set[str], path: Path) -> None:
    """Leak (%) against CPU ms a frame, drawn with OpenCV (no plotting library needed)."""
    width, height, pad = 960, 600, 80
    image = np.full((height, width, 3), 255, np.uint8)
    cost = [r["cpu_ms_per_frame"] for r in rows.values()]
    leak = [100 * r["leak"] for r in rows.values()]
    x_max, y_max = max(cost) * 1.1, max(max(leak) * 1.15, 1.0)

    def at(c: float, lk: float) -> tuple[int, int]:
        return (
            pad + round((width - 2 * pad) * c / x_max),
            height - pad - round((height - 2 * pad) * lk / y_max),
        )

    cv2.line(image, at(0, 0), at(x_max, 0), (0, 0, 0), 1)
    cv2.line(image, at(0, 0), at(0, y_max), (0, 0, 0), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in range(6):
        c, lk = x_max * k / 5, y_max * k / 5
        cv2.putText(image, f"{c:.0f}", (*at(c, 0)[0:1], height - pad + 20), font, 0.4, 0, 1)
        cv2.putText(image, f"{lk:.1f}", (pad - 45, at(0, lk)[1] + 4), font, 0.4, 0, 1)
    cv2.putText(
        image, "CPU ms per frame (detect run)", (width // 2 - 120, height - 25), font, 0.5, 0
    )
    cv2.putText(image, "leak >= 20 px, % (pooled, by record)", (10, 30), font, 0.5, 0)
    ordered = sorted((rows[n]["cpu_ms_per_frame"], 100 * rows[n]["leak"], n) for n in front)
    for (c0, l0, _), (c1, l1, _) in itertools.pairwise(ordered):
        cv2.line(image, at(c0, l0), at(c1, l1), (60, 160, 60), 1)
    for name, r in rows.items():
        point = at(r["cpu_ms_per_frame"], 100 * r["leak"])
        colour = (60, 160, 60) if name in front else (40, 40, 200)
        cv2.circle(image, point, 5, colour, -1)
        cv2.putText(image, name, (point[0] + 7, point[1] - 5), font, 0.4, colour, 1)
    cv2.imwrite(str(path), image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", help="comma-separated names (default: all)")
    parser.add_argument("--png", type=Path, help="write the leak-vs-cost picture here")
    parser.add_argument(
        "--json",
        type=Path,
        help="keep the rows here: rows already in it are drawn and kept (re-measured when named)",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA}: the shared test data is needed", file=sys.stderr)
        return 2
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    clips = _clips()
    rows = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for name in names:
        rows[name] = measure(CANDIDATES[name], clips)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1, sort_keys=True))
        r = rows[name]
        collateral = r["clips_collateral"]
        per_clip = "  ".join(
            f"{clip}={'-' if v is None else f'{100 * v:.1f}'}/{100 * collateral[clip]:.1f}"
            for clip, v in r["clips"].items()
        )
        print(
            f"{name:<24} leak {100 * r['leak']:6.2f} %  clear {100 * r['clear']:5.2f} %  "
            f"holes {r['holes']:4d}  collateral {100 * r['collateral']:5.2f} %  "
            f"{r['cpu_ms_per_frame']:7.1f} ms/frame   {per_clip}",
            flush=True,
        )
    front = pareto(rows)
    print("Pareto front:", ", ".join(sorted(front, key=lambda n: rows[n]["cpu_ms_per_frame"])))
    if args.png:
        plot(rows, front, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
