"""The in-process inference backend: one onnxruntime session on CPU, CUDA or TensorRT."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from veil.core import available_cores

__all__ = ["BackendError", "ExecutionProvider", "OnnxRuntimeBackend", "OnnxRuntimeConfig"]

logger = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The inference backend could not be set up as asked, or an inference failed."""


class ExecutionProvider(StrEnum):
    """Where onnxruntime runs the graph. CUDA and TensorRT need the ``onnxruntime-gpu`` wheel."""

    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"

    @property
    def ort_name(self) -> str:
        return _ORT_NAMES[self]


_ORT_NAMES = {
    ExecutionProvider.CPU: "CPUExecutionProvider",
    ExecutionProvider.CUDA: "CUDAExecutionProvider",
    ExecutionProvider.TENSORRT: "TensorrtExecutionProvider",
}


@dataclass(frozen=True, kw_only=True)
class OnnxRuntimeConfig:
    """How the session is built.

    ``threads`` is onnxruntime's intra-op thread count (``None``: every core this process may
    use). ``device_id`` picks the GPU for CUDA and TensorRT. Graph optimisation is always on
    (``ORT_ENABLE_ALL``).
    """

    provider: ExecutionProvider = ExecutionProvider.CPU
    threads: int | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", ExecutionProvider(self.provider))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads {self.threads} is below 1")
        if self.device_id < 0:
            raise ValueError(f"device_id {self.device_id} is negative")


class OnnxRuntimeBackend:
    """Runs one ONNX model in process; implements ``veil.server.engine.InferenceBackend``.

    The file is read once, hashed and handed to onnxruntime as bytes, so
    :attr:`weights_sha256` is the hash of exactly what runs. Asking for CUDA or TensorRT and
    getting a session without it raises :class:`BackendError` (``onnxruntime-gpu`` silently
    falls back to the CPU otherwise). ``infer`` may be called from several threads.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        input_name: str,
        output_names: tuple[str, ...],
        config: OnnxRuntimeConfig | None = None,
    ) -> None:
        config = config or OnnxRuntimeConfig()
        data = Path(path).read_bytes()
        self._weights_sha256 = hashlib.sha256(data).hexdigest()
        self._input_name = input_name
        self._output_names = list(output_names)
        self._threads = config.threads or available_cores()

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self._threads
        # Idle intra-op threads sleep instead of spinning: in a pipeline they share the cores
        # with decoding and encoding, and a spinning pool burns the CPU those need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: onnxruntime's warnings go to stderr

        installed = ort.get_available_providers()
        if config.provider.ort_name not in installed:
            raise BackendError(
                f"asked for {config.provider.ort_name} but this onnxruntime has only "
                f"{installed}; install onnxruntime-gpu (instead of onnxruntime) for CUDA and "
                "TensorRT, or use provider 'cpu'"
            )
        providers: list[Any] = []
        gpu = {"device_id": config.device_id}
        if config.provider is ExecutionProvider.TENSORRT:
            providers.append((ExecutionProvider.TENSORRT.ort_name, dict(gpu)))
        if config.provider in (ExecutionProvider.TENSORRT, ExecutionProvider.CUDA):
            providers.append((ExecutionProvider.CUDA.ort_name, dict(gpu)))
        providers.append(ExecutionProvider.CPU.ort_name)
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime could not load {path}: {error}") from error
        active = self._session.get_providers()
        if config.provider.ort_name not in active:
            raise BackendError(
                f"asked for {config.provider.ort_name} but the session fell back to {active} "
                "(see onnxruntime's log: CUDA/cuDNN/TensorRT libraries missing or mismatched?)"
            )
        self._provider: str = str(active[0])
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if inputs != [input_name] or not set(output_names) <= set(outputs):
            raise BackendError(
                f"{path} has inputs {inputs} and outputs {outputs}, expected [{input_name!r}] "
                f"and {list(output_names)}"
            )
        logger.info(
            "onnxruntime %s: %s on %s, %d threads",
            ort.__version__,
            Path(path).name,
            self._provider,
            self._threads,
        )

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph, as onnxruntime names it."""
        return self._provider

    @property
    def weights_sha256(self) -> str:
        return self._weights_sha256

    @property
    def threads(self) -> int:
        return self._threads

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Run an NCHW float32 batch; the outputs by name."""
        if batch.dtype != np.float32 or batch.ndim != 4:
            raise ValueError(f"expected an NCHW float32 batch, got {batch.dtype} {batch.shape}")
        try:
            values = self._session.run(
                self._output_names, {self._input_name: np.ascontiguousarray(batch)}
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise BackendError(f"inference on a {batch.shape} batch failed: {error}") from error
        return dict(zip(self._output_names, values, strict=True))

    def close(self) -> None:
        """Drop the session (its memory goes when the last reference does)."""
        self.__dict__.pop("_session", None)
