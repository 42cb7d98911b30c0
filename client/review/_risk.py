"""Reading the record's residual-risk block (``veil.job`` writes it; older records and other
tools wrote other shapes): per-frame risk values and near-threshold frames, for the flags and
the timeline. The block stays the record's JSON: its parts are optional and vary by writer."""

from __future__ import annotations

from typing import Any

from veil.job import Record


def risk_block(record: Record, document: dict[str, Any]) -> dict[str, Any] | None:
    """The record's optional ``residual_risk`` block (as read from ``document``, else as the
    record holds it); None where it has none."""
    return document.get("residual_risk") or record.residual_risk or None


def near_threshold(block: dict[str, Any] | None) -> dict[int, float]:
    """Frames with near-threshold candidates (``near_threshold.worst``) -> best score."""
    near = (block or {}).get("near_threshold")
    if not isinstance(near, dict):
        return {}
    return {
        int(e["frame"]): float(e.get("best_score", 0.0))
        for e in near.get("worst", [])
        if isinstance(e, dict) and isinstance(e.get("frame"), int)
    }


def risk_series(block: dict[str, Any] | None, frames: int) -> dict[int, float]:
    """Per-frame risk values found in a residual-risk block, if it has any.

    Accepts a list of numbers (one per frame) or a list of objects with a frame index
    (``frame`` or ``index``) and a number (``risk``, ``value``, ``p`` or the only number).
    """
    if not block:
        return {}
    for value in block.values():
        if not isinstance(value, list) or not value:
            continue
        if all(isinstance(v, int | float) for v in value) and len(value) == frames:
            return {i: float(v) for i, v in enumerate(value)}
        if all(isinstance(v, dict) for v in value):
            series: dict[int, float] = {}
            for entry in value:
                index = entry.get("frame", entry.get("index"))
                numbers = {
                    k: v
                    for k, v in entry.items()
                    if k not in ("frame", "index", "track") and isinstance(v, int | float)
                }
                number = next(
                    (numbers[k] for k in ("risk", "value", "p", "probability") if k in numbers),
                    next(iter(numbers.values())) if len(numbers) == 1 else None,
                )
                if isinstance(index, int) and number is not None:
                    series[index] = max(series.get(index, 0.0), float(number))
            if series:
                return series
    return {}
