#!/usr/bin/env python3
"""Exit 0 when a gRPC server answers SERVING to the standard health check, 1 otherwise.

The images' HEALTHCHECK (and an exec probe where Kubernetes' native gRPC probe cannot be used,
e.g. a TLS port). Needs only grpcio: the request and response of ``grpc.health.v1.Health/Check``
are encoded here by hand, so the edge image needs no grpcio-health-checking::

    grpc_health.py [--target HOST:PORT] [--service NAME] [--tls-ca F [--tls-cert F --tls-key F]]
                   [--server-name NAME] [--timeout S]

Defaults come from VEIL_HEALTH_TARGET (else 127.0.0.1:50051), VEIL_HEALTH_TLS_CA,
VEIL_HEALTH_TLS_CERT, VEIL_HEALTH_TLS_KEY and VEIL_HEALTH_SERVER_NAME.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

_CHECK = "/grpc.health.v1.Health/Check"
_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _request(service: str) -> bytes:
    """``HealthCheckRequest{service}``: field 1, length-delimited."""
    name = service.encode()
    if len(name) > 127:
        raise ValueError("service name too long for this encoder")
    return b"\x0a" + bytes([len(name)]) + name if name else b""


def _status(response: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, varint; absent means UNKNOWN)."""
    if len(response) >= 2 and response[0] == 0x08:
        return response[1]
    return 0


def check(
    target: str,
    *,
    service: str = "",
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    server_name: str | None = None,
    timeout: float = 3.0,
) -> str:
    """The health status name ``target`` reports for ``service``."""
    options: list[tuple[str, str]] = []
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_ca.read_bytes(),
            private_key=tls_key.read_bytes() if tls_key else None,
            certificate_chain=tls_cert.read_bytes() if tls_cert else None,
        )
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        call = channel.unary_unary(_CHECK)
        response = call(_request(service), timeout=timeout)
    return _STATUS.get(_status(response), "UNKNOWN")


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=env.get("VEIL_HEALTH_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--service", default="", help='service name ("": the whole server)')
    parser.add_argument("--tls-ca", type=Path, default=env.get("VEIL_HEALTH_TLS_CA") or None)
    parser.add_argument("--tls-cert", type=Path, default=env.get("VEIL_HEALTH_TLS_CERT") or None)
    parser.add_argument("--tls-key", type=Path, default=env.get("VEIL_HEALTH_TLS_KEY") or None)
    parser.add_argument("--server-name", default=env.get("VEIL_HEALTH_SERVER_NAME") or None)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        status = check(
            args.target,
            service=args.service,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            server_name=args.server_name,
            timeout=args.timeout,
        )
    except grpc.RpcError as exc:
        print(f"{args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.target}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
