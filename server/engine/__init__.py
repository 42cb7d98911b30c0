"""The detection engine: face models, inference backends, fusion and weights; no gRPC.

Names are re-exported lazily, so ``veil models fetch`` (:mod:`veil.server.engine.weights`)
imports neither onnxruntime nor tritonclient.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._fusion import member_models, members_of
    from ._local import (
        InferenceBackend,
        LocalDetector,
        build_detector,
        load_detector,
        onnxruntime_missing,
    )
    from ._models import CenterFace, FaceModel, RetinaFace, make_model
    from ._onnxruntime import BackendError, ExecutionProvider, OnnxRuntimeBackend, OnnxRuntimeConfig
    from ._triton import TritonBackend, TritonBackendError, TritonUnavailableError
    from .weights import ModelNotFoundError, WeightsError, model_path, weights_sha256

_WHERE = {
    "member_models": "._fusion",
    "members_of": "._fusion",
    "InferenceBackend": "._local",
    "LocalDetector": "._local",
    "build_detector": "._local",
    "load_detector": "._local",
    "onnxruntime_missing": "._local",
    "CenterFace": "._models",
    "FaceModel": "._models",
    "RetinaFace": "._models",
    "make_model": "._models",
    "BackendError": "._onnxruntime",
    "ExecutionProvider": "._onnxruntime",
    "OnnxRuntimeBackend": "._onnxruntime",
    "OnnxRuntimeConfig": "._onnxruntime",
    "TritonBackend": "._triton",
    "TritonBackendError": "._triton",
    "TritonUnavailableError": "._triton",
    "ModelNotFoundError": ".weights",
    "WeightsError": ".weights",
    "model_path": ".weights",
    "weights_sha256": ".weights",
}

__all__ = [
    "BackendError",
    "CenterFace",
    "ExecutionProvider",
    "FaceModel",
    "InferenceBackend",
    "LocalDetector",
    "ModelNotFoundError",
    "OnnxRuntimeBackend",
    "OnnxRuntimeConfig",
    "RetinaFace",
    "TritonBackend",
    "TritonBackendError",
    "TritonUnavailableError",
    "WeightsError",
    "build_detector",
    "load_detector",
    "make_model",
    "member_models",
    "members_of",
    "model_path",
    "onnxruntime_missing",
    "weights_sha256",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
