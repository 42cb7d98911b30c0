"""TODO."""

from ._follow import Luma, follow, luma
from ._shots import BlurWatch, CameraMotion, CutDetector
from ._tracker import (
    CARRIED,
    EVIDENCE,
    POLICY_TRACK,
    Associator,
    Box,
    FrameMasks,
    Mask,
    Origin,
    Smoother,
    TrackerConfig,
    centre,
    centred_on,
    iou,
    iou_matrix,
    whole_frame,
)

__all__ = [
    "CARRIED",
    "EVIDENCE",
    "POLICY_TRACK",
    "Associator",
    "BlurWatch",
    "Box",
    "CameraMotion",
    "CutDetector",
    "FrameMasks",
    "Luma",
    "Mask",
    "Origin",
    "Smoother",
    "TrackerConfig",
    "centre",
    "centred_on",
    "follow",
    "iou",
    "iou_matrix",
    "luma",
    "whole_frame",
]
