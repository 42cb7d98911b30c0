"""Every ground-truth face (>= 20 px tall, >= 60 % visible) is covered by the record's masks
in every frame of the public GT clips, for each mask shape. Numbers are printed (-s)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import veil
from veil import DetectionConfig, Record, Shape, Style
from veil.mask._draw import Geometry

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

CLIPS = ["wider_group_tilted_pan", "dlib_party_landmarks_noaudio"]
#: Loose WIDER boxes include hair and ears; the face proper lies well inside them.
MIN_SHARE = 0.6


@cache
def _record(clip: Path) -> Record:
    return veil.detect(clip, config=DetectionConfig.from_preset("balanced"))


def _covered_shares(record: Record, gt: dict, style: Style) -> list[float]:
    shares = []
    for frame, truth in zip(record.frames, gt["frames"], strict=True):
        for face in truth["faces"]:
            x0, y0, x1, y1 = face["bbox"]
            if face["ignore"] or face["visible"] < 0.6 or y1 - y0 < 20:
                continue
            xs = np.arange(np.floor(x0), np.ceil(x1)) + 0.5
            ys = np.arange(np.floor(y0), np.ceil(y1)) + 0.5
            xs, ys = xs[(xs > x0) & (xs < x1)], ys[(ys > y0) & (ys < y1)]
            covered = np.zeros((len(ys), len(xs)), bool)
            for mask in frame.masks:
                covered |= Geometry.of(mask.box, style).alpha(style.shape, xs, ys) >= 1.0
            shares.append(float(covered.mean()))
    return shares


@pytest.mark.parametrize("shape", list(Shape))
@pytest.mark.parametrize("name", CLIPS)
def test_every_gt_face_is_covered_in_every_frame(
    shared_data: Path, name: str, shape: Shape
) -> None:
    clip = shared_data / "clips" / f"{name}.mp4"
    gt = json.loads(clip.with_suffix(".json").read_text())
    record = _record(clip)
    assert len(record.frames) == gt["n_frames"]
    shares = np.array(_covered_shares(record, gt, Style(shape=shape)))
    print(
        f"\n{name} [{shape.value}]: {len(shares)} GT faces, covered share "
        f"min {shares.min():.3f}, mean {shares.mean():.4f}, "
        f"fully covered {np.mean(shares >= 0.999):.1%}"
    )
    assert len(shares) > 100
    assert shares.min() >= MIN_SHARE
    assert shares.mean() >= 0.99
