"""TODO."""

from ._remote import ChannelOptions, RemoteDetector, job_start, read_token, run_remote_job

__all__ = [
    "ChannelOptions",
    "RemoteDetector",
    "job_start",
    "read_token",
    "run_remote_job",
]
