"""veil: video face anonymisation for regulated footage.

Faces gone, audio intact, every run auditable and repeatable::

    import veil
    veil.anonymize("in.mp4", "out.mp4")                  # writes out.mp4 + out.mp4.veil.json
    record = veil.detect("in.mp4", "in.veil.json")       # two-pass audit workflow ...
    veil.render("in.mp4", "in.veil.json", "re.mp4")      # ... byte-identical re-render
"""

__version__ = "0.1.0"

from ._api import DetectionConfig, anonymize, default_record_path, detect, open_detector, render
from ._detections import Detections
from ._detector import Detector, DetectorInfo, fit_size
from ._errors import (
    ConfigError,
    DetectorError,
    InputError,
    OutputError,
    OutputExists,
    RecordError,
    VeilError,
)
from ._media import EncoderSettings
from ._record import Record
from ._settings import PRESETS, DetectorSettings, Preset
from ._style import Effect, Shape, Style
from ._tracker import Mask, Origin, TrackerConfig

__all__ = [
    "PRESETS",
    "ConfigError",
    "DetectionConfig",
    "Detections",
    "Detector",
    "DetectorError",
    "DetectorInfo",
    "DetectorSettings",
    "Effect",
    "EncoderSettings",
    "InputError",
    "Mask",
    "Origin",
    "OutputError",
    "OutputExists",
    "Preset",
    "Record",
    "RecordError",
    "Shape",
    "Style",
    "TrackerConfig",
    "VeilError",
    "__version__",
    "anonymize",
    "default_record_path",
    "detect",
    "fit_size",
    "open_detector",
    "render",
]
