"""Faults during a job: SIGTERM, a full disk. Nothing partial is left under any name."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mediagen import make_clip

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)


def _veil(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "veil.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def test_sigterm_during_a_job_leaves_no_output(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", size=(640, 360), frames=400)
    out = tmp_path / "out.mp4"
    proc = _veil("anonymize", "-q", str(src), "-o", str(out))
    deadline = time.monotonic() + 120
    # Wait until the job is writing (its partial file exists), then stop it.
    while not list(tmp_path.glob(".out.veil-partial-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted; no output was written" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def _small_file_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", size=(640, 360), frames=60)
    assert src.stat().st_size < 200_000 * 10
    out = tmp_path / "out.mkv"
    proc = _veil("anonymize", "-q", str(src), "-o", str(out), preexec_fn=_small_file_limit)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 5, stderr
    assert "File too large" in stderr or "No space" in stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]
