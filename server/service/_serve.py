"""``veil serve``: configuration, :func:`create_server` and :func:`serve`.

:func:`create_server` builds a :class:`VeilServer` without starting it, so tests run a real
server on port 0 in process; :func:`serve` adds signal handling and waits. The server
listens at once, reports health NOT_SERVING while the model loads, and SERVING only after a
warm-up inference passed. SIGTERM drains: health goes NOT_SERVING, new calls get
UNAVAILABLE, calls in flight get ``grace_s`` to finish.

Settings come from, in rising precedence: defaults, a TOML file's ``[serve]`` table (with an
optional ``[serve.limits]``), ``VEIL_*`` environment variables, command-line flags.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from veil.core import ConfigError, DetectorError, fit_size
from veil.job import DetectorSettings
from veil.server.engine import InferenceBackend, member_models, members_of, onnxruntime_missing
from veil.v1 import detection_pb2_grpc as pb_grpc

from ._auth import AuthInterceptor, TokenStore
from ._batcher import Batcher, BatcherConfig
from ._metrics import Metrics, MetricsInterceptor
from ._servicer import SERVICE_NAME, DetectionServicer, Limits
from ._status import DecodeGuard

__all__ = ["BackendKind", "ServeConfig", "VeilServer", "create_server", "serve"]

logger = logging.getLogger(__name__)

_ENV = {
    "listen": "VEIL_LISTEN",
    "metrics": "VEIL_METRICS",
    "backend": "VEIL_BACKEND",
    "triton": "VEIL_TRITON",
    "model": "VEIL_MODEL",
    "provider": "VEIL_PROVIDER",
    "tls_cert": "VEIL_TLS_CERT",
    "tls_key": "VEIL_TLS_KEY",
    "tls_client_ca": "VEIL_TLS_CLIENT_CA",
    "token_file": "VEIL_TOKEN_FILE",
    "insecure": "VEIL_INSECURE",
}


class BackendKind(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    TRITON = "triton"


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"address {address!r} must read HOST:PORT")
    return host.strip("[]"), int(port)


def _check_free(address: str, flag: str) -> None:
    """``ConfigError`` when ``address`` (``HOST:PORT``) cannot be listened on: the port is
    taken, or the host is not this machine's. Asked before gRPC binds, whose C core would
    log its own multi-line error first."""
    host, port = split_address(address)
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything ``veil serve`` needs; validated once, here.

    ``listen``/``metrics``: ``HOST:PORT`` (port 0: any free one; ``metrics`` None: no HTTP
    endpoint). ``backend``: ``onnxruntime`` in process (``provider``, ``threads``) or
    ``triton`` at ``triton`` (``HOST:PORT`` of its gRPC endpoint) serving ``model`` from a
    ``models/`` repository. ``tls_cert``/``tls_key`` turn on TLS; ``tls_client_ca`` also
    requires client certificates signed by it (mutual TLS). ``token_file`` and/or
    ``tokens`` (``VEIL_TOKENS``) turn on bearer-token auth. A non-loopback ``listen`` without
    TLS is refused unless ``insecure``. ``batching`` and ``limits`` bound the work; messages
    above ``max_message_bytes`` are refused (RESOURCE_EXHAUSTED); ``grace_s`` is the drain time.
    ``health_interval_s``: how often a backend that can say so (Triton) is asked whether it is
    ready; health and ``veil_backend_ready`` follow it.
    """

    listen: str = "127.0.0.1:50051"
    metrics: str | None = None
    backend: BackendKind = BackendKind.ONNXRUNTIME
    triton: str | None = None
    model: str = DetectorSettings.model
    provider: str = "cpu"
    threads: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token_file: Path | None = None
    tokens: tuple[str, ...] = field(default=(), repr=False)
    insecure: bool = False
    batching: BatcherConfig = field(default_factory=BatcherConfig)
    limits: Limits = field(default_factory=Limits)
    max_message_bytes: int = 16 << 20
    max_workers: int = 64
    grace_s: float = 10.0
    health_interval_s: float = 2.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "backend", BackendKind(self.backend))
        except ValueError:
            raise ConfigError(f"backend {self.backend!r} is not onnxruntime or triton") from None
        host, _ = split_address(self.listen)
        if self.metrics is not None:
            split_address(self.metrics)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.tls_cert is None and not is_loopback(host) and not self.insecure:
            raise ConfigError(
                f"refusing to listen on {self.listen} without TLS: give --tls-cert and "
                "--tls-key, or --insecure on a trusted network"
            )
        try:
            members_of(self.model)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.backend is BackendKind.TRITON and not self.triton:
            raise ConfigError("--backend triton needs --triton HOST:PORT")
        if self.triton:
            split_address(self.triton)
        if self.max_message_bytes < 1024 or self.max_workers < 4 or self.grace_s < 0:
            raise ConfigError("max_message_bytes, max_workers or grace_s out of range")
        if not 0.05 <= self.health_interval_s <= 300:
            raise ConfigError(f"health_interval_s {self.health_interval_s} is not in 0.05..300")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_sources(
        cls,
        *,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        toml: Mapping[str, Any] | None = None,
    ) -> ServeConfig:
        """Defaults < ``toml`` (the ``[serve]`` table) < ``env`` < ``flags`` (None: unset)."""
        values: dict[str, Any] = {}
        table = dict(toml or {})
        limits = table.pop("limits", {})
        batching = table.pop("batching", {})
        known = {f.name for f in fields(cls)} - {"limits", "batching"}
        known |= {"max_batch", "max_queue", "workers", "max_delay_ms"}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"config [serve]: unknown keys {', '.join(sorted(unknown))}")
        values.update(table)
        env = env or {}
        for name, variable in _ENV.items():
            if env.get(variable):
                values[name] = env[variable]
        if env.get("VEIL_TOKENS"):
            values["tokens"] = tuple(t.strip() for t in env["VEIL_TOKENS"].split(",") if t.strip())
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        if isinstance(values.get("insecure"), str):
            values["insecure"] = values["insecure"].lower() in ("1", "true", "yes")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "token_file"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        batching = dict(batching)
        for name in ("max_batch", "max_queue", "workers"):  # flags that tune the batcher
            if (value := values.pop(name, None)) is not None:
                batching[name] = int(value)
        if (delay_ms := values.pop("max_delay_ms", None)) is not None:
            batching["max_delay_s"] = float(delay_ms) / 1000
        try:
            return cls(**values, batching=BatcherConfig(**batching), limits=Limits(**limits))
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid serve settings: {exc}") from exc


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
        host, _ = split_address(self.config.listen)
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """``http://HOST:PORT/metrics`` once serving metrics (None: no metrics)."""
        if self.config.metrics is None or self.metrics_port is None:
            return None
        host, _ = split_address(self.config.metrics)
        return f"http://{host}:{self.metrics_port}/metrics"

    def start(self) -> VeilServer:
        """Listen, load the model, warm it up, then report SERVING."""
        config = self.config
        if config.metrics is not None:
            host, port = split_address(config.metrics)
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
