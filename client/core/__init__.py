"""TODO."""

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

__all__ = [
    "ConfigError",
    "Detections",
    "Detector",
    "DetectorError",
    "DetectorInfo",
    "DetectorLost",
    "Image",
    "InputError",
    "LowLightPass",
    "OutputError",
    "OutputExists",
    "RecordError",
    "Upright",
    "VeilError",
    "display_size",
    "fit_size",
    "is_dark",
    "merge",
    "nms",
]
