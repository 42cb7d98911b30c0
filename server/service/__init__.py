"""TODO."""

from ._serve import ServeConfig, VeilServer, create_server, serve
from ._servicer import Limits

__all__ = [
    "Limits",
    "ServeConfig",
    "VeilServer",
    "create_server",
    "serve",
]
