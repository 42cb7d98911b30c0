"""Human review of a record: the HTML review report (``write_report``: data in ``_flags``,
``_risk``, ``_tracks``, ``_review``; presentation in ``_page``, ``_charts`` and the
``templates/``), and the review workstation (``ReviewSession``, served by ``serve``), where a
reviewer corrects the record, re-renders and signs off (``_approval``)."""

from ._report import write_report
from ._server import serve
from ._session import ReviewSession

__all__ = [
    "ReviewSession",
    "serve",
    "write_report",
]
