"""A real ``tritonserver`` for tests and development: :class:`TritonServer` starts the binary
that ``nvidia-pytriton`` bundles (``make triton-env`` installs it into ``.triton-venv``) on
loopback ports, serving the model repository through the python-based onnxruntime backend in
``deploy/triton/backends`` (see docs/triton.md). Test tooling, not part of veil: the product's
Triton client is ``veil.server.engine.TritonBackend``. From a checkout::

    .venv/bin/python tests/triton_server.py [--repository DIR] [--grpc-port 8001]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from veil.server.engine import TritonBackendError
from veil.server.engine.weights import (
    MODEL_FILE,
    MODEL_VERSION,
    WeightsError,
    default_repository,
    load_manifest,
    sha256_file,
    weights_sha256,
)

__all__ = ["TritonLaunchError", "TritonServer", "TritonServerConfig", "main"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
"""The source checkout: the launcher needs deploy/ and .triton-venv."""


class TritonLaunchError(TritonBackendError):
    """``tritonserver`` could not be started (environment missing, bad model, timeout)."""


@dataclass(frozen=True, kw_only=True)
class TritonServerConfig:
    """How :class:`TritonServer` runs ``tritonserver``.

    ``venv`` is the server environment (``make triton-env``); ``backends`` holds the
    python-based backends added to pytriton's python backend. Ports ``0`` are chosen free.
    ``startup_timeout_s`` bounds the wait until every model is ready.
    """

    model_repository: Path = field(default_factory=default_repository)
    venv: Path = ROOT / ".triton-venv"
    backends: Path = ROOT / "deploy" / "triton" / "backends"
    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    startup_timeout_s: float = 60.0
    log_verbose: int = 0

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port", "metrics_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ValueError(f"{name} {getattr(self, name)} is not a port")
        if self.startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s {self.startup_timeout_s} is not positive")


_PROBE = """
import importlib.util, json, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
print(json.dumps({
    "pytriton": spec.submodule_search_locations[0] if spec else None,
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
}))
"""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _verify_weights(repository: Path) -> None:
    """Every manifest model in ``repository`` must be the file the manifest pins."""
    for name in load_manifest():
        if not (repository / name / "config.pbtxt").is_file():
            continue
        path = repository / name / MODEL_VERSION / MODEL_FILE
        if not path.is_file():
            raise TritonLaunchError(f"{path} is missing: run `veil models fetch`")
        actual, expected = sha256_file(path), weights_sha256(name)
        if actual != expected:
            raise WeightsError(
                f"{path} has sha256 {actual}, the manifest pins {expected}: run `veil models fetch`"
            )


class TritonServer:
    """A running ``tritonserver`` process; :meth:`start` it, :meth:`stop` it (or use ``with``).

    The backend directory is assembled in a temporary folder: a copy of pytriton's python
    backend with the stub for the server venv's Python, and a symlink to each folder of
    ``config.backends`` (Triton refuses a backend library reached through a symlink, so the
    python backend is copied, 3 MB). ``LD_LIBRARY_PATH`` starts with the venv interpreter's
    ``LIBDIR`` so the stub loads that ``libpython`` and not the system's.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        workdir: Path,
        config: TritonServerConfig,
        ports: dict[str, int],
    ) -> None:
        self._process = process
        self._workdir = workdir
        self._config = config
        self._ports = ports

    @classmethod
    def start(cls, config: TritonServerConfig | None = None) -> TritonServer:
        """Start Triton and wait until it and every model in the repository are ready."""
        config = config or TritonServerConfig()
        repository = config.model_repository.resolve()
        _verify_weights(repository)
        python = config.venv / "bin" / "python"
        if not python.is_file():
            raise TritonLaunchError(
                f"no Triton environment at {config.venv}: run `make triton-env`"
            )
        probe = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, check=False
        )
        facts = json.loads(probe.stdout) if probe.returncode == 0 else {}
        if not facts.get("pytriton"):
            raise TritonLaunchError(
                f"{python} has no nvidia-pytriton ({probe.stderr.strip()}): run `make triton-env`"
            )
        dist = Path(facts["pytriton"]) / "tritonserver"
        libs = Path(facts["pytriton"]).parent / "nvidia_pytriton.libs"
        workdir = Path(tempfile.mkdtemp(prefix="veil-triton-"))
        try:
            backends = workdir / "backends"
            shutil.copytree(dist / "backends" / "python", backends / "python")
            stub = dist / "python_backend_stubs" / facts["version"] / "triton_python_backend_stub"
            shutil.copy2(stub, backends / "python" / stub.name)
            for backend in sorted(config.backends.iterdir()):
                (backends / backend.name).symlink_to(backend.resolve(), target_is_directory=True)
            ports = {
                name: getattr(config, f"{name}_port") or _free_port(config.host)
                for name in ("grpc", "http", "metrics")
            }
            command = [
                str(dist / "bin" / "tritonserver"),
                f"--model-repository={repository}",
                f"--backend-directory={backends}",
                f"--cache-directory={dist / 'caches'}",
                *(f"--{name}-address={config.host}" for name in ports),
                *(f"--{name}-port={port}" for name, port in ports.items()),
                "--disable-auto-complete-config",
                "--strict-readiness=true",
                "--exit-on-error=true",
                "--exit-timeout-secs=5",
                "--allow-gpu-metrics=false",
                f"--log-verbose={config.log_verbose}",
            ]
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (facts["libdir"], str(libs), env.get("LD_LIBRARY_PATH")) if p
            )
            # The stub's embedded interpreter finds the venv's site-packages through PATH.
            env["PATH"] = os.pathsep.join([str(config.venv / "bin"), env.get("PATH", "")])
            log = (workdir / "tritonserver.log").open("wb")
            with log:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        server = cls(process, workdir, config, ports)
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        logger.info(
            "tritonserver pid %d ready: grpc %s, metrics %s, repository %s",
            process.pid,
            server.grpc_url,
            server.metrics_url,
            repository,
        )
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._config.startup_timeout_s
        with grpcclient.InferenceServerClient(self.grpc_url) as client:
            while True:
                if self._process.poll() is not None:
                    raise TritonLaunchError(
                        f"tritonserver exited with {self._process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=1.0):
                        return
                except InferenceServerException:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise TritonLaunchError(
                        f"tritonserver not ready after {self._config.startup_timeout_s} s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.1)

    @property
    def grpc_url(self) -> str:
        """``host:port`` for ``tritonclient.grpc`` and ``veil.server.engine.TritonBackend``."""
        return f"{self._config.host}:{self._ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{self._config.host}:{self._ports['http']}"

    @property
    def metrics_url(self) -> str:
        """Triton's Prometheus endpoint."""
        return f"http://{self._config.host}:{self._ports['metrics']}/metrics"

    @property
    def pid(self) -> int:
        return self._process.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (stdout and stderr)."""
        path = self._workdir / "tritonserver.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait(self) -> int:
        """Block until the server exits; its exit status."""
        return self._process.wait()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL after ``grace_s``; idempotent."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver pid %d ignored SIGTERM; killing it", self.pid)
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/triton_server.py",
        description="Run Triton on this machine's CPU, serving the model repository.",
    )
    parser.add_argument("--repository", type=Path, help="model repository (default: models/)")
    parser.add_argument("--venv", type=Path, help="server environment (default: .triton-venv)")
    parser.add_argument("--host", default="127.0.0.1")
    for name, port in (("grpc", 8001), ("http", 8000), ("metrics", 8002)):
        parser.add_argument(f"--{name}-port", type=int, default=port, help="0: any free port")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="Triton's log level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    defaults = TritonServerConfig()
    config = TritonServerConfig(
        model_repository=args.repository or defaults.model_repository,
        venv=args.venv or defaults.venv,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_verbose=args.verbose,
    )
    try:
        server = TritonServer.start(config)
    except (TritonBackendError, WeightsError) as error:
        logger.error("%s", error)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C does
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
