"""How veil's types cross the wire: the one mapping between the ``veil.v1`` protobufs and the
core types, both ways, used by the clients (``veil.remote``) and the server
(``veil.server.service``) alike. Frames (``_frames``), detections and the detector
(``_detections``), a cloud job's settings (``_jobs``); a message that breaks the contract
raises :class:`WireError`, which the server answers INVALID_ARGUMENT.
"""

from ._detections import (
    DetectorQuery,
    ServedModel,
    model_info_message,
    params_message,
    read_model_info,
    read_params,
    read_result,
    result_message,
)
from ._errors import WireError
from ._frames import Encoding, frame_message, read_frame
from ._jobs import JobSettings, job_start, read_job_start

__all__ = [
    "DetectorQuery",
    "Encoding",
    "JobSettings",
    "ServedModel",
    "WireError",
    "frame_message",
    "job_start",
    "model_info_message",
    "params_message",
    "read_frame",
    "read_job_start",
    "read_model_info",
    "read_params",
    "read_result",
    "result_message",
]
