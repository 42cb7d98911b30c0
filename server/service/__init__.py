"""veil's gRPC service over the detection engine: :func:`create_server` and :func:`serve`
with their settings (:class:`ServeConfig`, :class:`Limits`). Inside: the servicer and cloud
jobs, the micro-batcher, bearer-token auth, metrics and the one translation of errors to
status codes; what the messages carry is ``veil.wire``'s, shared with the clients.
"""

from ._config import ServeConfig
from ._requests import Limits
from ._serve import VeilServer, create_server, serve

__all__ = [
    "Limits",
    "ServeConfig",
    "VeilServer",
    "create_server",
    "serve",
]
