"""veil's evaluation harness (not part of the product): leaks, holes and collateral of veil and
deface against ground-truth clips (:mod:`.truth`), judged by record (:mod:`.coverage`) or by
pixels (:mod:`.pixels`), recall on stills (:mod:`.stills`), generated hard clips
(:mod:`.clips`). ``python benchmarks/eval.py --help`` runs it; the benchmarks and tests import
it with ``benchmarks/`` on ``sys.path``.
"""

from .clips import generate_all, live_clips
from .coverage import COVER_MIN, collateral_share, covered_share, score_masks, score_record
from .harness import evaluate
from .pixels import STRUCTURE_MAX, score_video, structure_retained
from .report import ClipResult, EvalReport
from .score import Score
from .stills import StillsScore, score_stills
from .truth import (
    BUCKETS,
    COLLATERAL_GROWTH,
    MIN_VISIBLE,
    TARGET_HEIGHT,
    GtClip,
    GtFace,
    find_clips,
)

__all__ = [
    "BUCKETS",
    "COLLATERAL_GROWTH",
    "COVER_MIN",
    "MIN_VISIBLE",
    "STRUCTURE_MAX",
    "TARGET_HEIGHT",
    "ClipResult",
    "EvalReport",
    "GtClip",
    "GtFace",
    "Score",
    "StillsScore",
    "collateral_share",
    "covered_share",
    "evaluate",
    "find_clips",
    "generate_all",
    "live_clips",
    "score_masks",
    "score_record",
    "score_stills",
    "score_video",
    "structure_retained",
]
