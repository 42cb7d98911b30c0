"""veil: video face anonymisation for regulated footage.

Faces gone, audio intact, every run auditable and repeatable::

    import veil
    veil.anonymize("in.mp4", "out.mp4")                  # writes out.mp4 + out.mp4.veil.json
    record = veil.detect("in.mp4", "in.veil.json")       # two-pass audit workflow ...
    veil.render("in.mp4", "in.veil.json", "re.mp4")      # ... byte-identical re-render
"""

__version__ = "0.1.0"

from veil.core import (
    ConfigError,
    Detections,
    Detector,
    DetectorError,
    DetectorInfo,
    InputError,
    Mask,
    Origin,
    OutputError,
    OutputExists,
    RecordError,
    VeilError,
    fit_size,
)
from veil.job import PRESETS, DetectionConfig, DetectorSettings, Preset, Record
from veil.mask import Effect, Shape, Style
from veil.media import EncoderSettings
from veil.track import TrackerConfig

from ._api import (
    anonymize,
    client_passes,
    default_record_path,
    detect,
    open_detector,
    render,
)

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
    "client_passes",
    "default_record_path",
    "detect",
    "fit_size",
    "open_detector",
    "render",
]
