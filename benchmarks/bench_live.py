"""Benchmark ``veil live``: does it keep up with a live input, and what latency does it add?

A clip (default: the 720p30 GT clip from ../shared/data, else the bundled sample) is scaled to
each size asked for, looped to ``--seconds``, published over loopback UDP MPEG-TS at its
native rate, anonymised by ``veil live`` (in process, or through ``--detector`` / ``--serve``)
to a loopback UDP sink, and received. Reported per size:

* added latency p50/p95: inside veil (frame decoded -> frame muxed, from the record) and end
  to end (a frame's last datagram leaving the publisher -> its masked version arriving);
* lag trend: median in-veil latency over the first and the last 10 s (growing lag shows
  here) and frames dropped for lag (the engine's bound on it);
* the detection stride it settled at, and how frames were masked (detected / tracked /
  late / policy).

A size "holds" when nothing was dropped and the last 10 s are no slower than the first.

    .venv/bin/python benchmarks/bench_live.py --sizes 1280x720,960x540,640x360
    .venv/bin/python benchmarks/bench_live.py --sizes 640x360 --serve   # remote detector
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from live_loopback import (  # noqa: E402
    Publisher,
    Receiver,
    free_udp_port,
    latencies,
    make_ts,
    wait_udp_bound,
)

from veil import (  # noqa: E402
    DetectionConfig,
    client_passes,
    open_detector,
)
from veil.live import LiveConfig, run_live  # noqa: E402

GT_CLIP = ROOT.parent / "shared" / "data" / "clips" / "wider_group_tilted_pan.mp4"
SAMPLE = ROOT / "samples" / "astronaut.mp4"


def scaled(clip: Path, size: tuple[int, int], out: Path) -> Path:
    """``clip`` at ``size``: video re-encoded like a camera would (x264 veryfast, a keyframe
    a second, no B-frames), audio packets copied."""
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        rate = vin.average_rate or Fraction(30)
        vout = dst.add_stream("libx264", rate=rate,
                              options={"preset": "veryfast", "bf": "0", "crf": "20"})  # fmt: skip
        vout.width, vout.height, vout.pix_fmt = size[0], size[1], "yuv420p"
        vout.codec_context.gop_size = max(1, round(rate))
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        audio = {s.index: dst.add_stream_from_template(s) for s in src.streams.audio}
        for packet in src.demux():
            if packet.stream.index in audio:
                if packet.size:
                    packet.stream = audio[packet.stream.index]
                    dst.mux(packet)
                continue
            for frame in packet.decode():
                small = frame.reformat(size[0], size[1], "yuv420p", interpolation="AREA")
                small.pts, small.time_base = frame.pts, frame.time_base
                for p in vout.encode(small):
                    dst.mux(p)
        for p in vout.encode(None):
            dst.mux(p)
    return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def run_size(clip: Path, size: tuple[int, int], args: argparse.Namespace, work: Path,
             detector: Any) -> dict[str, Any]:  # fmt: skip
    one = scaled(clip, size, work / f"clip_{size[0]}x{size[1]}.mp4")
    with av.open(str(one)) as c:
        duration = float(c.duration or 0) / 1e6
    loops = max(1, round(args.seconds / duration))
    published = make_ts(one, work / f"pub_{size[0]}.ts", loops=loops)
    receiver = Receiver(work / f"recv_{size[0]}.ts")
    receiver.start()
    port = free_udp_port()
    record = work / f"live_{size[0]}.jsonl"
    stop = threading.Event()
    out: dict[str, Any] = {}

    def go() -> None:
        out["summary"] = run_live(
            f"udp://127.0.0.1:{port}", f"udp://127.0.0.1:{receiver.port}", detector=detector,
            config=LiveConfig(delay_s=args.delay_ms / 1000, read_timeout_s=1.0),
            record=record, stop=stop,
        )  # fmt: skip

    thread = threading.Thread(target=go)
    load_before = os.getloadavg()[0]
    thread.start()
    if not wait_udp_bound(port, 120):
        raise SystemExit("veil live did not start")
    publisher = Publisher(published, port)
    publisher.start()
    publisher.join()
    time.sleep(2.0)
    stop.set()
    thread.join(120)
    receiver.wait_idle(0.5, 10)
    receiver.stop_event.set()
    receiver.join()
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    frames = [x for x in lines if "mode" in x]
    fps = len(frames) / max(1e-9, args.seconds)
    n10 = max(1, int(10 * fps))
    e2e = latencies(published, publisher.sent, receiver.out, receiver.received)
    summary = out["summary"]
    first = _median([x["latency_ms"] for x in frames[:n10]])
    last = _median([x["latency_ms"] for x in frames[-n10:]])
    dropped = sum(summary["frames_dropped"].values())
    return {
        "size": f"{size[0]}x{size[1]}",
        "seconds": round(loops * duration, 1),
        "frames_in": summary["frames_in"],
        "dropped": summary["frames_dropped"],
        "in_veil_ms": summary["latency_ms"],
        "end_to_end_ms": {
            "p50": round(e2e[len(e2e) // 2] * 1000, 1) if e2e else None,
            "p95": round(e2e[int(len(e2e) * 0.95)] * 1000, 1) if e2e else None,
        },
        "median_latency_first_10s_ms": first,
        "median_latency_last_10s_ms": last,
        "stride": summary["stride_recent_mean"],
        "detect_ms_p50": summary["detect_ms_p50"],
        "frames_by_mode": summary["frames_by_mode"],
        "holds": dropped == 0
        and last is not None
        and first is not None
        and last <= max(first * 1.2, first + 20),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=GT_CLIP if GT_CLIP.is_file() else SAMPLE)
    parser.add_argument("--sizes", default="1280x720,960x540,640x360")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    parser.add_argument("--detector", help="grpc[s]://HOST:PORT of a running veil server")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="start a local `veil serve` (1 thread) and detect through it",
    )
    parser.add_argument("--preset", default="fast", help="detector preset (veil live's: fast)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    settings = DetectionConfig.from_preset(args.preset).detector
    server = None
    url = args.detector
    if args.serve:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            grpc_port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "veil.cli", "serve", "--listen", f"127.0.0.1:{grpc_port}",
             "--model", settings.model, "--threads", "1"], cwd=ROOT,
        )  # fmt: skip
        import grpc

        grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{grpc_port}")).result(90)
        url = f"grpc://127.0.0.1:{grpc_port}"
    if url:
        from veil.remote import ChannelOptions

        detector = open_detector(settings, url=url, channel=ChannelOptions(encoding="raw"))
    else:
        detector = open_detector(settings)
    detector = client_passes(detector, settings)  # as `veil live` runs it
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for text in args.sizes.split(","):
                w, h = (int(v) for v in text.lower().split("x"))
                result = run_size(args.clip, (w, h), args, Path(tmp), detector)
                result["detector"] = url or "in process"
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        detector.close()
        if server is not None:
            server.terminate()
            server.wait(30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
