"""How a client reaches a veil server: the URL, TLS and token, deadlines, retries, and the
one place a gRPC error becomes a veil error.

Every RPC has a deadline (:class:`ChannelOptions`); UNAVAILABLE is retried with exponential
backoff (:class:`RetryPolicy`); every gRPC error becomes a :class:`RemoteError` in
:func:`translate`, the one place that knows status codes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from veil.core import ConfigError, DetectorError, DetectorLost, backoff
from veil.wire import Encoding

__all__ = [
    "RETRYABLE",
    "ChannelOptions",
    "RemoteError",
    "RetryPolicy",
    "ServerLost",
    "call_unary",
    "describe",
    "open_channel",
    "parse_url",
    "read_token",
    "translate",
]

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


class RemoteError(DetectorError):
    """A call to a veil server failed; ``code`` is the gRPC status code's name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class ServerLost(RemoteError, DetectorLost):
    """The server stayed unreachable for the whole retry budget: a file job stops (exit 6,
    nothing written) instead of masking the rest of the video whole by policy."""


def describe(exc: BaseException) -> str:
    """One line for a log: the status code and details, not the call object's repr."""
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def translate(exc: grpc.RpcError, what: str, target: str) -> RemoteError:
    """The one place a gRPC error becomes a veil error."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "UNKNOWN"
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    hint = {
        "UNAVAILABLE": " (is the server running and reachable, and does TLS match?)",
        "UNAUTHENTICATED": " (check --token-file)",
        "DEADLINE_EXCEEDED": " (the server is too slow or overloaded)",
    }.get(name, "")
    return RemoteError(f"{what} at {target}: {name}: {details}{hint}", name)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries of UNAVAILABLE: ``attempts`` tries in all, sleeping ``initial_backoff_s``,
    then ``multiplier`` times more each time, at most ``max_backoff_s``. The default budget
    (about 16 s of backoff) outlasts a server restart (model load and warm-up)."""

    attempts: int = 8
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts {self.attempts} is below 1")

    def backoff(self, failures: int) -> float:
        return backoff(
            failures,
            initial=self.initial_backoff_s,
            multiplier=self.multiplier,
            ceiling=self.max_backoff_s,
        )


@dataclass(frozen=True, kw_only=True)
class ChannelOptions:
    """How a client reaches a veil server.

    - ``tls_ca``: CA bundle (PEM) that signed the server's certificate (``grpcs://``; ``None``:
      the system roots); ``tls_cert`` + ``tls_key``: this client's certificate for mutual TLS.
    - ``token``: bearer token sent with every call (see :func:`read_token`).
    - ``timeout_s``: deadline of a unary call; ``frame_timeout_s``: longest wait for one
      frame's result on a stream; ``stream_timeout_s``: deadline of a whole ``DetectStream``
      (one video); ``job_timeout_s``: deadline of a cloud job, upload to last byte back.
    - ``encoding`` and ``jpeg_quality``: how frames travel (hybrid mode).
    - ``max_message_bytes``: the largest message sent or received.
    """

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    frame_timeout_s: float = 30.0
    stream_timeout_s: float = 6 * 3600.0
    job_timeout_s: float = 6 * 3600.0
    encoding: Encoding = Encoding.PNG
    jpeg_quality: int = 90
    max_message_bytes: int = 16 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoding", Encoding(self.encoding))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together (mutual TLS)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality {self.jpeg_quality} must be between 1 and 100")
        for name in ("timeout_s", "frame_timeout_s", "stream_timeout_s", "job_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (first non-comment line), else ``$VEIL_TOKEN``, else None."""
    if path is None:
        return os.environ.get("VEIL_TOKEN") or None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from exc
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            return text.split()[0]
    raise ConfigError(f"token file {path} holds no token")


def parse_url(url: str) -> tuple[str, bool]:
    """``grpc://host:port`` or ``grpcs://host:port`` as (gRPC target, use TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or parts.port is None:
        raise ConfigError(f"server URL {url!r} must read grpc://HOST:PORT or grpcs://HOST:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"server URL {url!r} has a path or query; give only HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.scheme == "grpcs"


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc


def open_channel(url: str, options: ChannelOptions) -> tuple[grpc.Channel, str]:
    """A channel to ``url`` (see :func:`parse_url`) and its target, for messages."""
    target, secure = parse_url(url)
    channel_args = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if not secure:
        if options.tls_ca or options.tls_cert:
            raise ConfigError(f"{url}: TLS files given for a plain grpc:// URL; use grpcs://")
        return grpc.insecure_channel(target, options=channel_args), target
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(options.tls_ca),
        private_key=_read(options.tls_key),
        certificate_chain=_read(options.tls_cert),
    )
    return grpc.secure_channel(target, credentials, options=channel_args), target


def call_unary(
    call: Callable[..., Any], request: Any, options: ChannelOptions, what: str, target: str
) -> Any:
    """``call(request)`` with the options' deadline and token, UNAVAILABLE retried."""
    failures = 0
    while True:
        try:
            return call(request, timeout=options.timeout_s, metadata=options.metadata)
        except grpc.RpcError as exc:
            failures += 1
            if exc.code() in RETRYABLE and failures < options.retry.attempts:  # type: ignore[attr-defined]
                logger.warning("%s at %s unavailable; retrying (%d)", what, target, failures)
                time.sleep(options.retry.backoff(failures))
                continue
            raise translate(exc, what, target) from exc
