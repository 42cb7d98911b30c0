"""Live mode's masks replayed frame by frame, without a clock (issue 18, item 5): how many GT
faces its predictions leave uncovered, and how much else they cover, per stride and
``LiveConfig.velocity_uncertainty``.

``benchmarks/bench_live_leak.py`` runs ``veil live`` in real time, so its stride and its frames
masked whole follow the box's load and runs differ by a factor of two. Here the ``fast``
preset's detector (``veil live``'s) runs once on every frame of the public WIDER pan and the
generated hard clips (cached in ``.cache/eval/live-replay``), then live's tracks
(``veil.live.Predictor``) are fed as the engine feeds them: the camera's motion measured on
every frame, every ``stride``-th frame masked by its own detections plus the other tracks'
predictions, the frames between by predictions alone. No frame is masked whole, so every
face a prediction misses counts. Scored as ``benchmarks/eval.py`` scores records (covered
>= 80 %, faces >= 20 px; collateral outside every GT face grown 1.5x).

    .venv/bin/python benchmarks/bench_live_replay.py [--strides 2,3] [--uncertainty 0.5,1.0]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

from veil import DetectionConfig, Detections, client_passes, open_detector
from veil.core import fit_size
from veil.live import LiveConfig, Predictor
from veil.mask import Style
from veil.track import CameraMotion, CutDetector, grey_thumbnail
from veil_eval import (
    COVER_MIN,
    TARGET_HEIGHT,
    GtClip,
    collateral_share,
    covered_share,
    live_clips,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "eval" / "live-replay"


def detections(clip: GtClip, config: DetectionConfig) -> list[Detections]:
    """The preset's detections of every frame of ``clip`` (cached by clip and detector)."""
    settings = config.detector
    key = f"{clip.name}-{settings.model}-{settings.max_side}-{settings.model_threshold}.pkl"
    cached = CACHE / key
    if cached.exists():
        found: list[Detections] = pickle.loads(cached.read_bytes())
        return found
    detector = client_passes(open_detector(settings), settings)
    found = []
    try:
        with av.open(str(clip.video)) as container:
            for frame in container.decode(video=0):
                w, h = fit_size(frame.width, frame.height, detector.info.max_side)
                image = frame.reformat(w, h, "rgb24").to_ndarray()
                found.extend(detector.detect([image], [(frame.width, frame.height)]))
    finally:
        detector.close()
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(pickle.dumps(found))
    return found


def replay(
    clip: GtClip, found: list[Detections], config: DetectionConfig, stride: int, uncertainty: float
) -> tuple[int, int, float]:
    """Faces checked, faces leaked and mean collateral of ``clip`` masked as live masks it."""
    live = LiveConfig(tracker=config.tracker_for_run, velocity_uncertainty=uncertainty)
    style, size = Style(), (clip.width, clip.height)
    checked = leaked = 0
    collateral = 0.0
    with av.open(str(clip.video)) as container:
        rate = Fraction(container.streams.video[0].average_rate or 25)
        frames = list(container.decode(video=0))
    predictor = Predictor(live, rate, (), (frames[0].width, frames[0].height))
    camera, shots, scaler = CameraMotion(), CutDetector(), VideoReformatter()
    offset = (0.0, 0.0)
    for i, frame in enumerate(frames):
        thumbnail = grey_thumbnail(frame, scaler)
        motion = camera.measure(thumbnail, (frame.width, frame.height), cut=shots.is_cut(thumbnail))
        offset = (offset[0] + motion[0], offset[1] + motion[1])
        if i % stride == 0:
            masks = predictor.detected(i, found[i], offset)
            present = {m.track for m in masks}
            masks += predictor.predicted(i, offset, 0.0, exclude=present)
        else:
            masks = predictor.predicted(i, offset, 0.0)
        boxes = [m.box for m in masks]
        collateral += collateral_share(boxes, clip.frames[i], style, size)
        for face in clip.frames[i]:
            if face.counts and face.height >= TARGET_HEIGHT:
                checked += 1
                leaked += covered_share(face.box, boxes, style, size) < COVER_MIN
    return checked, leaked, collateral / len(frames)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--strides", default="2,3")
    parser.add_argument("--uncertainty", default="0.5,0.75,1.0")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"{DATA}: the shared test data is needed", file=sys.stderr)
        return 2
    config = DetectionConfig.from_preset(args.preset)
    clips = [GtClip.load(p) for p in live_clips(DATA, ROOT / ".cache" / "eval" / "clips")]
    found = {clip.name: detections(clip, config) for clip in clips}
    for stride in map(int, args.strides.split(",")):
        for uncertainty in map(float, args.uncertainty.split(",")):
            cells, checked, leaked, collateral = [], 0, 0, 0.0
            for clip in clips:
                n, k, c = replay(clip, found[clip.name], config, stride, uncertainty)
                checked, leaked, collateral = checked + n, leaked + k, collateral + c
                cells.append(f"{clip.name}={100 * k / max(n, 1):.2f}/{100 * c:.1f}")
            head = f"stride {stride} uncertainty {uncertainty:<4}"
            print(
                f"{head}  leak {100 * leaked / checked:5.2f} % ({leaked} of {checked})  "
                f"collateral {100 * collateral / len(clips):4.1f} %  " + "  ".join(cells),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
