"""TODO."""

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
