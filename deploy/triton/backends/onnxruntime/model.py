"""A Python-based Triton backend named ``onnxruntime``: serves ``platform: "onnxruntime_onnx"``.

Triton looks for ``<backend-directory>/onnxruntime/libtriton_onnxruntime.so`` for such a model;
where that library is absent but this ``model.py`` is there, Triton runs it on its python
backend (a "Python-based backend"). That lets the unmodified model repository ``models/`` serve
on a CPU-only box whose Triton has only the python backend (``nvidia-pytriton``'s bundled
``tritonserver``, used by CI and the tests' ``TritonServer``). GPU hosts run NVIDIA's
real onnxruntime backend (CUDA, TensorRT) on the same repository instead of this file.

It honours the parts of config.pbtxt that NVIDIA's onnxruntime backend does and that matter on
a CPU: ``default_model_filename`` (``model.onnx``), the inputs and outputs listed (checked
against the graph; auto-complete is not supported), dynamic batching (the requests Triton
groups run as one batch) and the ``intra_op_thread_count`` / ``inter_op_thread_count`` parameters.
The session is built as ``veil.server.engine.OnnxRuntimeBackend`` builds its own (all graph
optimisations, sequential execution), so with the same onnxruntime version both give the same
numbers. Only ``KIND_CPU`` instances are served; ``KIND_GPU`` is refused with a message.

This file runs inside Triton's python backend stub, in the server's environment
(``.triton-venv``: numpy<2, onnxruntime), and imports nothing from veil.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_DEFAULT_MODEL_FILENAME = "model.onnx"


def _int_parameter(config: dict[str, Any], key: str) -> int:
    """A ``parameters { key: ... value: { string_value: "N" } }`` entry; 0 (default) if absent."""
    raw = config.get("parameters", {}).get(key, {}).get("string_value", "0")
    try:
        value = int(raw)
    except ValueError:
        raise pb_utils.TritonModelException(f"parameter {key}: {raw!r} is not an integer") from None
    if value < 0:
        raise pb_utils.TritonModelException(f"parameter {key}: {value} is negative")
    return value


class TritonPythonModel:
    """One onnxruntime CPU session per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self._name = config["name"]
        if args["model_instance_kind"] != "CPU":
            raise pb_utils.TritonModelException(
                f"{self._name}: instance kind {args['model_instance_kind']} is not served by the "
                "python-based onnxruntime stand-in (CPU only); on a GPU host use NVIDIA's "
                "onnxruntime backend (tritonserver container), see docs/triton.md"
            )
        filename = config.get("default_model_filename") or _DEFAULT_MODEL_FILENAME
        path = Path(args["model_repository"]) / args["model_version"] / filename
        data = path.read_bytes()

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = _int_parameter(config, "intra_op_thread_count")
        options.inter_op_num_threads = _int_parameter(config, "inter_op_thread_count")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )

        self._input_name = self._check_names(
            "input", config.get("input", []), self._session.get_inputs()
        )[0]
        self._output_names = self._check_names(
            "output", config.get("output", []), self._session.get_outputs()
        )
        pb_utils.Logger.log_info(
            f"{self._name}: {path} (sha256 {hashlib.sha256(data).hexdigest()}) on onnxruntime "
            f"{ort.__version__} CPUExecutionProvider, instance {args['model_instance_name']}"
        )

    def _check_names(self, kind: str, listed: list[dict[str, Any]], graph: list[Any]) -> list[str]:
        names = [entry["name"] for entry in listed]
        actual = [value.name for value in graph]
        if not names:
            raise pb_utils.TritonModelException(
                f"{self._name}: config.pbtxt lists no {kind}s; this backend does not auto-complete "
                f"(the graph's {kind}s are {actual})"
            )
        if kind == "input" and names != actual:
            raise pb_utils.TritonModelException(
                f"{self._name}: config.pbtxt lists inputs {names}, the graph has {actual}"
            )
        if not set(names) <= set(actual):
            raise pb_utils.TritonModelException(
                f"{self._name}: config.pbtxt lists {kind}s {names}, the graph has {actual}"
            )
        return names

    def execute(self, requests: list[Any]) -> list[Any]:
        """The requests the dynamic batcher grouped (equal shapes: Triton batches only those,
        ragged batching is not enabled) run as one batch; each gets its slice back."""
        arrays = [
            pb_utils.get_input_tensor_by_name(request, self._input_name).as_numpy()
            for request in requests
        ]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        try:
            values = self._session.run(
                self._output_names, {self._input_name: np.ascontiguousarray(batch)}
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            failure = pb_utils.TritonError(
                f"{self._name}: onnxruntime failed on a {batch.shape} batch: {error}"
            )
            return [pb_utils.InferenceResponse(error=failure) for _ in requests]
        responses = []
        start = 0
        for request, array in zip(requests, arrays, strict=True):
            stop = start + len(array)
            wanted = set(request.requested_output_names()) or set(self._output_names)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start:stop]))
                for name, value in zip(self._output_names, values, strict=True)
                if name in wanted
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses

    def finalize(self) -> None:
        self.__dict__.pop("_session", None)
