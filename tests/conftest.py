"""Shared fixtures: where the shared test data is, and the bundled sample."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "samples" / "astronaut.mp4"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (test data, not part of the product); skips when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    """The bundled sample: real footage of a face, with audio."""
    assert SAMPLE.is_file(), f"the bundled sample {SAMPLE} is missing (make sample)"
    return SAMPLE
