"""Triton as an inference backend, and a launcher for a real ``tritonserver`` (tests, dev).

:class:`TritonBackend` implements ``veil.server.engine.InferenceBackend`` over Triton's gRPC API, so
``LocalDetector(model=..., backend=TritonBackend(url, name))`` gives the same detections as the
in-process onnxruntime backend. :class:`TritonServer` starts the ``tritonserver`` binary that
``nvidia-pytriton`` bundles (``make triton-env`` installs it into ``.triton-venv``) on loopback
ports, serving ``models/`` through the python-based onnxruntime backend in
``deploy/triton/backends`` (see docs/triton.md)::

    python -m veil.server.engine._triton [--repository models] [--grpc-port 8001]
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
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ._onnxruntime import BackendError
from .weights import (
    MODEL_FILE,
    MODEL_VERSION,
    WeightsError,
    default_repository,
    load_manifest,
    sha256_file,
    weights_sha256,
)

__all__ = [
    "TritonBackend",
    "TritonBackendError",
    "TritonLaunchError",
    "TritonServer",
    "TritonServerConfig",
    "TritonUnavailableError",
    "main",
]

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[1]
"""The source checkout (the launcher is for development and tests: it needs deploy/)."""


class TritonBackendError(BackendError):
    """Triton refused or failed a request; the message carries its status and reason."""


class TritonUnavailableError(TritonBackendError, ConnectionError):
    """Triton is unreachable, not ready, or does not have the model ready."""


class TritonLaunchError(TritonBackendError):
    """``tritonserver`` could not be started (environment missing, bad model, timeout)."""


def _translate(error: InferenceServerException, url: str, what: str) -> TritonBackendError:
    """The one place where tritonclient's exception becomes ours."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    if status.endswith("UNAVAILABLE"):
        return TritonUnavailableError(
            f"Triton at {url} is unreachable while {what} ({message}); is tritonserver "
            "running there? (dev: `python -m veil.server.engine._triton`)"
        )
    if status.endswith("DEADLINE_EXCEEDED"):
        return TritonBackendError(f"Triton at {url} did not answer in time while {what}")
    return TritonBackendError(f"Triton at {url} refused {what}: {status or 'error'}: {message}")


