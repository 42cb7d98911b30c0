"""Load on one veil server: N concurrent DetectStream calls for a bounded time, on loopback.

Each stream sends real frames (``samples/astronaut.mp4`` scaled with ``fit_size``), keeping
at most the server's window unanswered, and checks every result: indices in the order sent
(nothing lost or reordered) and detections equal to a single-stream reference of the same
frame. Reported: frames/s, per-frame latency p50/p95/p99 (send to result), server RSS before,
peak and after (the server is a real ``veil serve`` subprocess), errors by status code.

    .venv/bin/python benchmarks/load_service.py --streams 8 --seconds 60     # docs/hardening.md
    .venv/bin/python benchmarks/load_service.py --streams 8 --seconds 10 --json

``tests/test_load.py`` runs the short version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veil import fit_size
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import Encoding, frame_message

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "astronaut.mp4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sample_frames(count: int, max_side: int, encoding: Encoding) -> list[pb.Frame]:
    """``count`` frames spread over the sample, scaled as a hybrid client scales them."""
    with av.open(str(SAMPLE)) as container:
        total = container.streams.video[0].frames or 200
        step = max(1, total // count)
        pictures = [
            f.to_ndarray(format="rgb24")
            for i, f in enumerate(container.decode(video=0))
            if i % step == 0
        ][:count]
    frames = []
    for i, rgb in enumerate(pictures):
        display = (rgb.shape[1], rgb.shape[0])
        small = cv2.resize(rgb, fit_size(*display, max_side), interpolation=cv2.INTER_AREA)
        frames.append(frame_message(small, display, index=i, encoding=encoding))
    return frames


def faces(result: Any) -> list[tuple[float, ...]]:
    return [(f.x0, f.y0, f.x1, f.y1, f.score, *f.landmarks) for f in result.faces]


@dataclass
class StreamReport:
    frames: int = 0
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def run_stream(
    stub: Any,
    frames: list[pb.Frame],
    reference: list[list[tuple[float, ...]]],
    *,
    max_side: int,
    until: float,
) -> StreamReport:
    """One DetectStream: frames (cycling over ``frames``, increasing indices) until ``until``,
    at most the window unanswered; every result checked against ``reference``."""
    report = StreamReport()
    requests: list[Any] = []
    cond = threading.Condition()
    done = threading.Event()
    sent_at: dict[int, float] = {}

    def feed() -> Iterator[pb.DetectStreamRequest]:
        yield pb.DetectStreamRequest(
            start=pb.StreamStart(detector=pb.DetectorParams(max_side=max_side))
        )
        index = 0
        while True:
            with cond:
                while not requests and not done.is_set():
                    cond.wait(0.5)
                if done.is_set():
                    return
                requests.pop()
            frame = pb.Frame()
            frame.CopyFrom(frames[index % len(frames)])
            frame.index = index
            sent_at[index] = time.perf_counter()
            index += 1
            yield pb.DetectStreamRequest(frame=frame)

    call = stub.DetectStream(feed(), timeout=max(60.0, until - time.monotonic() + 120))
    try:
        first = next(call)
        window = first.started.window
        with cond:
            requests.extend([None] * window)
            cond.notify()
        expected = 0
        stopping = False
        for response in call:
            now = time.perf_counter()
            result = response.result
            if result.index != expected:
                report.problems.append(f"expected frame {expected}, got {result.index}")
            if faces(result) != reference[result.index % len(frames)]:
                report.problems.append(f"frame {result.index}: detections differ")
            report.latencies.append(now - sent_at.pop(result.index, now))
            report.frames += 1
            expected = result.index + 1
            if not stopping and time.monotonic() >= until:
                stopping = True  # stop sending; drain what is in flight
            with cond:
                if not stopping:
                    requests.append(None)
                    cond.notify()
            if stopping and not sent_at:
                break
    except grpc.RpcError as exc:
        report.error = exc.code().name  # type: ignore[attr-defined]
    finally:
        done.set()
        with cond:
            cond.notify_all()
        call.cancel()
    return report


class Server:
    """``veil serve`` as a subprocess on a free loopback port."""

    def __init__(self, *args: str, log: Path | None = None) -> None:
        self.port = _free_port()
        self._log = open(log or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "veil.cli", "serve", "--listen", f"127.0.0.1:{self.port}",
             *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"veil serve exited with {self.process.returncode}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("veil serve did not report SERVING in 120 s")
                time.sleep(0.2)

    def rss_kib(self) -> int:
        return rss_kib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(
    *,
    streams: int,
    seconds: float,
    max_side: int = 320,
    encoding: Encoding = Encoding.RAW,
    frames: int = 8,
    serve_args: tuple[str, ...] = ("--threads", "2"),
) -> dict[str, Any]:
    """Start a server, load it, stop it; the numbers as a dict. The server's queue is sized
    so that every stream's window fits in the 3/4 of it streams may reserve (docs/service.md):
    a stream past that is refused at its start, by design."""
    batch = sample_frames(frames, max_side, encoding)
    queue = max(256, -(-streams * 32 * 4 // 3))  # the default window is 32 frames
    server = Server(*serve_args, "--max-queue", str(queue))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.DetectionServiceStub(channel)
            # The single-stream reference (also warms the model up at this size).
            call = stub.DetectStream(
                iter(
                    [
                        pb.DetectStreamRequest(
                            start=pb.StreamStart(detector=pb.DetectorParams(max_side=max_side))
                        )
                    ]
                    + [pb.DetectStreamRequest(frame=f) for f in batch]
                ),
                timeout=300,
            )
            reference = [faces(r.result) for r in list(call)[1:]]
            assert len(reference) == len(batch)
            rss_before = server.rss_kib()
            peak = [rss_before]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.2):
                    peak[0] = max(peak[0], server.rss_kib())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            until = time.monotonic() + seconds
            reports: list[StreamReport] = [StreamReport() for _ in range(streams)]

            def one(k: int) -> None:
                reports[k] = run_stream(stub, batch, reference, max_side=max_side, until=until)

            start = time.perf_counter()
            threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            sampling.set()
            sampler.join()
            rss_after = server.rss_kib()
    finally:
        server.stop()
    latencies = [x for r in reports for x in r.latencies]
    total = sum(r.frames for r in reports)
    return {
        "streams": streams,
        "seconds": round(elapsed, 1),
        "max_side": max_side,
        "image": "x".join(map(str, fit_size(640, 360, max_side))),
        "encoding": encoding.value,
        "frames": total,
        "frames_per_s": round(total / elapsed, 2),
        "per_stream_frames": [r.frames for r in reports],
        "latency_ms": {
            "p50": round(1e3 * percentile(latencies, 50), 1),
            "p95": round(1e3 * percentile(latencies, 95), 1),
            "p99": round(1e3 * percentile(latencies, 99), 1),
            "max": round(1e3 * max(latencies, default=float("nan")), 1),
        },
        "server_rss_mib": {
            "before": round(rss_before / 1024, 1),
            "peak": round(peak[0] / 1024, 1),
            "after": round(rss_after / 1024, 1),
        },
        "errors": [r.error for r in reports if r.error],
        "problems": [p for r in reports for p in r.problems][:20],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[8])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--encoding", choices=[e.value for e in Encoding], default="raw")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    failed = False
    for streams in args.streams:
        report = run(
            streams=streams,
            seconds=args.seconds,
            max_side=args.max_side,
            encoding=Encoding(args.encoding),
        )
        failed |= bool(report["errors"] or report["problems"])
        if args.json:
            print(json.dumps(report), flush=True)
        else:
            lat, rss = report["latency_ms"], report["server_rss_mib"]
            print(
                f"{streams:3d} streams {report['seconds']:6.1f} s {report['frames']:6d} frames "
                f"{report['frames_per_s']:7.2f} f/s  p50 {lat['p50']:7.1f} p95 {lat['p95']:7.1f} "
                f"p99 {lat['p99']:7.1f} ms  RSS {rss['before']:.0f}/{rss['peak']:.0f}/"
                f"{rss['after']:.0f} MiB  errors {report['errors'] or 0} "
                f"problems {len(report['problems'])}",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
