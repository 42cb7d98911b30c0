"""Run ``deface`` (PyPI deface==1.5.0, the open-source peer) on a clip, for side-by-side scoring.

deface lives in its own virtual environment (``make deface-env`` makes ``.deface-venv``): it
pins opencv-python and imageio versions that must not leak into veil's. It runs with its
defaults (CenterFace at full resolution, threshold 0.2, ellipse masks scaled 1.3x, blur), which
is how its users meet it; its output is scored by pixels like veil's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

DEFACE_VERSION = "1.5.0"


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
