"""``veil serve``: :func:`create_server` and :func:`serve`.

:func:`create_server` builds a :class:`VeilServer` without starting it, so tests run a real
server on port 0 in process; :func:`serve` adds signal handling and waits. The server
listens at once, reports health NOT_SERVING while the model loads, and SERVING only after a
warm-up inference passed. SIGTERM drains: health goes NOT_SERVING, new calls get
UNAVAILABLE, calls in flight get ``grace_s`` to finish. Its settings: ``_config``.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from veil.core import ConfigError, DetectorError, fit_size, split_address
from veil.server.engine import InferenceBackend, member_models, onnxruntime_missing
from veil.v1 import detection_pb2_grpc as pb_grpc

from ._auth import AuthInterceptor, TokenStore
from ._batcher import Batcher
from ._config import BackendKind, ServeConfig
from ._metrics import Metrics, MetricsInterceptor
from ._servicer import SERVICE_NAME, DetectionServicer
from ._status import DecodeGuard

__all__ = ["VeilServer", "create_server", "open_backend", "serve"]

logger = logging.getLogger(__name__)


def _check_free(address: str, flag: str) -> None:
    """``ConfigError`` when ``address`` (``HOST:PORT``) cannot be listened on: the port is
    taken, or the host is not this machine's. Asked before gRPC binds, whose C core would
    log its own multi-line error first."""
    host, port = split_address(address, flag)
    if port == 0:
        return
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, IndexError) as exc:
        raise ConfigError(f"cannot listen on {address}: {host} does not resolve ({flag})") from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC and http.server
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            why = {
                errno.EADDRINUSE: "the port is in use",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's",
                errno.EACCES: "no permission for that port",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            raise ConfigError(f"cannot listen on {address}: {why} ({flag})") from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc


def open_backend(config: ServeConfig, model: str) -> InferenceBackend:
    """The inference backend ``config`` names for ``model`` (``config.model`` or, for a fused
    model, one of its members), its weights checked against the manifest."""
    from veil.server.engine import make_model
    from veil.server.engine.weights import WeightsError, model_path, weights_sha256

    backend: InferenceBackend
    if config.backend is BackendKind.TRITON:
        from veil.server.engine import TritonBackend

        assert config.triton is not None  # checked in ServeConfig
        backend = TritonBackend(url=config.triton, model=model)
    else:
        try:
            from veil.server.engine import ExecutionProvider, OnnxRuntimeBackend, OnnxRuntimeConfig
        except ImportError as exc:
            raise DetectorError(onnxruntime_missing(exc)) from exc

        face_model = make_model(model)
        backend = OnnxRuntimeBackend(
            model_path(model),
            input_name=face_model.input_name,
            output_names=face_model.output_names,
            config=OnnxRuntimeConfig(
                provider=ExecutionProvider(config.provider), threads=config.threads
            ),
        )
    expected = weights_sha256(model)
    if backend.weights_sha256 != expected:
        backend.close()
        raise WeightsError(
            f"{config.backend.value} serves {model} with sha256 {backend.weights_sha256}, "
            f"the manifest pins {expected}"
        )
    return backend


class VeilServer:
    """A configured veil server: :meth:`start`, :meth:`stop`, or use it as a context manager.

    ``port`` and ``metrics_port`` are the bound ports (useful with port 0).
    """

    def __init__(
        self,
        config: ServeConfig,
        backend_factory: Callable[[ServeConfig, str], InferenceBackend] = open_backend,
    ) -> None:
        self.config = config
        self._backend_factory = backend_factory
        self.metrics = Metrics()
        tokens = None
        if config.token_file is not None or config.tokens:
            tokens = TokenStore.load(config.token_file, {"VEIL_TOKENS": ",".join(config.tokens)})
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if tokens is not None:
            interceptors.append(AuthInterceptor(tokens))
        interceptors.append(DecodeGuard())  # innermost: the others keep its deserializer
        self._servicer = DetectionServicer(
            limits=config.limits, metrics=self.metrics, tokens=tokens
        )
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="veil-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=config.max_workers - 4,
        )
        pb_grpc.add_DetectionServiceServicer_to_server(self._servicer, self._server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self._bind()
        self.metrics_port: int | None = None
        self._backends: dict[str, InferenceBackend] = {}
        self._batcher: Batcher | None = None
        self._stopped = threading.Event()
        self._closing = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _bind(self) -> int:
        config = self.config
        _check_free(config.listen, "--listen")
        credentials = None
        if config.tls_cert is not None and config.tls_key is not None:
            client_ca = config.tls_client_ca
            credentials = grpc.ssl_server_credentials(
                [(_read(config.tls_key, "TLS key"), _read(config.tls_cert, "TLS certificate"))],
                root_certificates=None if client_ca is None else _read(client_ca, "client CA"),
                require_client_auth=client_ca is not None,
            )
        try:
            if credentials is not None:
                port = self._server.add_secure_port(config.listen, credentials)
            else:
                port = self._server.add_insecure_port(config.listen)
        except RuntimeError:  # grpcio >= 1.60 raises where older versions returned 0
            port = 0
        if port == 0:
            raise ConfigError(
                f"cannot listen on {config.listen}: the port is in use, or the address is not "
                "one of this machine's (--listen HOST:PORT)"
            )
        return port

    def _set_health(self, status: Any) -> None:
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)

    @property
    def address(self) -> str:
        host, _ = split_address(self.config.listen, "--listen")
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """``http://HOST:PORT/metrics`` once serving metrics (None: no metrics)."""
        if self.config.metrics is None or self.metrics_port is None:
            return None
        host, _ = split_address(self.config.metrics, "--metrics")
        return f"http://{host}:{self.metrics_port}/metrics"

    def start(self) -> VeilServer:
        """Listen, load the model, warm it up, then report SERVING."""
        config = self.config
        if config.metrics is not None:
            host, port = split_address(config.metrics, "--metrics")
            try:
                _check_free(config.metrics, "--metrics")
                self.metrics_port = self.metrics.serve_http(host, port)
            except (ConfigError, OSError) as exc:
                self._server.stop(None)  # bound, never started: nothing to drain
                self._stopped.set()
                if isinstance(exc, ConfigError):
                    raise
                raise ConfigError(
                    f"cannot serve metrics on {config.metrics}: {exc.strerror or exc} "
                    "(--metrics HOST:PORT)"
                ) from exc
        self._server.start()
        logger.info(
            "listening on %s (%s)%s; health NOT_SERVING while %s loads on %s",
            self.address,
            "mTLS" if config.tls_client_ca else "TLS" if config.tls else "plaintext",
            "" if self.metrics_port is None else f", metrics on {self.metrics_address}",
            config.model,
            config.backend.value,
        )
        try:
            for name in member_models(config.model):
                self._backends[name] = self._backend_factory(config, name)
            self._batcher = Batcher(
                backends=self._backends,
                model=config.model,
                config=config.batching,
                metrics=self.metrics,
            )
            self._warm_up(self._batcher)
        except BaseException:
            self._stop(0, logging.DEBUG)  # the error that ends the start says it all
            raise
        self._servicer.set_ready(self._batcher)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.metrics.backend_ready.set(1)
        watched = [b for b in self._backends.values() if callable(getattr(b, "ready", None))]
        if watched:
            self._watchdog = threading.Thread(
                target=self._watch, args=(watched,), name="veil-health", daemon=True
            )
            self._watchdog.start()
        logger.info("health SERVING: %s on %s, warm-up passed", config.model, self.address)
        return self

    def _watch(self, backends: list[Any]) -> None:
        """Every ``health_interval_s``: ask the backends whether they are ready; health, the
        servicer (UNAVAILABLE while one is not) and ``veil_backend_ready`` follow."""
        ready = True
        backend = backends[0]
        while not self._closing.wait(self.config.health_interval_s):
            try:
                now = all(bool(b.ready()) for b in backends)
            except Exception as exc:  # a readiness probe that fails means not ready
                logger.debug("backend readiness probe failed: %s", exc)
                now = False
            if self._closing.is_set():
                return
            self.metrics.backend_ready.set(1 if now else 0)
            if now == ready:
                continue
            ready = now
            self._servicer.set_backend_ready(ready)
            if ready:
                logger.warning("the %s backend is ready again: SERVING", backend.name)
                self._set_health(health_pb2.HealthCheckResponse.SERVING)
            else:
                logger.error("the %s backend is not ready: NOT_SERVING", backend.name)
                self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    @staticmethod
    def _warm_up(batcher: Batcher) -> None:
        start = time.perf_counter()
        detector = batcher.detector(None, None, 640)
        width, height = fit_size(1280, 720, 640)
        image = np.full((height, width, 3), 128, np.uint8)
        try:
            detector.detect([image], [(1280, 720)])
        except Exception as exc:
            raise DetectorError(f"the warm-up inference failed: {exc}") from exc
        logger.info("warm-up inference passed in %.0f ms", 1e3 * (time.perf_counter() - start))

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, refuse new calls, let calls in flight finish."""
        self._stop(grace, logging.INFO)

    def _stop(self, grace: float | None, level: int) -> None:
        if self._stopped.is_set():
            return
        grace = self.config.grace_s if grace is None else grace
        logger.log(level, "draining (grace %.1f s)", grace)
        self._closing.set()
        self._health.enter_graceful_shutdown()
        self._servicer.drain()
        self._server.stop(grace).wait()
        if self._watchdog is not None:
            self._watchdog.join(timeout=self.config.health_interval_s + 5)
        if self._batcher is not None:
            self._batcher.close(timeout=grace + 1)
        for backend in self._backends.values():
            backend.close()
        self.metrics.close()
        self._stopped.set()
        logger.log(level, "stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def __enter__(self) -> VeilServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(0 if exc is not None else None)


def create_server(
    config: ServeConfig,
    *,
    backend_factory: Callable[[ServeConfig, str], InferenceBackend] = open_backend,
) -> VeilServer:
    """A bound, not yet started server for ``config`` (port 0 picks a free port)."""
    return VeilServer(config, backend_factory)


def serve(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    server = create_server(config)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
