"""How long to wait before trying again: the one rule of every retry loop in veil."""

from __future__ import annotations


def backoff(failures: int, *, initial: float, multiplier: float, ceiling: float) -> float:
    """The wait after ``failures`` failures in a row: ``initial``, then ``multiplier`` times
    more after each further failure, at most ``ceiling``."""
    return min(ceiling, initial * multiplier ** min(max(failures, 1) - 1, 64))
