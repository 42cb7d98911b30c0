"""TLS, mutual TLS and bearer tokens with certificates made in the test (openssl CLI), plus
the serve configuration's safety rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from veil import ConfigError, DetectorSettings
from veil.remote import ChannelOptions, RemoteDetector, RemoteError
from veil.server.service import ServeConfig

URL = "grpcs://localhost:{port}"


def remote(port: int, **options: Any) -> RemoteDetector:
    options.setdefault("retry", _no_retry())
    return RemoteDetector(URL.format(port=port), DetectorSettings(), ChannelOptions(**options))


def _no_retry() -> Any:
    from veil.remote import RetryPolicy

    return RetryPolicy(attempts=1)


@pytest.mark.weights
def test_tls(veil_server: Callable[..., Any], tls_files: dict[str, Path]) -> None:
    server = veil_server(tls_cert=tls_files["server_cert"], tls_key=tls_files["server_key"])
    with remote(server.port, tls_ca=tls_files["ca"]) as detector:
        assert detector.info.model == DetectorSettings().model
    with pytest.raises(RemoteError, match="UNAVAILABLE"):  # a CA that did not sign the server
        remote(server.port, tls_ca=tls_files["other_ca"])
    with pytest.raises(RemoteError, match="UNAVAILABLE"):  # plaintext to a TLS port
        RemoteDetector(
            f"grpc://localhost:{server.port}",
            DetectorSettings(),
            ChannelOptions(retry=_no_retry(), timeout_s=3),
        )


@pytest.mark.weights
def test_mutual_tls(veil_server: Callable[..., Any], tls_files: dict[str, Path]) -> None:
    server = veil_server(
        tls_cert=tls_files["server_cert"],
        tls_key=tls_files["server_key"],
        tls_client_ca=tls_files["ca"],
    )
    with remote(
        server.port,
        tls_ca=tls_files["ca"],
        tls_cert=tls_files["client_cert"],
        tls_key=tls_files["client_key"],
    ) as detector:
        assert detector.info.backend == "onnxruntime"
    with pytest.raises(RemoteError, match="UNAVAILABLE"):  # no client certificate
        remote(server.port, tls_ca=tls_files["ca"])
    with pytest.raises(RemoteError, match="UNAVAILABLE"):  # a certificate from another CA
        remote(
            server.port,
            tls_ca=tls_files["ca"],
            tls_cert=tls_files["other_cert"],
            tls_key=tls_files["other_key"],
        )


@pytest.fixture
def token_server(
    veil_server: Callable[..., Any], tls_files: dict[str, Path], tmp_path: Path
) -> Any:
    tokens = tmp_path / "tokens"
    tokens.write_text("# token  name  scopes\ns3cret-detect edge detect\ns3cret-job batch job\n")
    return veil_server(
        tls_cert=tls_files["server_cert"], tls_key=tls_files["server_key"], token_file=tokens
    )


@pytest.mark.weights
@pytest.mark.parametrize(
    ("token", "code", "message"),
    [
        (None, "UNAUTHENTICATED", "no bearer token"),
        ("wrong", "UNAUTHENTICATED", "unknown bearer token"),
        ("s3cret-job", "PERMISSION_DENIED", "token 'batch' may not call GetModelInfo"),
    ],
    ids=["no token", "wrong token", "wrong scope"],
)
def test_tokens_are_checked(
    token_server: Any, tls_files: dict[str, Path], token: str | None, code: str, message: str
) -> None:
    with pytest.raises(RemoteError, match=f"{code}: {message}") as caught:
        remote(token_server.port, tls_ca=tls_files["ca"], token=token)
    assert caught.value.code == code


@pytest.mark.weights
def test_the_right_token_detects_and_health_needs_none(
    token_server: Any, tls_files: dict[str, Path]
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with remote(token_server.port, tls_ca=tls_files["ca"], token="s3cret-detect") as detector:
        assert detector.info.model == DetectorSettings().model
    credentials = grpc.ssl_channel_credentials(tls_files["ca"].read_bytes())
    with grpc.secure_channel(f"localhost:{token_server.port}", credentials) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"listen": "0.0.0.0:50051"}, "without TLS"),
        ({"listen": "10.1.2.3:50051"}, "without TLS"),
        ({"tls_cert": "a.pem"}, "go together"),
        ({"tls_client_ca": "ca.pem"}, "needs --tls-cert"),
        ({"backend": "triton"}, "needs --triton"),
        ({"backend": "tensorflow"}, "not onnxruntime or triton"),
        ({"listen": "nowhere"}, "HOST:PORT"),
        ({"colour": "red"}, "unknown keys colour"),
    ],
)
def test_unsafe_or_broken_configs_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeConfig.from_sources(toml=settings)


def test_config_precedence_and_explicit_insecure() -> None:
    config = ServeConfig.from_sources(
        toml={"listen": "0.0.0.0:1", "max_batch": 4, "limits": {"window": 8}},
        env={"VEIL_LISTEN": "0.0.0.0:2", "VEIL_INSECURE": "1", "VEIL_TOKENS": "a,b"},
        flags={"listen": "0.0.0.0:3", "max_delay_ms": 2.0, "model": None},
    )
    assert config.listen == "0.0.0.0:3"
    assert config.insecure
    assert config.tokens == ("a", "b")
    assert config.batching.max_batch == 4 and config.batching.max_delay_s == 0.002
    assert config.limits.window == 8
    assert config.model == DetectorSettings().model  # the default preset's
