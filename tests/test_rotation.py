"""Phone videos stored sideways: faces are found upright and masked in decoded pixels."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import veil
from veil import DetectionConfig, Detections, Origin
from veil.core._detector import unrotate

FRAMES = 20


def _sideways_copy(sample: Path, dst: Path, rotation: int) -> Path:
    """The sample's first frames stored turned, with metadata that turns them back."""
    turns = (rotation // 90) % 4
    with av.open(str(sample)) as src, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        for i, frame in enumerate(src.decode(video=0)):
            if i == FRAMES:
                break
            upright = frame.to_ndarray(format="rgb24")
            coded = np.ascontiguousarray(np.rot90(upright, -turns))
            if i == 0:
                stream.height, stream.width = coded.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def _detected(record: veil.Record, threshold: float) -> list[np.ndarray]:
    """Each frame's detected boxes scored ``threshold`` or more: the faces. Weak detections
    (down to balanced's 0.12) come and go with each file's own compression, whichever way
    it was stored."""
    return [
        np.array(
            [m.box for m in f.masks if m.origin is Origin.DETECTED and m.score >= threshold]
        ).reshape(-1, 4)
        for f in record.frames
    ]


@pytest.mark.weights
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_sideways_faces_are_found_and_masked_where_they_are_stored(
    tmp_path: Path, sample_clip: Path, rotation: int
) -> None:
    config = DetectionConfig.from_preset("balanced")
    upright = _sideways_copy(sample_clip, tmp_path / "upright.mp4", 0)
    turned = _sideways_copy(sample_clip, tmp_path / "turned.mp4", rotation)
    strong = config.detector.score_threshold
    reference = _detected(veil.detect(upright, config=config), strong)
    found = _detected(veil.detect(turned, config=config), strong)
    with av.open(str(turned)) as c:
        size = (c.streams.video[0].width, c.streams.video[0].height)
        assert next(c.decode(video=0)).rotation % 360 == rotation % 360
    turns = (rotation // 90) % 4
    matched = 0
    for ref, got in zip(reference, found, strict=True):
        if len(ref) == 0:
            continue
        expected = unrotate(Detections(ref, np.ones(len(ref))), turns, size).boxes
        assert len(got) >= 1
        gaps = np.abs(got[:, None, :] - expected[None, :, :]).max(axis=2).min(axis=0)
        heights = expected[:, 3] - expected[:, 1]
        matched += int(np.all(gaps < 0.15 * np.maximum(heights, expected[:, 2] - expected[:, 0])))
    assert matched >= 0.9 * sum(len(r) > 0 for r in reference) > 0


@given(
    turns=st.integers(0, 3),
    w=st.integers(8, 400),
    h=st.integers(8, 400),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
)
def test_unrotate_inverts_the_turn(turns: int, w: int, h: int, fx: float, fy: float) -> None:
    """A pixel marked in a decoded frame, found in the turned image, maps back onto itself."""
    x, y = int(fx * (w - 1)), int(fy * (h - 1))
    coded = np.zeros((h, w), np.uint8)
    coded[y, x] = 1
    turned = np.rot90(coded, turns)
    ty, tx = (int(v) for v in np.argwhere(turned)[0])
    box = np.array([[tx, ty, tx + 1, ty + 1]], np.float32)
    back = unrotate(Detections(box, np.ones(1)), turns, (w, h)).boxes[0]
    assert back.tolist() == [x, y, x + 1, y + 1]
