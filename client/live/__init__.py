"""Real-time mode (``veil live``): a stream in, the same stream out with every face masked
within a bounded delay, whatever the detector does. ``_policy`` decides how each frame is
masked (pure, clock injected); ``_predict`` is live's motion model; ``_engine`` runs the loop;
``_reader``, ``_worker`` and ``_inbox`` are its threads and queue; ``_timeline`` spans
reconnects; ``_record`` the typed JSON Lines record; ``_stats`` the counters and metrics."""

from ._config import LiveConfig, OutagePolicy, ReconnectPolicy
from ._predict import Predictor
from ._run import run_live

__all__ = [
    "LiveConfig",
    "OutagePolicy",
    "Predictor",
    "ReconnectPolicy",
    "run_live",
]
