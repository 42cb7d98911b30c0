"""veil's detection service: model pre/post-processing, backends and the gRPC server.

The public surface is re-exported here lazily, so ``veil models fetch`` (:mod:`veil.server.weights`)
does not import onnxruntime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._local import InferenceBackend, LocalDetector, load_detector
    from ._models import CenterFace, FaceModel, RetinaFace
    from ._onnxruntime import BackendError, ExecutionProvider, OnnxRuntimeBackend
    from ._serve import ServeConfig, VeilServer, create_server, serve
    from ._service import Limits
    from ._triton import (
        TritonBackend,
        TritonBackendError,
        TritonServer,
        TritonServerConfig,
        TritonUnavailableError,
    )
    from .weights import ModelNotFoundError, WeightsError, model_path, weights_sha256

__all__ = [
    "BackendError",
    "CenterFace",
    "ExecutionProvider",
    "FaceModel",
    "InferenceBackend",
    "Limits",
    "LocalDetector",
    "ModelNotFoundError",
    "OnnxRuntimeBackend",
    "RetinaFace",
    "ServeConfig",
    "TritonBackend",
    "TritonBackendError",
    "TritonServer",
    "TritonServerConfig",
    "TritonUnavailableError",
    "VeilServer",
    "WeightsError",
    "create_server",
    "load_detector",
    "model_path",
    "serve",
    "weights_sha256",
]

_WHERE = {
    "InferenceBackend": "._local",
    "LocalDetector": "._local",
    "load_detector": "._local",
    "CenterFace": "._models",
    "FaceModel": "._models",
    "RetinaFace": "._models",
    "BackendError": "._onnxruntime",
    "ExecutionProvider": "._onnxruntime",
    "OnnxRuntimeBackend": "._onnxruntime",
    "ServeConfig": "._serve",
    "TritonBackend": "._triton",
    "TritonBackendError": "._triton",
    "TritonServer": "._triton",
    "TritonServerConfig": "._triton",
    "TritonUnavailableError": "._triton",
    "VeilServer": "._serve",
    "create_server": "._serve",
    "serve": "._serve",
    "Limits": "._service",
    "ModelNotFoundError": ".weights",
    "WeightsError": ".weights",
    "model_path": ".weights",
    "weights_sha256": ".weights",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
