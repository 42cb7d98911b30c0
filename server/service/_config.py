"""``veil serve``'s settings: :class:`ServeConfig`, validated once, here.

Settings come from, in rising precedence: defaults, a TOML file's ``[serve]`` table (with an
optional ``[serve.limits]`` and ``[serve.batching]``), ``VEIL_*`` environment variables,
command-line flags (:meth:`ServeConfig.from_sources`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from veil.core import ConfigError, split_address
from veil.job import DetectorSettings
from veil.server.engine import members_of

from ._batcher import BatcherConfig
from ._requests import Limits

__all__ = ["BackendKind", "ServeConfig", "is_loopback"]

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
        host, _ = split_address(self.listen, "--listen")
        if self.metrics is not None:
            split_address(self.metrics, "--metrics")
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
            split_address(self.triton, "--triton")
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
