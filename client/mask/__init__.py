"""Masks: how a face is masked (``Style``: blur, pixelate or solid fill, box or ellipse, margin
and feather; one frozen config, validated once, the same in every mode) and where masks are
drawn (``render_frame``: on each plane of the YUV frame that goes to the encoder, so pixels
outside the masks never pass through RGB).
"""

from ._draw import Geometry, render_frame, single_threaded_opencv
from ._style import Effect, Shape, Style, load_config

__all__ = [
    "Effect",
    "Geometry",
    "Shape",
    "Style",
    "load_config",
    "render_frame",
    "single_threaded_opencv",
]
