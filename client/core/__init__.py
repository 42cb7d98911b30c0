"""The small shared core every other package builds on: detections and the detector protocol,
boxes and their overlap (the one ``Box``, ``iou``, the retry ``backoff``), the masks a frame
gets (``Mask``, ``Origin``, ``FrameMasks``) and veil's one family of errors.

Nothing here does I/O or imports another veil package (``available_cores`` only asks the
kernel how many cores this process may use).
"""

from ._address import split_address
from ._cores import available_cores
from ._detections import Detections, merge, nms
from ._detector import (
    Detector,
    DetectorInfo,
    Image,
    LowLightPass,
    Upright,
    display_size,
    fit_size,
    is_dark,
)
from ._errors import (
    ConfigError,
    DetectorError,
    DetectorLost,
    InputError,
    OutputError,
    OutputExists,
    RecordError,
    VeilError,
)
from ._geometry import Box, Offset, centre, iou, iou_matrix, shifted, union
from ._masks import CARRIED, EVIDENCE, POLICY_TRACK, FrameMasks, Mask, Origin, whole_frame
from ._retry import backoff

__all__ = [
    "CARRIED",
    "EVIDENCE",
    "POLICY_TRACK",
    "Box",
    "ConfigError",
    "Detections",
    "Detector",
    "DetectorError",
    "DetectorInfo",
    "DetectorLost",
    "FrameMasks",
    "Image",
    "InputError",
    "LowLightPass",
    "Mask",
    "Offset",
    "Origin",
    "OutputError",
    "OutputExists",
    "RecordError",
    "Upright",
    "VeilError",
    "available_cores",
    "backoff",
    "centre",
    "display_size",
    "fit_size",
    "iou",
    "iou_matrix",
    "is_dark",
    "merge",
    "nms",
    "shifted",
    "split_address",
    "union",
    "whole_frame",
]
