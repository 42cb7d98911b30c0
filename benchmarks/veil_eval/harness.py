"""The evaluation run behind ``benchmarks/eval.py``: veil (each preset) and deface on GT clips,
veil's detectors on labelled stills, all scored on the same definitions."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from veil import DetectionConfig, Record, anonymize, client_passes, detect, open_detector

from .coverage import score_record
from .deface import find_deface, score_deface
from .pixels import score_video
from .report import ClipResult, EvalReport
from .stills import StillsScore, score_stills
from .truth import GtClip


def run_veil(clip: GtClip, preset: str, workdir: Path, *, pixels: bool = True) -> ClipResult:
    """Anonymise ``clip`` with ``preset`` and score the record and (optionally) the pixels."""
    config = DetectionConfig.from_preset(preset)
    output = workdir / f"{clip.name}.{preset}.mp4"
    t0 = time.perf_counter()
    if pixels:
        job = anonymize(clip.video, output, config=config, write_record=False, overwrite=True)
        record = job.record
    else:
        record = detect(clip.video, config=config)
    seconds = time.perf_counter() - t0
    # every record the eval makes must read back under its schema (`veil verify` and `veil
    # render` read it so): thorough's record of the small-face crowd once did not
    Record.from_json(record.to_json(), f"{clip.name} ({preset})")
    by_record = score_record(clip, record)
    by_record.seconds = seconds
    by_pixels = None
    if pixels:
        by_pixels = score_video(clip, output)
        by_pixels.seconds = seconds
        output.unlink(missing_ok=True)
    return ClipResult(
        clip=clip.name, tool=f"veil:{preset}", by_record=by_record, by_pixels=by_pixels
    )


def evaluate(
    clip_paths: Sequence[Path],
    *,
    presets: Sequence[str],
    compare_deface: bool = False,
    pixels: bool = True,
    stills: Sequence[Path] = (),
    stills_limit: int | None = None,
    cache: Path | None = None,
    deface: Path | None = None,
) -> EvalReport:
    """Score veil (each preset) and optionally deface on GT clips, and veil on stills."""
    clips = [GtClip.load(p) for p in clip_paths]
    results: list[ClipResult] = []
    executable = None
    if compare_deface:
        executable = deface or find_deface()
        if executable is None:
            raise FileNotFoundError("deface is not installed: run `make deface-env`")
    with tempfile.TemporaryDirectory(prefix="veil-eval-") as tmp:
        workdir = Path(tmp)
        for clip in clips:
            for preset in presets:
                results.append(run_veil(clip, preset, workdir, pixels=pixels))
            if executable is not None:
                results.append(score_deface(clip, executable, workdir, cache))
    still_scores: dict[str, StillsScore] = {}
    for preset in presets if stills else ():
        settings = DetectionConfig.from_preset(preset).detector
        detector = client_passes(open_detector(settings), settings)
        try:
            still_scores[preset] = score_stills(detector, stills, limit=stills_limit)
        finally:
            detector.close()
    return EvalReport(clips=results, stills=still_scores)
