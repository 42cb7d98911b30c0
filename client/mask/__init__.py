"""Masks: how a face is masked (``Style``: blur, pixelate or solid fill, box or ellipse, margin
and feather; one frozen config, validated once, the same in every mode) and where masks are
drawn (``render_frame``: on each plane of the YUV frame that goes to the encoder, so pixels
outside the masks never pass through RGB; a face's masks in a frame as one, ``by_track``).
"""

from ._draw import Geometry, by_track, render_frame, single_threaded_opencv
from ._style import Effect, Shape, Style, load_config

__all__ = [
    "Effect",
    "Geometry",
    "Shape",
    "Style",
    "by_track",
    "load_config",
    "render_frame",
    "single_threaded_opencv",
]
