"""Triton as an inference backend: the product's client of a Triton Inference Server.

:class:`TritonBackend` implements ``veil.server.engine.InferenceBackend`` over Triton's gRPC API, so
``LocalDetector(model=..., backend=TritonBackend(url, name))`` gives the same detections as the
in-process onnxruntime backend. Starting a ``tritonserver`` for tests and development is
test tooling: ``tests/triton_server.py`` (see docs/triton.md).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ._onnxruntime import BackendError
from .weights import weights_sha256

__all__ = ["TritonBackend", "TritonBackendError", "TritonUnavailableError"]

logger = logging.getLogger(__name__)


class TritonBackendError(BackendError):
    """Triton refused or failed a request; the message carries its status and reason."""


class TritonUnavailableError(TritonBackendError, ConnectionError):
    """Triton is unreachable, not ready, or does not have the model ready."""


def _translate(error: InferenceServerException, url: str, what: str) -> TritonBackendError:
    """The one place where tritonclient's exception becomes ours."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    if status.endswith("UNAVAILABLE"):
        return TritonUnavailableError(
            f"Triton at {url} is unreachable while {what} ({message}); is tritonserver "
            "running there? (dev: `python tests/triton_server.py` in a checkout)"
        )
    if status.endswith("DEADLINE_EXCEEDED"):
        return TritonBackendError(f"Triton at {url} did not answer in time while {what}")
    return TritonBackendError(f"Triton at {url} refused {what}: {status or 'error'}: {message}")


class TritonBackend:
    """Runs one model of a Triton server over gRPC; implements ``InferenceBackend``.

    The constructor checks that the server is live and the model ready, and reads the model's
    metadata (input and output names) and config (``max_batch_size``, instance kind).
    ``weights_sha256`` is the manifest's pin for ``model``: the test launcher
    (``tests/triton_server.py``) verifies the repository's files against it before it starts
    Triton. Batches larger than the model's ``max_batch_size`` are sent in chunks. Every call
    has a deadline of ``timeout_s``.
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
