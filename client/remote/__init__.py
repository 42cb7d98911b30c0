"""Talking to a veil server. Hybrid mode (``_hybrid``): the :class:`RemoteDetector`, frames
over one stream, detection on the server, everything else here. Cloud mode (``_jobs``):
:func:`run_remote_job`, the whole file up and the results back. Both reach the server as
:class:`ChannelOptions` say (``_channel``: TLS, token, deadlines, retries, errors); what the
messages carry is ``veil.wire``'s.
"""

from ._channel import ChannelOptions, RemoteError, RetryPolicy, ServerLost, read_token
from ._hybrid import RemoteDetector
from ._jobs import RemoteJobResult, run_remote_job

__all__ = [
    "ChannelOptions",
    "RemoteDetector",
    "RemoteError",
    "RemoteJobResult",
    "RetryPolicy",
    "ServerLost",
    "read_token",
    "run_remote_job",
]
