"""Archives: many files anonymised in one command, one child process per file, on this machine
(``run_local``) or spread over a Dask cluster (``run_cluster``); resumable, with a report."""

from ._batch import frame_count, plan, run_local, serve_metrics, table, write_report
from ._cluster import run_cluster

__all__ = [
    "frame_count",
    "plan",
    "run_cluster",
    "run_local",
    "serve_metrics",
    "table",
    "write_report",
]
