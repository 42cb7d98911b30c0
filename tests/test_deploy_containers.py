"""The containers, checked offline: the compose files (valid against the compose-spec schema
vendored by check-jsonschema, health-checked, pinned, paths that exist), the Dockerfiles
(hadolint, every COPY source exists and is in the build context, multi-stage, non-root,
pinned, health-checked) and deploy/docker/grpc_health.py, the health check the images and the
Kubernetes probes run.

No Docker engine is needed. A missing hadolint or check-jsonschema skips its tests, except in
CI (``CI`` set), where it is a failure.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import COMPOSE, DOCKER, DOCKERFILES, ROOT, _run, _tool

# --- compose ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_file_is_valid_against_the_compose_spec(name: str) -> None:
    _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE / name))


def test_the_compose_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (COMPOSE / "compose.yaml").read_text().replace("healthcheck:", "healthchek:", 1)
    )
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "healthchek" in result.stdout + result.stderr


def test_compose_brings_up_the_whole_pool_with_health_checks() -> None:
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    assert set(services) == {"triton", "veil", "prometheus", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert re.search(r":v?\d[\w.-]*}?$", service["image"]), f"{name}: image tag not pinned"
    assert services["veil"]["depends_on"]["triton"]["condition"] == "service_healthy"
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith(("127.0.0.1:", "${VEIL_PUBLISH_ADDRESS:-127.0.0.1}")), name


def test_compose_paths_exist() -> None:
    for name in ("compose.yaml", "compose.tls.yaml"):
        services = yaml.safe_load((COMPOSE / name).read_text())["services"]
        for service in services.values():
            build = service.get("build")
            if build:
                context = (COMPOSE / build["context"]).resolve()
                assert (context / build["dockerfile"]).is_file()
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if source.startswith("."):
                    if source == "./certs":  # made by the operator (docs/deploy.md, mTLS)
                        continue
                    assert (COMPOSE / source).exists(), volume


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    _run(_tool("hadolint"), "--failure-threshold", "info", str(dockerfile))


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for instruction, args in _instructions(dockerfile):
        if instruction != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources += words[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    ignore = Path(f"{dockerfile}.dockerignore")
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context starts empty and lets in what the image copies"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    sources = _copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), (
            f"{dockerfile.name}: COPY {source}: no such path"
        )
        path = source.rstrip("/")
        assert any(
            fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in allowed
        ), f"{dockerfile.name}: COPY {source} is left out of the context by {ignore.name}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_non_root_pinned_and_health_checked(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    args = dict(a.split("=", 1) for name, a in instructions if name == "ARG" and "=" in a)
    for stage in stages:
        image = stage.split()[0]
        image = args.get(image.strip("${}"), image)
        assert image in {"build"} or re.search(r":[\w.-]*\d", image), f"unpinned base {image}"
    users = [a for name, a in instructions if name == "USER"]
    assert users and not re.match(r"^(root|0)(:|$)", users[-1])
    assert re.match(r"^(\$\{\w+\}|\d+)(:(\$\{\w+\}|\d+))?$", users[-1]), "numeric user"
    [healthcheck] = [a for name, a in instructions if name == "HEALTHCHECK"]
    assert "grpc_health.py" in healthcheck


# --- the health check the images and probes run ----------------------------------------------


def _health() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grpc_health", DOCKER / "grpc_health.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_health_check_encodes_like_the_generated_messages() -> None:
    from grpc_health.v1 import health_pb2

    health = _health()
    for service in ("", "veil.v1.DetectionService"):
        assert (
            health._request(service)
            == health_pb2.HealthCheckRequest(service=service).SerializeToString()
        )
    for status in (0, 1, 2, 3):
        message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert health._status(message) == status


@pytest.mark.weights
def test_the_health_check_over_mutual_tls(veil_server: Any, tls_files: dict[str, Path]) -> None:
    """What the Kubernetes probes and the compose TLS override run against veil serve."""
    server = veil_server(
        tls_cert=str(tls_files["server_cert"]),
        tls_key=str(tls_files["server_key"]),
        tls_client_ca=str(tls_files["ca"]),
    )
    health = _health()
    argv = [
        "--target", f"127.0.0.1:{server.port}", "--tls-ca", str(tls_files["ca"]),
        "--server-name", "localhost",
    ]  # fmt: skip
    client = [
        "--tls-cert",
        str(tls_files["client_cert"]),
        "--tls-key",
        str(tls_files["client_key"]),
    ]
    assert health.main([*argv, *client]) == 0
    assert health.main([*argv, "--service", "veil.v1.DetectionService", *client]) == 0
    assert health.main(argv) == 1  # no client certificate: refused
    assert health.main(["--target", f"127.0.0.1:{server.port}", "--timeout", "2"]) == 1
