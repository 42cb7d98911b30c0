"""The one error of the wire: a message that breaks the ``veil.v1`` contract."""

from __future__ import annotations

from veil.core import VeilError

__all__ = ["WireError"]


class WireError(VeilError, ValueError):
    """A ``veil.v1`` message that breaks the contract (a frame whose sizes, encoding or bytes
    disagree, an unknown preset). The server answers it INVALID_ARGUMENT with this message
    (``veil.server.service``'s ``status_of``)."""
