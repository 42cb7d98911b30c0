"""Prometheus metrics of the detection service, on their own registry and HTTP port.

Each server owns a :class:`Metrics` (its own ``CollectorRegistry``), so several servers in
one process (tests, benchmarks) never share counters. RPC latency and outcome come from
:class:`MetricsInterceptor`, which times streams until they end, not until they start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ._status import rewrap_handler

__all__ = ["Metrics", "MetricsInterceptor"]

logger = logging.getLogger(__name__)

_BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_RPC_BUCKETS = (*_LATENCY_BUCKETS, 60.0, 300.0, 1800.0)


class Metrics:
    """Every metric the service exports.

    - ``veil_frames_total{backend,model,outcome}``: detected, rejected (invalid), overloaded,
      expired (deadline), cancelled, failed (backend error)
    - ``veil_requests_total{method,code}`` and ``veil_rpc_errors_total{code}``
    - ``veil_rpc_duration_seconds{method}``: until the last message of a stream
    - ``veil_batch_size{backend,model}``, ``veil_inference_seconds{backend,model}``,
      ``veil_frame_latency_seconds{backend,model}`` (queued to answered)
    - ``veil_queue_depth`` (frames waiting), ``veil_active_streams``, ``veil_active_jobs``
    - ``veil_backend_ready``: 1 while the inference backend answers ready (health watchdog)
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "veil_frames", "Frames by outcome.", ["backend", "model", "outcome"], registry=r
        )
        self.requests = Counter(
            "veil_requests", "RPCs by method and status code.", ["method", "code"], registry=r
        )
        self.errors = Counter(
            "veil_rpc_errors",
            "RPCs that ended with an error, by status code.",
            ["code"],
            registry=r,
        )
        self.rpc_seconds = Histogram(
            "veil_rpc_duration_seconds",
            "RPC duration, streams until they end.",
            ["method"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "veil_batch_size",
            "Frames per inference batch.",
            ["backend", "model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "veil_inference_seconds",
            "Time per batch: pre-processing, inference, post-processing.",
            ["backend", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_latency = Histogram(
            "veil_frame_latency_seconds",
            "Time from a frame entering the queue to its result.",
            ["backend", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("veil_queue_depth", "Frames waiting for a batch.", registry=r)
        self.active_streams = Gauge("veil_active_streams", "Open DetectStream calls.", registry=r)
        self.active_jobs = Gauge("veil_active_jobs", "Cloud jobs running.", registry=r)
        self.backend_ready = Gauge(
            "veil_backend_ready", "1 while the inference backend is ready, else 0.", registry=r
        )
        self._http: Any = None

    def serve_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port); returns the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        bound = int(server.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _method_name(full: str) -> str:
    return full.rsplit("/", 1)[-1] or full


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status code and times it until it ends.

    The clock stops in a termination callback, so a stream is timed until its last message
    (or its cancellation), whatever the handler's shape.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = _method_name(handler_call_details.method)  # type: ignore[attr-defined]
        metrics = self._metrics

        def timed(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                start = time.perf_counter()
                finished = [False]

                def done() -> None:
                    code = context.code()  # type: ignore[attr-defined]
                    if code is None:
                        code = grpc.StatusCode.OK if finished[0] else grpc.StatusCode.CANCELLED
                    name = code.name
                    metrics.requests.labels(method, name).inc()
                    if code is not grpc.StatusCode.OK:
                        metrics.errors.labels(name).inc()
                    metrics.rpc_seconds.labels(method).observe(time.perf_counter() - start)

                context.add_callback(done)
                if handler.response_streaming:
                    return _streamed(behaviour(request, context), finished)
                result = behaviour(request, context)
                finished[0] = True
                return result

            return run

        return rewrap_handler(handler, timed)


def _streamed(responses: Any, finished: list[bool]) -> Any:
    yield from responses
    finished[0] = True
