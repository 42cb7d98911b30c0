"""TODO."""

from ._follow import Luma, follow, luma
from ._shots import BlurWatch, CameraMotion, CutDetector
from ._tracker import Associator, Smoother, TrackerConfig, centred_on, robust_velocity

__all__ = [
    "Associator",
    "BlurWatch",
    "CameraMotion",
    "CutDetector",
    "Luma",
    "Smoother",
    "TrackerConfig",
    "centred_on",
    "follow",
    "luma",
    "robust_velocity",
]
