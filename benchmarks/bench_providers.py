"""onnxruntime's CPU provider against OpenVINO's, side by side in one run (issue 18, item 6).

OpenVINO's execution provider ships only in the ``onnxruntime-openvino`` wheel, which replaces
``onnxruntime``; so this script needs nothing of veil and runs in a venv of its own:

    python3 -m venv /tmp/ov && /tmp/ov/bin/pip install onnxruntime-openvino==1.24.1 numpy
    /tmp/ov/bin/python benchmarks/bench_providers.py [--models ~/.cache/veil/models]

Each model (as ``make models`` cleaned it: dynamic shapes) runs on the same random input with
two threads, as veil's in-process detector does; prints min and median ms of 15 runs after 3
warm-ups per provider, the ratio to the CPU provider, and the largest output difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

CASES = [
    ("yunet", 384, 640),
    ("yunet", 736, 1280),
    ("centerface", 384, 640),
    ("centerface", 736, 1280),
    ("retinaface_mnet025", 384, 640),
]
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "openvino": ("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": 2}),
}


def run(model: Path, provider: object, x: np.ndarray) -> tuple[float, float, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=[provider])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        outputs = session.run(None, feed)
        times.append(time.perf_counter() - start)
    flat = np.concatenate([np.asarray(o).ravel() for o in outputs])
    return 1e3 * min(times), 1e3 * float(np.median(times)), flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache/veil/models")
    args = parser.parse_args()
    available = ort.get_available_providers()
    if PROVIDERS["openvino"][0] not in available:
        print(f"onnxruntime {ort.__version__}: no OpenVINO provider (see --help)", file=sys.stderr)
        return 2
    print(f"onnxruntime {ort.__version__}, providers {available}")
    rng = np.random.default_rng(0)
    for name, height, width in CASES:
        model = args.models / name / "1" / "model.onnx"
        x = rng.uniform(0, 255, (1, 3, height, width)).astype(np.float32)
        cpu_min, cpu_median, cpu_out = run(model, PROVIDERS["cpu"], x)
        ov_min, ov_median, ov_out = run(model, PROVIDERS["openvino"], x)
        print(
            f"{name:<20} {width}x{height}  cpu {cpu_min:6.2f} / {cpu_median:6.2f} ms  "
            f"openvino {ov_min:6.2f} / {ov_median:6.2f} ms  "
            f"openvino / cpu {ov_min / cpu_min:4.2f}x  "
            f"max diff {np.abs(ov_out - cpu_out).max():.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
