"""CPU cost of each stage of a veil job, per frame, on one clip: the numbers behind
docs/throughput.md's "what bounds throughput" table.

Usage::

    .venv/bin/python benchmarks/bench_stages.py [CLIP] [--frames 60]

CLIP defaults to the bench's 720p GT clip (``.cache/bench/gt_1280x720_6s.mp4``, made by
``bench_throughput.py``); its ``.json`` ground truth gives the face boxes the render stage
draws. Each stage runs alone in a loop on the same decoded frames, timed by process CPU time.
Side by side, the savings docs/throughput.md names: balanced's own record drawn mask by mask
and a face's masks as one (``by_track``), and the grey thumbnail through ``frame.reformat``
(a new swscale context a frame), the cut detector's old 32x32 pass, and a kept scaler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / ".cache" / "bench" / "gt_1280x720_6s.mp4"


def cpu_ms(work: Callable[[], object], frames: int) -> float:
    start = time.process_time()
    work()
    return 1e3 * (time.process_time() - start) / frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("clip", nargs="?", type=Path, default=CLIP)
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    if not args.clip.exists():
        print(f"{args.clip}: missing (run benchmarks/bench_throughput.py once)", file=sys.stderr)
        return 2

    from veil import detect as record_of
    from veil.core._detector import fit_size
    from veil.mask import by_track
    from veil.mask._draw import render_frame, single_threaded_opencv
    from veil.mask._style import Style
    from veil.server.engine import load_detector
    from veil.track._camera import CameraMotion, grey_thumbnail
    from veil.track._shots import CutDetector

    with av.open(str(args.clip)) as container:
        frames = [f for _, f in zip(range(args.frames), container.decode(video=0), strict=False)]
    n = len(frames)
    gt = json.loads(args.clip.with_suffix(".json").read_text())
    boxes = [[tuple(face["bbox"]) for face in gt["frames"][i]["faces"]] for i in range(n)]
    width, height = frames[0].width, frames[0].height
    print(f"{args.clip.name}: {n} frames {width}x{height}, {sum(map(len, boxes)) / n:.1f} faces")

    def row(stage: str, ms: float) -> None:
        print(f"  {stage:<52} {ms:7.1f} ms CPU/frame", flush=True)

    w, h = fit_size(width, height, 640)
    images = [f.reformat(w, h, "rgb24", interpolation="AREA").to_ndarray() for f in frames]
    row(
        f"scale to {w}x{h} (detector input)",
        cpu_ms(lambda: [f.reformat(w, h, "rgb24", interpolation="AREA") for f in frames], n),
    )
    for threads in (1, 2):
        detector = load_detector("centerface", max_side=640, score_threshold=0.2, threads=threads)
        detector.detect(images[:4], [(width, height)] * 4)  # warm up

        def detect(detector: object = detector) -> None:
            for k in range(0, n, 4):
                batch = images[k : k + 4]
                detector.detect(batch, [(width, height)] * len(batch))  # type: ignore[attr-defined]

        row(f"CenterFace at 640, {threads} intra-op thread(s)", cpu_ms(detect, n))
        detector.close()

    single_threaded_opencv()
    style = Style()
    row(
        "render (blur, GT face boxes)",
        cpu_ms(
            lambda: [
                render_frame(f, [[box] for box in b], style, pix_fmt="yuv420p")
                for f, b in zip(frames, boxes, strict=True)
            ],
            n,
        ),
    )
    # a record's masks: a face often has two in a frame (its detection and the blend that
    # steadies it), drawn one by one before, as one group now
    masks = [m.masks for m in record_of(args.clip).frames[:n]]
    groups = [by_track(m) for m in masks]
    print(
        f"  balanced's record: {sum(map(len, masks)) / n:.1f} masks, "
        f"{sum(map(len, groups)) / n:.1f} faces (tracks) a frame"
    )
    for label, drawn in (
        ("each mask on its own", [[[m.box] for m in ms] for ms in masks]),
        ("a face's masks as one (by_track)", groups),
    ):
        row(
            f"render (balanced's record, {label})",
            cpu_ms(
                lambda drawn=drawn: [
                    render_frame(f, g, style, pix_fmt="yuv420p")
                    for f, g in zip(frames, drawn, strict=True)
                ],
                n,
            ),
        )
    motion, cuts = CameraMotion(), CutDetector()
    size = (frames[0].width, frames[0].height)
    scaler = VideoReformatter()
    thumbnails = [grey_thumbnail(f, scaler) for f in frames]
    tw, th = thumbnails[0].shape[1], thumbnails[0].shape[0]
    row(
        "grey thumbnail, frame.reformat (a new swscale context a frame)",
        cpu_ms(lambda: [f.reformat(tw, th, "gray", interpolation="AREA") for f in frames], n),
    )
    row(
        "32x32 grey of the full frame (the cut detector's own pass before)",
        cpu_ms(lambda: [f.reformat(32, 32, "gray", interpolation="AREA") for f in frames], n),
    )
    row(
        "grey thumbnail (its thread's scaler kept)",
        cpu_ms(lambda: [grey_thumbnail(f, scaler) for f in frames], n),
    )
    row("camera motion", cpu_ms(lambda: [motion.measure(t, size) for t in thumbnails], n))
    row("cut detector", cpu_ms(lambda: [cuts.is_cut(t) for t in thumbnails], n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
