"""TODO."""

from ._engine import LiveConfig, ReconnectPolicy, run_live
from ._io import LiveEncoder

__all__ = [
    "LiveConfig",
    "LiveEncoder",
    "ReconnectPolicy",
    "run_live",
]
