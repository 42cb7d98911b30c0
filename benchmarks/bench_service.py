"""Detection service throughput: frames/s and latency with 1, 4 and 16 concurrent streams.

Runs a real veil server in process (127.0.0.1, port 0) on the same onnxruntime backend the
in-process baseline uses, and prints a table: the baseline's frames/s (``LocalDetector``
called directly, batches of ``--batch``), then per stream count the server's frames/s, its
ratio to the baseline, and the p50/p99 latency of one ``detect`` call (``--batch`` frames,
as the pipeline sends them). Frames travel RAW (lossless) over ``DetectStream``.

    .venv/bin/python benchmarks/bench_service.py [--frames 192] [--streams 1 4 16]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from veil import DetectorSettings, fit_size
from veil.remote import ChannelOptions, RemoteDetector
from veil.server.engine import LocalDetector, make_model
from veil.server.service import ServeConfig, create_server
from veil.server.service._serve import open_backend
from veil.wire import Encoding

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def frame() -> tuple[np.ndarray, tuple[int, int]]:
    """A 1280x720 group photo scaled to the detector's input (640x360), and its display size."""
    path = DATA / "stills" / "misc" / "multiface.jpg"
    image = cv2.imread(str(path)) if path.exists() else None
    if image is None:
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (720, 1280, 3), np.uint8)
    image = cv2.resize(image, (1280, 720), interpolation=cv2.INTER_AREA)
    small = cv2.resize(image, fit_size(1280, 720, 640), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[:, :, ::-1]), (1280, 720)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def baseline(
    backend: Any, image: np.ndarray, size: tuple[int, int], frames: int, batch: int
) -> float:
    detector = LocalDetector(model=make_model("centerface"), backend=backend, max_side=640)
    detector.detect([image], [size])
    start = time.perf_counter()
    for _ in range(frames // batch):
        detector.detect([image] * batch, [size] * batch)
    return (frames // batch) * batch / (time.perf_counter() - start)


def run_streams(
    url: str, image: np.ndarray, size: tuple[int, int], streams: int, frames: int, batch: int
) -> tuple[float, list[float]]:
    settings = DetectorSettings(model="centerface", max_side=640, score_threshold=0.5)
    detectors = [
        RemoteDetector(url, settings, ChannelOptions(encoding=Encoding.RAW)) for _ in range(streams)
    ]
    for detector in detectors:  # open the streams before the clock starts
        detector.detect([image], [size])
    per_stream = max(1, frames // streams // batch)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)

    def work(detector: RemoteDetector) -> None:
        barrier.wait()
        for _ in range(per_stream):
            t0 = time.perf_counter()
            detector.detect([image] * batch, [size] * batch)
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=work, args=(d,)) for d in detectors]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for detector in detectors:
        detector.close()
    return streams * per_stream * batch / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=192, help="frames per measurement")
    parser.add_argument("--batch", type=int, default=4, help="frames per detect call")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    image, size = frame()
    config = ServeConfig.from_sources(
        toml={
            "listen": "127.0.0.1:0",
            "max_batch": args.max_batch,
            "max_delay_ms": args.max_delay_ms,
            "limits": {"max_streams_per_client": max(args.streams)},
        }
    )
    backend = open_backend(config, config.model)
    base = baseline(backend, image, size, args.frames, args.batch)

    class Shared:
        def __getattr__(self, name: str) -> Any:
            return getattr(backend, name)

        def close(self) -> None:
            pass

    rows = [("in-process LocalDetector", f"{base:7.1f}", "1.00x", "", "")]
    with create_server(config, backend_factory=lambda _config, _model: Shared()) as server:  # type: ignore[arg-type, return-value]
        url = f"grpc://127.0.0.1:{server.port}"
        for streams in args.streams:
            fps, latencies = run_streams(url, image, size, streams, args.frames, args.batch)
            rows.append(
                (
                    f"server, {streams:2d} stream{'s' if streams > 1 else ' '}",
                    f"{fps:7.1f}",
                    f"{fps / base:.2f}x",
                    f"{1e3 * statistics.median(latencies):7.0f}",
                    f"{1e3 * percentile(latencies, 99):7.0f}",
                )
            )
    backend.close()
    print(
        f"centerface, 640x360 frames (from 1280x720), {args.batch} frames per call, RAW, "
        f"max_batch {args.max_batch}, max_delay {args.max_delay_ms:g} ms"
    )
    print(f"| {'mode':<26} | frames/s | ratio | p50 ms | p99 ms |")
    print(f"|{'-' * 28}|----------|-------|--------|--------|")
    for mode, fps, ratio, p50, p99 in rows:
        print(f"| {mode:<26} | {fps:>8} | {ratio:>5} | {p50:>6} | {p99:>6} |")


if __name__ == "__main__":
    main()
