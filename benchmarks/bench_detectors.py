"""Face detectors side by side (issue 18.1): detect time per frame, and recall and false
positives on the WIDER stills, for the numbers that presets are later chosen from.

Usage::

    .venv/bin/python benchmarks/bench_detectors.py [--models centerface,yunet,scrfd]
        [--sides 640,1024] [--repeat 30] [--limit N] [--thresholds yunet=0.3,0.5,0.7 ...]

Speed: one process, in-process onnxruntime, ``--threads`` (2) intra-op threads; each detector
gets the same RGB frame (frame 60 of ``../shared/data/clips/wider_group_tilted_pan.mp4``,
1280x720, a tilted group of faces; else ``samples/astronaut.mp4``) scaled to 640x360 and to
1280x720, and one ``detect`` call (pre-processing + inference + decoding + mapping to display
pixels) is timed by wall clock. Rounds are interleaved (every model once per round, ``--repeat``
rounds) so a busy machine slows all of them alike; the table gives the median and the 90th
percentile, and the median relative to the first model.

WIDER stills (``../shared/data/stills/widerface``, 333 val images, 1024 px wide): each image
is scaled to fit ``--sides`` (as veil scales a frame) and detected once at the model's lowest
threshold; a higher threshold keeps the detections scoring at least that much (greedy NMS
makes this the same as running at it). Over valid faces (not ``invalid``) >= 20 px tall:

* recall (masked): the detections' boxes grown by the default margin (0.2 per side) cover
  80 % of the face's box, as ``benchmarks/eval.py`` scores the stills (``veil_eval.covered_share``);
  also split by WIDER's pose flag (typical / atypical = mostly profile);
* recall (IoU 0.5): one detection overlaps the face's box with IoU >= 0.5 (box agreement,
  closer to WIDER's own protocol, which also counts box shape);
* false positives per image: detections with IoU < 0.3 against every labelled box (any size,
  valid or not) and not lying mostly (>= 50 % of their area) inside an ``invalid`` region.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "clips" / "wider_group_tilted_pan.mp4"
SAMPLE = ROOT / "samples" / "astronaut.mp4"
STILLS = DATA / "stills" / "widerface" / "annotations.json"
THRESHOLDS = {
    "centerface": (0.2, 0.3, 0.4, 0.5),  # 0.2: balanced's track threshold (model threshold)
    "retinaface_mnet025": (0.3, 0.5),
    "yunet": (0.3, 0.5, 0.7),
    "scrfd": (0.3, 0.5),
}
MIN_HEIGHT = 20.0
FP_IOU = 0.3
MATCH_IOU = 0.5

Image = npt.NDArray[np.uint8]


def frame(frame_index: int = 60) -> Image:
    """An RGB frame: the GT group clip's if the shared data is here, else the sample's."""
    path = CLIP if CLIP.exists() else SAMPLE
    with av.open(str(path)) as container:
        for i, decoded in enumerate(container.decode(video=0)):
            if i == frame_index:
                image: Image = decoded.to_ndarray(format="rgb24")
                return image
    raise ValueError(f"{path} has fewer than {frame_index + 1} frames")


def scaled(image: Image, width: int, height: int) -> Image:
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def bench_speed(
    models: list[str], sizes: list[tuple[int, int]], repeat: int, threads: int
) -> list[tuple[str, tuple[int, int], list[float]]]:
    """Wall ms of one ``detect`` per model and size, ``repeat`` interleaved rounds."""
    from veil.server.engine import load_detector

    source = frame()
    rows = []
    for width, height in sizes:
        image = scaled(source, width, height)
        detectors = {
            m: load_detector(m, max_side=max(width, height), threads=threads) for m in models
        }
        for detector in detectors.values():  # warm-up: onnxruntime plans this shape
            for _ in range(3):
                detector.detect([image], [(width, height)])
        times: dict[str, list[float]] = {m: [] for m in models}
        for _ in range(repeat):
            for m, detector in detectors.items():
                t0 = time.perf_counter()
                detector.detect([image], [(width, height)])
                times[m].append(1e3 * (time.perf_counter() - t0))
        for m, detector in detectors.items():
            detector.close()
            rows.append((m, (width, height), times[m]))
    return rows


@dataclass
class StillsCounts:
    faces: int = 0
    masked: int = 0
    matched: int = 0
    typical: list[int] = field(default_factory=lambda: [0, 0])  # found, total
    profile: list[int] = field(default_factory=lambda: [0, 0])
    false_positives: int = 0
    images: int = 0
    seconds: float = 0.0


def iou_matrix(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def inside_share(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The share of each box of ``a`` inside each box of ``b``: (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-9)
    return inter / area_a[:, None]


def score_image(
    counts: StillsCounts,
    boxes: npt.NDArray[np.float64],
    faces: list[dict[str, Any]],
    size: tuple[int, int],
    style: Any,
) -> None:
    from veil_eval import COVER_MIN, covered_share

    gt = np.array(
        [[f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]] for f in faces], np.float64
    ).reshape(-1, 4)
    invalid = np.array([bool(f.get("invalid")) for f in faces], bool)
    ious = iou_matrix(boxes, gt)
    grown = [tuple(map(float, b)) for b in boxes]
    for j, face in enumerate(faces):
        if invalid[j] or face["h"] < MIN_HEIGHT:
            continue
        masked = covered_share(tuple(map(float, gt[j])), grown, style, size) >= COVER_MIN
        counts.faces += 1
        counts.masked += masked
        counts.matched += bool(len(boxes)) and bool(ious[:, j].max() >= MATCH_IOU)
        bucket = counts.profile if face.get("pose") else counts.typical
        bucket[0] += masked
        bucket[1] += 1
    unmatched = ious.max(axis=1) < FP_IOU if len(gt) else np.ones(len(boxes), bool)
    if invalid.any() and len(boxes):
        unmatched &= inside_share(boxes, gt[invalid]).max(axis=1) < 0.5
    counts.false_positives += int(unmatched.sum())
    counts.images += 1


def bench_stills(
    models: list[str],
    sides: list[int],
    thresholds: dict[str, tuple[float, ...]],
    threads: int,
    limit: int | None,
) -> dict[tuple[str, int, float], StillsCounts]:
    from veil.core._detector import fit_size
    from veil.mask._style import Style
    from veil.server.engine import load_detector

    doc = json.loads(STILLS.read_text())
    images = doc["images"][:limit]
    style = Style()
    results: dict[tuple[str, int, float], StillsCounts] = {}
    for model in models:
        levels = sorted(thresholds[model])
        for side in sides:
            detector = load_detector(
                model, max_side=side, score_threshold=levels[0], threads=threads
            )
            counts = {t: StillsCounts() for t in levels}
            for item in images:
                bgr = cv2.imread(str(STILLS.parent / item["file"]), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FileNotFoundError(STILLS.parent / item["file"])
                h, w = bgr.shape[:2]
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                sw, sh = fit_size(w, h, side)
                image = scaled(rgb, sw, sh) if (sw, sh) != (w, h) else rgb
                t0 = time.perf_counter()
                (found,) = detector.detect([image], [(w, h)])
                seconds = time.perf_counter() - t0
                for t in levels:
                    keep = found.scores >= t
                    counts[t].seconds += seconds
                    score_image(
                        counts[t],
                        found.boxes[keep].astype(np.float64),
                        item["faces"],
                        (w, h),
                        style,
                    )
            detector.close()
            for t in levels:
                results[(model, side, t)] = counts[t]
            print(f"  {model} at {side}: done", file=sys.stderr, flush=True)
    return results


def pct(found: int, total: int) -> str:
    return "-" if not total else f"{100 * found / total:.1f} %"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="centerface,yunet,scrfd")
    parser.add_argument("--sides", default="640,1024", help="detector input sides for the stills")
    parser.add_argument("--repeat", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="only the first N stills")
    parser.add_argument(
        "--thresholds",
        nargs="*",
        default=[],
        metavar="MODEL=T,T",
        help="score thresholds of a model on the stills (defaults: "
        + "; ".join(f"{m} {','.join(map(str, t))}" for m, t in THRESHOLDS.items())
        + ")",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-stills", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    thresholds = dict(THRESHOLDS)
    for spec in args.thresholds:
        name, _, values = spec.partition("=")
        thresholds[name] = tuple(float(v) for v in values.split(","))

    if not args.skip_speed:
        rows = bench_speed(models, [(640, 360), (1280, 720)], args.repeat, args.threads)
        source = CLIP.name if CLIP.exists() else SAMPLE.name
        print(f"\nDetect time per frame ({source}, {args.threads} threads, {args.repeat} rounds)\n")
        print("| model | frame | median ms | p90 ms | median vs " + models[0] + " |")
        print("|---|---|---|---|---|")
        base = {size: statistics.median(t) for m, size, t in rows if m == models[0]}
        for m, (w, h), times in rows:
            median = statistics.median(times)
            p90 = float(np.percentile(times, 90))
            ratio = median / base[(w, h)]
            print(f"| {m} | {w}x{h} | {median:.1f} | {p90:.1f} | {ratio:.2f}x |")

    if not args.skip_stills:
        if not STILLS.exists():
            print(f"{STILLS}: missing, no stills table", file=sys.stderr)
            return 2
        sides = [int(s) for s in args.sides.split(",")]
        results = bench_stills(models, sides, thresholds, args.threads, args.limit)
        first = next(iter(results.values()))
        print(
            f"\nWIDER stills ({first.images} images, {first.faces} valid faces >= 20 px tall: "
            f"{first.typical[1]} typical pose, {first.profile[1]} atypical)\n"
        )
        print(
            "| model | input side | threshold | recall (masked) | typical pose | atypical pose "
            "| recall (IoU 0.5) | false pos. / image | detect ms / image |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for (m, side, t), c in results.items():
            print(
                f"| {m} | {side} | {t:g} | {pct(c.masked, c.faces)} | {pct(*c.typical)} "
                f"| {pct(*c.profile)} | {pct(c.matched, c.faces)} "
                f"| {c.false_positives / max(c.images, 1):.2f} "
                f"| {1e3 * c.seconds / max(c.images, 1):.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