class TritonBackend:
    """Runs one model of a Triton server over gRPC; implements ``InferenceBackend``.

    The constructor checks that the server is live and the model ready, and reads the model's
    metadata (input and output names) and config (``max_batch_size``, instance kind).
    ``weights_sha256`` is the manifest's pin for ``model``: :class:`TritonServer` verifies the
    repository's files against it before it starts Triton. Batches larger than the model's
    ``max_batch_size`` are sent in chunks. Every call has a deadline of ``timeout_s``.
    """

    name = "triton"

    def __init__(
        self, url: str, model: str, *, timeout_s: float = 10.0, model_version: str = ""
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s {timeout_s} is not positive")
        self._url = url
        self._model = model
        self._version = model_version
        self._timeout_s = timeout_s
        self._weights_sha256 = weights_sha256(model)
        self._client = grpcclient.InferenceServerClient(url)
        try:
            metadata, config = self._connect()
        except BaseException:
            self._client.close()
            raise
        inputs = metadata["inputs"]
        if len(inputs) != 1 or inputs[0]["datatype"] != "FP32":
            self._client.close()
            raise TritonBackendError(f"{model} on {url} has inputs {inputs}, expected one FP32")
        self._input_name: str = inputs[0]["name"]
        self._output_names = tuple(str(o["name"]) for o in metadata["outputs"])
        self._max_batch = int(config.get("max_batch_size", 0))
        kinds = sorted({g.get("kind", "KIND_AUTO") for g in config.get("instance_group", [])})
        accelerators = [
            a["name"]
            for a in config.get("optimization", {})
            .get("execution_accelerators", {})
            .get("gpu_execution_accelerator", [])
        ]
        self._provider = "triton:" + "+".join([*kinds, *accelerators])
        logger.info(
            "triton %s: %s (%s, max batch %d) on %s",
            url,
            model,
            config.get("platform") or config.get("backend"),
            self._max_batch,
            self._provider,
        )

    def _connect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        client, model, timeout = self._client, self._model, self._timeout_s
        try:
            if not client.is_server_live(client_timeout=timeout):
                raise TritonUnavailableError(f"Triton at {self._url} is not live")
            if not client.is_model_ready(model, self._version, client_timeout=timeout):
                index = client.get_model_repository_index(as_json=True, client_timeout=timeout)
                states = [
                    f"{m['name']}/{m.get('version', '?')} {m.get('state', '?')} "
                    f"{m.get('reason', '')}".strip()
                    for m in index.get("models", [])
                ]
                version = f" version {self._version}" if self._version else ""
                raise TritonUnavailableError(
                    f"model {model!r}{version} is not ready on Triton at {self._url}; its "
                    f"repository has: {'; '.join(states) or 'no models'}"
                )
            metadata = client.get_model_metadata(
                model, self._version, as_json=True, client_timeout=timeout
            )
            config = client.get_model_config(
                model, self._version, as_json=True, client_timeout=timeout
            )["config"]
        except InferenceServerException as error:
            raise _translate(error, self._url, f"loading {model!r}") from error
        return metadata, config

    @property
    def provider(self) -> str:
        """``triton:`` and the model's instance kinds and GPU accelerators, e.g.
        ``triton:KIND_CPU`` or ``triton:KIND_GPU+tensorrt``."""
        return self._provider

    @property
    def weights_sha256(self) -> str:
        return self._weights_sha256

    def ready(self, timeout_s: float = 2.0) -> bool:
        """Whether Triton is ready and serves the model now (the server's health watchdog)."""
        client = self._client
        try:
            return bool(
                client.is_server_ready(client_timeout=timeout_s)
                and client.is_model_ready(self._model, self._version, client_timeout=timeout_s)
            )
        except InferenceServerException:
            return False

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Run an NCHW float32 batch; the outputs by name."""
        if batch.dtype != np.float32 or batch.ndim != 4:
            raise ValueError(f"expected an NCHW float32 batch, got {batch.dtype} {batch.shape}")
        step = self._max_batch or len(batch)
        parts = [self._infer(batch[i : i + step]) for i in range(0, len(batch), step)]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self._output_names}

    def _infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        tensor = grpcclient.InferInput(self._input_name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(batch))
        try:
            result = self._client.infer(
                self._model,
                [tensor],
                model_version=self._version,
                outputs=[grpcclient.InferRequestedOutput(n) for n in self._output_names],
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as error:
            raise _translate(error, self._url, f"inference on a {batch.shape} batch") from error
        values = {}
        for name in self._output_names:
            value = result.as_numpy(name)
            # Fail closed: a server environment with the wrong numpy once returned empty tensors.
            if value is None or value.ndim == 0 or len(value) != len(batch):
                shape = None if value is None else value.shape
                raise TritonBackendError(
                    f"Triton at {self._url} returned {name!r} with shape {shape} for a "
                    f"{batch.shape} batch of {self._model}"
                )
            values[name] = value
        return values

    def close(self) -> None:
        self._client.close()


# --- launcher ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TritonServerConfig:
    """How :class:`TritonServer` runs ``tritonserver``.

    ``venv`` is the server environment (``make triton-env``); ``backends`` holds the
    python-based backends added to pytriton's python backend. Ports ``0`` are chosen free.
    ``startup_timeout_s`` bounds the wait until every model is ready.
    """

    model_repository: Path = field(default_factory=default_repository)
    venv: Path = _ROOT / ".triton-venv"
    backends: Path = _ROOT / "deploy" / "triton" / "backends"
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
        """``host:port`` for ``tritonclient.grpc`` and :class:`TritonBackend`."""
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
        prog="python -m veil.server.engine._triton",
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
