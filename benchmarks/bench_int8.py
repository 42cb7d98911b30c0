"""Static INT8 quantisation of YuNet (issue 18, item 6): does it pay for itself on this CPU?

YuNet's FP32 weights (the fetched model) are quantised to QDQ INT8 with onnxruntime's
``quantize_static`` (per-tensor: the model's opset predates per-channel DequantizeLinear),
calibrated on frames of the shared real videos (``../shared/data/videos``, not the clips
scored below). Both models then run side by side in this process on every 3rd frame of the
generated hard clips (``benchmarks/eval.py --generated``, cached in ``.cache/eval/clips``), fit to
640 px: detector time per frame (the model and its pre/post-processing, onnxruntime on all
cores) and per-frame leak / collateral of the raw detections, at balanced's weak threshold
(0.15) and YuNet's own (0.5). Prints the INT8/FP32 time ratio.

    .venv/bin/python benchmarks/bench_int8.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from veil.core import fit_size
from veil.server.engine import OnnxRuntimeBackend, build_detector, make_model
from veil.server.engine.weights import model_path
from veil_eval import GtClip, generate_all, score_masks

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
MODEL = make_model("yunet")
CALIBRATION = ("carphone_pristine.mp4", "vtest.avi", "MOT20-05-raw_even_shorter.mp4")


def _frames(path: Path, step: int) -> Iterator[np.ndarray]:
    """Every ``step``-th frame, RGB, fit to 640 px."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                image = frame.to_ndarray(format="rgb24")
                h, w = image.shape[:2]
                yield cv2.resize(image, fit_size(w, h, 640), interpolation=cv2.INTER_AREA)


class _Calibration(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self) -> None:
        feeds = [
            {MODEL.input_name: MODEL.preprocess([image])}
            for name in CALIBRATION
            for _, image in zip(range(12), _frames(DATA / "videos" / name, 15), strict=False)
        ]
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _measure(path: Path, threshold: float, clips: list[GtClip]) -> tuple[float, str]:
    backend = OnnxRuntimeBackend(path, input_name=MODEL.input_name, output_names=MODEL.output_names)
    detector = build_detector("yunet", {"yunet": backend}, score_threshold=threshold)
    seconds, images, cells = 0.0, 0, []
    try:
        for clip in clips:
            masks, faces = [], []
            for k, image in enumerate(_frames(clip.video, 3)):
                start = time.perf_counter()
                (found,) = detector.detect([image], [(clip.width, clip.height)])
                seconds += time.perf_counter() - start
                images += 1
                masks.append([tuple(map(float, b)) for b in found.boxes])
                faces.append(clip.frames[3 * k])
            score = score_masks(replace(clip, frames=faces), masks)
            cells.append(
                f"{clip.name.removeprefix('gen_')[:10]} {100 * (score.leak_rate() or 0):.1f}"
                f"/{100 * score.collateral:.1f}"
            )
    finally:
        detector.close()
    return 1e3 * seconds / images, "  ".join(cells)


def main() -> int:
    if not (DATA / "videos").is_dir():
        print(f"{DATA}: the shared test data is needed", file=sys.stderr)
        return 2
    fp32 = model_path("yunet")
    clips = [GtClip.load(p) for p in generate_all(DATA, ROOT / ".cache" / "eval" / "clips")]
    with tempfile.TemporaryDirectory(prefix="veil-int8-") as tmp:
        int8 = Path(tmp) / "yunet-int8.onnx"
        quantize_static(
            str(fp32),
            str(int8),
            _Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        print("per-frame leak / collateral of raw detections (%), every 3rd frame, 640 px")
        for threshold in (0.15, 0.5):
            ms = {}
            for name, path in (("fp32", fp32), ("int8", int8)):
                ms[name], cells = _measure(path, threshold, clips)
                print(f"threshold {threshold} {name}: {ms[name]:5.1f} ms/frame   {cells}")
            print(f"threshold {threshold}: int8 / fp32 time {ms['int8'] / ms['fp32']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
