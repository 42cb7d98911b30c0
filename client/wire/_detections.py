"""Detections, and the detector that finds them, on the wire.

A ``FrameResult`` carries a frame's faces in display pixels of the original frame as float32,
as the detector made them in process: a hybrid run's record equals on-prem's to the bit.
``ModelInfo`` is the served detector's identity (:class:`ServedModel`), ``DetectorParams``
the detector a client asks for (:class:`DetectorQuery`): the client sends what it would run
in process, the server resolves what is left unset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from veil import __version__
from veil.core import Detections, DetectorInfo
from veil.job import DetectorSettings
from veil.v1 import detection_pb2 as pb

__all__ = [
    "QUERY_MAX_SIDE",
    "DetectorQuery",
    "ServedModel",
    "model_info_message",
    "params_message",
    "read_model_info",
    "read_params",
    "read_result",
    "result_message",
]

QUERY_MAX_SIDE = 640
"""The ``max_side`` of a query that sets none (``DetectorParams.max_side`` 0)."""


def result_message(index: int, detections: Detections) -> pb.FrameResult:
    """The ``veil.v1.FrameResult`` of frame ``index``."""
    faces = []
    for i in range(len(detections)):
        x0, y0, x1, y1 = (float(v) for v in detections.boxes[i])
        landmarks = [] if detections.landmarks is None else detections.landmarks[i].ravel().tolist()
        sources = 0 if detections.sources is None else int(detections.sources[i])
        faces.append(
            pb.Face(
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                score=float(detections.scores[i]),
                landmarks=landmarks,
                sources=sources,
            )
        )
    return pb.FrameResult(index=index, faces=faces)


def read_result(result: pb.FrameResult) -> Detections:
    """``Detections`` from a ``veil.v1.FrameResult`` (float32 on the wire, as in process)."""
    faces = result.faces
    if not faces:
        return Detections.empty()
    boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in faces], np.float32)
    scores = np.array([f.score for f in faces], np.float32)
    landmarks = None
    if all(len(f.landmarks) == 10 for f in faces):
        landmarks = np.array([list(f.landmarks) for f in faces], np.float32).reshape(-1, 5, 2)
    sources = None
    if any(f.sources for f in faces):  # a fused detector names its members for every face
        sources = np.array([f.sources for f in faces], np.uint32)
    return Detections(boxes, scores, landmarks, sources)


@dataclass(frozen=True, kw_only=True)
class DetectorQuery:
    """The detector a client asks a server for (``veil.v1.DetectorParams``). ``None``: the
    server's choice (the model it serves, the model's thresholds). The server checks the
    values against its own limits."""

    model: str | None = None
    max_side: int = QUERY_MAX_SIDE
    score_threshold: float | None = None
    nms_threshold: float | None = None

    @classmethod
    def for_settings(cls, settings: DetectorSettings) -> DetectorQuery:
        """The detector ``settings`` run in process (``open_detector``): the model runs at the
        track threshold when there is one. A hybrid client asks for it, and a cloud job's
        server resolves its settings through it, so all three modes run the same detector."""
        return cls(
            model=settings.model,
            max_side=settings.max_side,
            score_threshold=settings.model_threshold,
            nms_threshold=settings.nms_threshold,
        )


def params_message(query: DetectorQuery) -> pb.DetectorParams:
    return pb.DetectorParams(
        model=query.model or "",
        max_side=query.max_side,
        score_threshold=query.score_threshold or 0.0,
        nms_threshold=query.nms_threshold or 0.0,
    )


def read_params(params: pb.DetectorParams) -> DetectorQuery:
    """The query ``params`` make; its unset (zero) fields are the server's choice."""
    return DetectorQuery(
        model=params.model or None,
        max_side=params.max_side or QUERY_MAX_SIDE,
        score_threshold=params.score_threshold or None,
        nms_threshold=params.nms_threshold or None,
    )


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    """What a server says of the detector it runs for a query (``veil.v1.ModelInfo``): the
    record's detector block (``info``, without ``transport``, which the client adds), the
    largest batch and frame side it takes, and its veil version."""

    info: DetectorInfo
    max_batch: int
    max_image_side: int
    veil_version: str = __version__


def model_info_message(served: ServedModel) -> pb.ModelInfo:
    info = served.info
    return pb.ModelInfo(
        model=info.model,
        weights_sha256=info.weights_sha256,
        backend=info.backend,
        execution_provider=info.execution_provider,
        max_side=info.max_side,
        score_threshold=info.score_threshold,
        nms_threshold=info.nms_threshold,
        options_json=json.dumps(info.options, sort_keys=True),
        license=info.license,
        max_batch=served.max_batch,
        max_image_side=served.max_image_side,
        veil_version=served.veil_version,
    )


def read_model_info(model: pb.ModelInfo) -> ServedModel:
    return ServedModel(
        info=DetectorInfo(
            model=model.model,
            weights_sha256=model.weights_sha256,
            backend=model.backend,
            execution_provider=model.execution_provider,
            max_side=model.max_side,
            score_threshold=model.score_threshold,
            nms_threshold=model.nms_threshold,
            options=json.loads(model.options_json or "{}"),
            license=model.license,
        ),
        max_batch=model.max_batch,
        max_image_side=model.max_image_side,
        veil_version=model.veil_version,
    )
