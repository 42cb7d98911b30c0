"""``veil live``: anonymise a live stream within a bounded delay (issue 4, docs/live.md), until
the source ends or SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from veil.core import Detector

from ._options import add_channel_args, add_detection_args, add_style_args
from ._settings import channel_options, detection_config, mask_style


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "live",
        help="anonymise a live stream within a bounded delay (see docs/live.md)",
        description="SOURCE: rtsp:// udp:// rtp:// rtmp:// http(s):// (HLS too) srt:// (if "
        "FFmpeg has libsrt), /dev/videoN, or a file (played at its native rate). SINK: udp:// "
        "srt:// tcp:// (MPEG-TS), rtmp://, rtsp:// (push), a .m3u8 playlist (HLS segments "
        "beside it) or a file. Frames are never sent unmasked: a frame whose detection is late "
        "is masked from grown track predictions, and whole while the detector is gone.",
    )
    p.add_argument("source", help="source URL, /dev/videoN or file")
    p.add_argument("sink", help="sink URL or path")
    p.add_argument(
        "--delay-ms",
        type=float,
        default=200.0,
        help="delay budget: no frame is held longer (default 200)",
    )
    p.add_argument(
        "--trust-ms",
        type=float,
        default=120.0,
        help="mask whole any frame whose surrounding detections are further apart than this "
        "(fail closed; default 120)",
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="REC.jsonl",
        help="stream the detection record here (JSON Lines)",
    )
    p.add_argument(
        "--on-outage",
        choices=["mask", "stop"],
        default="mask",
        help="detector gone longer than the delay: mask whole frames (default) "
        "or finish the output and stop",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics here (needs prometheus-client)",
    )
    p.add_argument(
        "--reconnect-attempts",
        type=int,
        metavar="N",
        help="give up after N failed reconnects in a row (default: never)",
    )
    p.add_argument("--live-crf", type=int, help="live encoder quality (default 23)")
    p.add_argument("--live-preset", help="live x264 preset (default ultrafast)")
    add_detection_args(p)
    p.set_defaults(preset="fast")
    add_style_args(p.add_argument_group("mask style"))
    remote = p.add_argument_group("remote detection")
    remote.add_argument(
        "--detector", metavar="URL", help="detect on a veil server, grpc[s]://HOST:PORT"
    )
    add_channel_args(remote, frame_encoding="raw")  # live: raw is cheapest on the wire


def run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """``veil live``: runs until the source ends or SIGINT/SIGTERM, which finish the output
    and the record (exit 0)."""
    from veil import client_passes, open_detector
    from veil.live import LiveConfig, ReconnectPolicy, run_live
    from veil.media import LiveEncoder

    detection = detection_config(args, config)
    changes = {"crf": args.live_crf, "preset": args.live_preset}
    base = replace(LiveEncoder().base, **{k: v for k, v in changes.items() if v is not None})
    live = LiveConfig(
        delay_s=args.delay_ms / 1000,
        trust_s=args.trust_ms / 1000,
        on_outage=args.on_outage,
        reconnect=ReconnectPolicy(attempts=args.reconnect_attempts),
        tracker=detection.tracker_for_run,
        style=mask_style(args, config),
        encoder=LiveEncoder(base=base),
    )
    stop = threading.Event()
    caught: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        caught.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        detector = client_passes(
            open_detector(
                detection.detector,
                url=args.detector,
                channel=channel_options(args) if args.detector else None,
            ),
            detection.detector,
        )
        try:
            summary = run_live(
                args.source,
                args.sink,
                detector=detector,
                config=live,
                record=args.record,
                metrics=args.metrics,
                stop=stop,
                detector_json=detector.info.to_json() | {"preset": detection.preset.value},
            )
        finally:
            _close_soon(detector)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    how = f" on {caught[0]}" if caught else ""
    print(f"veil live: ended{how}: {json.dumps(summary)}", file=sys.stderr)
    return 0


def _close_soon(detector: Detector, timeout_s: float = 2.0) -> None:
    """Close a detector without waiting on one that hangs (live mode outlives it)."""
    closer = threading.Thread(target=detector.close, name="veil-detector-close", daemon=True)
    closer.start()
    closer.join(timeout_s)
