"""Run ``deface`` (PyPI deface==1.5.0, the open-source peer) on a clip, for side-by-side scoring.

deface lives in its own virtual environment (``make deface-env`` makes ``.deface-venv``): it
pins opencv-python and imageio versions that must not leak into veil's. It runs with its
defaults (CenterFace at full resolution, threshold 0.2, ellipse masks scaled 1.3x, blur), which
is how its users meet it; its output is scored by pixels like veil's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from veil.media import sha256_file

from .pixels import score_video
from .report import ClipResult
from .score import Score
from .truth import GtClip

DEFACE_VERSION = "1.5.0"
#: Bumped when :class:`Score` gains fields, so that older cached deface scores are redone.
_CACHE_FORMAT = "s2"


def find_deface(venv: Path | None = None) -> Path | None:
    """``deface``: ``$VEIL_DEFACE``, ``venv/bin/deface``, ``.deface-venv`` or on PATH."""
    candidates = []
    if os.environ.get("VEIL_DEFACE"):
        candidates.append(Path(os.environ["VEIL_DEFACE"]))
    if venv is not None:
        candidates.append(venv / "bin" / "deface")
    candidates.append(Path(".deface-venv/bin/deface"))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which("deface")
    return Path(found) if found else None


def run_deface(executable: Path, input: Path, output: Path) -> float:
    """Anonymise ``input`` into ``output`` with deface's defaults; returns the wall seconds."""
    t0 = time.perf_counter()
    result = subprocess.run(
        [str(executable), str(input), "-o", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    seconds = time.perf_counter() - t0
    if result.returncode != 0 or not output.exists():
        raise RuntimeError(f"deface failed on {input.name}: {result.stderr.strip()[-500:]}")
    return seconds


def score_deface(clip: GtClip, executable: Path, workdir: Path, cache: Path | None) -> ClipResult:
    """deface's result on ``clip``, scored by pixels; cached by the clip's sha256 (deface is
    slow, ~1 s/frame at 720p on two cores, and its result does not depend on anything veil
    changes)."""
    path = None
    if cache is not None:
        name = f"deface-{DEFACE_VERSION}-{_CACHE_FORMAT}-{sha256_file(clip.video)[:16]}.json"
        path = cache / name
        if path.exists():
            score = Score(**json.loads(path.read_text()))
            return ClipResult(clip=clip.name, tool="deface", by_record=None, by_pixels=score)
    output = workdir / f"{clip.name}.deface.mp4"
    try:
        seconds = run_deface(executable, clip.video, output)
        by_pixels = score_video(clip, output)
    except (RuntimeError, ValueError, OSError) as exc:
        return ClipResult(
            clip=clip.name, tool="deface", by_record=None, by_pixels=None, error=str(exc)
        )
    finally:
        output.unlink(missing_ok=True)
    by_pixels.seconds = seconds
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(by_pixels)))
    return ClipResult(clip=clip.name, tool="deface", by_record=None, by_pixels=by_pixels)
