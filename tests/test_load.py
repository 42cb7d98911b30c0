"""Load, short version (CI): 8 concurrent DetectStream calls against one real ``veil serve``
on loopback for a bounded time. No frame lost or reordered, detections equal to a
single-stream reference, no errors, server memory bounded; p99 latency printed.
The long version is ``benchmarks/load_service.py`` (numbers in docs/hardening.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from load_service import run  # noqa: E402

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

SECONDS = float(os.environ.get("LOAD_SECONDS", "15"))


def test_eight_streams_lose_nothing_and_memory_stays_bounded() -> None:
    report = run(streams=8, seconds=SECONDS, max_side=160, frames=6)
    print(json.dumps(report))
    assert report["errors"] == []
    assert report["problems"] == []  # every index in order, every detection as the reference
    assert all(n > 0 for n in report["per_stream_frames"]), report["per_stream_frames"]
    rss = report["server_rss_mib"]
    assert rss["peak"] - rss["before"] < 200, rss
    assert report["latency_ms"]["p99"] > 0
