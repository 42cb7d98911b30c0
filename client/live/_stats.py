"""A live run's counters, read by the summary line, ``run_live``'s return and the Prometheus
exporter (``--metrics``)."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from veil.core import ConfigError, split_address

from ._policy import Mode

__all__ = ["LiveStats", "StatsSnapshot", "_start_metrics"]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


@dataclass(frozen=True, kw_only=True)
class StatsSnapshot:
    """The counters at one moment; latencies in seconds (milliseconds in :meth:`to_json`)."""

    frames_in: int
    frames_out: int
    frames_by_mode: dict[str, int]
    frames_dropped: dict[str, int]
    detections: int
    detections_late: int
    detector_errors: int
    reconnects: int
    packets_copied: int
    packets_unmapped: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    detect_p50_s: float | None
    stride_recent_mean: float | None

    @property
    def frames_masked_by_policy(self) -> int:
        return self.frames_by_mode[Mode.POLICY.value]

    def to_json(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_by_mode": dict(self.frames_by_mode),
            "frames_masked_by_policy": self.frames_masked_by_policy,
            "frames_dropped": dict(self.frames_dropped),
            "detections": self.detections,
            "detections_late": self.detections_late,
            "detector_errors": self.detector_errors,
            "reconnects": self.reconnects,
            "packets_copied": self.packets_copied,
            "packets_unmapped": self.packets_unmapped,
            "latency_ms": {
                "p50": _ms(self.latency_p50_s),
                "p95": _ms(self.latency_p95_s),
                "max": _ms(self.latency_max_s),
            },
            "detect_ms_p50": _ms(self.detect_p50_s),
            "stride_recent_mean": self.stride_recent_mean,
        }


class LiveStats:
    """Counters of a live run. The engine thread writes them; the exporter's thread reads
    them (the lock guards what is not a plain number)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.by_mode = {mode.value: 0 for mode in Mode}
        self.dropped: dict[str, int] = {}
        self.detections = 0
        self.detections_late = 0
        self.detector_errors = 0
        self.reconnects = 0
        self.packets_copied = 0
        self.packets_unmapped = 0
        self.lag_s = 0.0
        self.stride = 0
        self.latencies: deque[float] = deque(maxlen=1 << 16)
        self.strides: deque[int] = deque(maxlen=1 << 12)
        self.detect_s: deque[float] = deque(maxlen=1 << 12)

    def frame(self, mode: Mode, latency: float) -> None:
        with self._lock:
            self.frames_out += 1
            self.by_mode[mode.value] += 1
            self.lag_s = latency
            self.latencies.append(latency)

    def drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @staticmethod
    def _quantile(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            latencies = list(self.latencies)
            strides = list(self.strides)[-300:]
            detect = list(self.detect_s)
        return StatsSnapshot(
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            frames_by_mode=dict(self.by_mode),
            frames_dropped=dict(self.dropped),
            detections=self.detections,
            detections_late=self.detections_late,
            detector_errors=self.detector_errors,
            reconnects=self.reconnects,
            packets_copied=self.packets_copied,
            packets_unmapped=self.packets_unmapped,
            latency_p50_s=self._quantile(latencies, 0.5),
            latency_p95_s=self._quantile(latencies, 0.95),
            latency_max_s=max(latencies) if latencies else None,
            detect_p50_s=self._quantile(detect, 0.5),
            stride_recent_mean=round(sum(strides) / len(strides), 2) if strides else None,
        )


def _start_metrics(address: str, stats: LiveStats) -> Any:
    """Serve ``stats`` as Prometheus metrics on ``address`` (HOST:PORT); returns the HTTP
    server (``shutdown()`` stops it). prometheus-client is imported here only: the client
    runs without it unless ``--metrics`` is asked for."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError as exc:
        raise ConfigError(
            f"--metrics needs prometheus-client ({exc}); install veil[server] or "
            "pip install prometheus-client"
        ) from exc
    host, port = split_address(address, "--metrics", default_host="127.0.0.1")

    class _Collector:
        def collect(self) -> Any:
            s = stats.snapshot()
            lag = GaugeMetricFamily("veil_live_lag_seconds", "Latency of the last frame sent")
            lag.add_metric([], stats.lag_s)
            yield lag
            stride = GaugeMetricFamily("veil_live_stride", "Frames per detection, recently")
            stride.add_metric([], float(stats.stride))
            yield stride
            quant = GaugeMetricFamily(
                "veil_live_latency_seconds", "Added latency per frame", labels=["quantile"]
            )
            for q, value in (("50", s.latency_p50_s), ("95", s.latency_p95_s)):
                quant.add_metric([q], (_ms(value) or 0.0) / 1000)
            yield quant
            frames = CounterMetricFamily(
                "veil_live_frames", "Frames sent, by how they were masked", labels=["mode"]
            )
            for mode, count in s.frames_by_mode.items():
                frames.add_metric([mode], count)
            yield frames
            policy = CounterMetricFamily(
                "veil_live_frames_masked_by_policy", "Frames masked whole (detector gone)"
            )
            policy.add_metric([], s.frames_masked_by_policy)
            yield policy
            dropped = CounterMetricFamily(
                "veil_live_frames_dropped", "Frames never sent (never unmasked)", labels=["reason"]
            )
            for reason, count in s.frames_dropped.items():
                dropped.add_metric([reason], count)
            yield dropped
            for name, value, text in (
                ("veil_live_detector_errors", s.detector_errors, "Detector calls that failed"),
                ("veil_live_reconnects", s.reconnects, "Times the source was reconnected"),
                ("veil_live_detections_late", s.detections_late, "Detections back too late"),
            ):
                counter = CounterMetricFamily(name, text)
                counter.add_metric([], value)
                yield counter

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]
    try:
        started = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics {address}: cannot listen ({exc})") from exc
    return started[0] if isinstance(started, tuple) else None
