"""Shared fixtures: where the shared test data is, and the bundled sample. Puts benchmarks/
on ``sys.path``: the evaluation harness (``veil_eval``) lives there, outside the product."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "samples" / "astronaut.mp4"
sys.path.append(str(ROOT / "benchmarks"))
# Helpers that hold the asserts of several test modules: rewritten like a test module's (so
# failures show their values), and before a test module imports them ahead of pytest_plugins.
pytest.register_assert_rewrite("deploy_files", "serve_subprocess", "service_fuzzing")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (test data, not part of the product); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    """The bundled sample: real footage of a face, with audio."""
    assert SAMPLE.is_file(), f"the bundled sample {SAMPLE} is missing (make sample)"
    return SAMPLE


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate,
    made with the ``openssl`` CLI (PEM files: ca, server_cert, server_key, client_cert,
    client_key, plus other_ca/other_cert/other_key from an unrelated CA)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    def ca(name: str) -> None:
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem")  # fmt: skip

    def leaf(name: str, issuer: str, extensions: str) -> None:
        (where / f"{name}.ext").write_text(extensions)
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
            f"{issuer}.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext")  # fmt: skip

    ca("ca")
    ca("other_ca")
    leaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    leaf("client", "ca", "extendedKeyUsage=clientAuth\n")
    leaf("other", "other_ca", "extendedKeyUsage=clientAuth\n")
    return {
        "ca": where / "ca.pem",
        "server_cert": where / "server.pem",
        "server_key": where / "server.key",
        "client_cert": where / "client.pem",
        "client_key": where / "client.key",
        "other_ca": where / "other_ca.pem",
        "other_cert": where / "other.pem",
        "other_key": where / "other.key",
    }


@pytest.fixture(scope="session")
def backend_factory() -> Iterator[Callable[[Any, str], Any]]:
    """A ``backend_factory`` for test servers: in-process onnxruntime backends (2 threads), one
    per model, opened on first use and shared by every server of the session (which must
    not close them: each gets a wrapper whose ``close`` does nothing)."""
    from veil.server.service import ServeConfig
    from veil.server.service._serve import open_backend

    opened: dict[str, Any] = {}

    class _Shared:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def close(self) -> None:
            pass

    def factory(_config: Any, model: str) -> Any:
        if model not in opened:
            opened[model] = open_backend(ServeConfig(threads=2), model)
        return _Shared(opened[model])

    yield factory
    for backend in opened.values():
        backend.close()


@pytest.fixture
def veil_server(backend_factory: Callable[[Any, str], Any]) -> Iterator[Callable[..., Any]]:
    """Start real veil servers on 127.0.0.1 port 0: ``veil_server(**settings)`` (the keys of
    a ``[serve]`` TOML table). They share :func:`backend_factory`'s backends and stop
    (drained) when the test ends."""
    from veil.server.service import ServeConfig, create_server

    started: list[Any] = []

    def start(**fields: Any) -> Any:
        fields = {"listen": "127.0.0.1:0", **fields}
        server = create_server(
            ServeConfig.from_sources(toml=fields), backend_factory=backend_factory
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(0)


# `make test` (CI) sets VEIL_TEST_NO_SKIPS: there every real component is installed (Triton,
# Chromium, Prometheus, the weights, ../shared/data), so a skip is a bug hiding a test: the
# Triton tests once skipped silently for a whole session because the launcher looked for its
# environment in the wrong folder. `make test-unit` and a plain pytest still skip cleanly.
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED and os.environ.get("VEIL_TEST_NO_SKIPS"):
        print("\nVEIL_TEST_NO_SKIPS: these tests skipped where nothing may:", file=sys.stderr)
        print("\n".join(f"  {line}" for line in _SKIPPED), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
