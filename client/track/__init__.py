"""Tracking: stable ids for detections (``Associator``), the masks of the frames between and
around them (``Smoother``), and what is measured of the picture for it: hard cuts, blur,
camera motion, texture followed where the detector lost a face. Every box carried to a frame
without its detection moves by one motion model (``_motion``: the camera's measured motion plus
the face's own robust velocity). The tracker adds coverage, it never removes it.
"""

from ._associator import Associator, Prediction, centred_on
from ._camera import CameraMotion, grey_thumbnail
from ._config import TrackerConfig
from ._follow import Luma, follow, luma
from ._motion import STILL, robust_velocity
from ._shots import BlurWatch, CutDetector
from ._smoother import Smoother

__all__ = [
    "STILL",
    "Associator",
    "BlurWatch",
    "CameraMotion",
    "CutDetector",
    "Luma",
    "Prediction",
    "Smoother",
    "TrackerConfig",
    "centred_on",
    "follow",
    "grey_thumbnail",
    "luma",
    "robust_velocity",
]
