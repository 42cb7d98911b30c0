"""TODO."""

from ._app import ReviewSession, serve
from ._report import write_report

__all__ = [
    "ReviewSession",
    "serve",
    "write_report",
]
