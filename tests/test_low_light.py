"""The low-light pass (``veil.core._detector.LowLightPass``): dark or flat frames are detected again
stretched to the full range, and at half the size; bright frames are left alone; the pass
only adds detections; it runs in every mode and is recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from mediagen import darken

from veil import DetectionConfig, detect
from veil._api import client_passes, open_detector
from veil.core import iou_matrix
from veil.core._detections import Detections
from veil.core._detector import (
    LOW_LIGHT_MAX_GAIN,
    LOW_LIGHT_RANGE,
    DetectorInfo,
    Image,
    LowLightPass,
    fit_size,
    stretched,
)


def _luma_range(image: Image) -> int:
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    lo, hi = np.percentile(luma, [1, 99.5])
    return int(hi - lo)


@pytest.fixture(scope="module")
def frame(sample_clip: Path) -> Image:
    """The bundled sample's first frame (a face, normally lit), RGB."""
    with av.open(str(sample_clip)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_a_normally_lit_frame_is_not_stretched(frame: Image) -> None:
    assert _luma_range(frame) >= LOW_LIGHT_RANGE
    assert stretched(frame) is None


def test_a_dark_frame_is_stretched_to_the_full_range(frame: Image) -> None:
    dark = np.rint(frame * 0.2).astype(np.uint8)
    assert _luma_range(dark) < LOW_LIGHT_RANGE
    bright = stretched(dark)
    assert bright is not None and bright.shape == dark.shape and bright.dtype == np.uint8
    assert _luma_range(bright) >= 240
    # one table for every channel: the order of pixel values is kept
    assert np.all(
        np.diff(bright.reshape(-1, 3)[np.argsort(dark[..., 1].ravel()), 1].astype(int)) >= 0
    )


def test_the_stretch_of_a_black_frame_is_capped() -> None:
    rng = np.random.default_rng(0)
    black = rng.integers(0, 4, (90, 160, 3), dtype=np.uint8)  # sensor noise, nothing else
    bright = stretched(black)
    assert bright is not None
    assert int(bright.max()) <= int(np.ceil(3 * LOW_LIGHT_MAX_GAIN))


class _Recording:
    """A real detector that keeps what it was asked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[list[tuple[int, ...]], list[tuple[int, int]]]] = []

    @property
    def info(self) -> DetectorInfo:
        return self.inner.info  # type: ignore[no-any-return]

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        self.calls.append(([im.shape for im in images], list(display_sizes)))
        return self.inner.detect(images, display_sizes)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def yunet() -> Any:
    settings = DetectionConfig.from_preset("balanced").detector
    detector = open_detector(settings)
    yield detector
    detector.close()


@pytest.mark.weights
def test_dark_frames_are_detected_three_times_bright_ones_once(frame: Image, yunet: Any) -> None:
    height, width = frame.shape[:2]
    display = (width * 2, height * 2)  # boxes come back in display pixels, not image pixels
    dark = np.rint(frame * 0.15).astype(np.uint8)
    recording = _Recording(yunet)
    found = LowLightPass(recording, 0.5).detect([frame, dark], [display, display])
    ((shapes, sizes),) = recording.calls
    half = fit_size(width, height, max(width, height) // 2)
    assert shapes == [frame.shape, dark.shape, dark.shape, (half[1], half[0], 3)]
    assert sizes == [display, display, display, half]
    assert len(found) == 2
    alone = yunet.detect([frame], [display])[0]
    assert np.array_equal(found[0].boxes, alone.boxes)
    assert np.array_equal(found[0].scores, alone.scores)
    assert len(found[1]) >= 1 and found[1].boxes[:, 2].max() > width  # display pixels


@pytest.mark.weights
@pytest.mark.parametrize("exposure", [0.3, 0.15, 0.08])
def test_the_pass_only_adds(frame: Image, yunet: Any, exposure: float) -> None:
    """Every detection of the frame as it is survives, or a higher-scored box on the same face
    (the model's NMS) replaces it."""
    rng = np.random.default_rng(1)
    dark = np.clip(frame * exposure + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    size = (frame.shape[1], frame.shape[0])
    alone = yunet.detect([dark], [size])[0]
    merged = LowLightPass(yunet, 0.5).detect([dark], [size])[0]
    assert len(merged) >= len(alone)
    if len(alone):
        overlap = iou_matrix(alone.boxes, merged.boxes)
        for k in range(len(alone)):
            kept = merged.scores[overlap[k] > yunet.info.nms_threshold]
            assert kept.size and kept.max() >= alone.scores[k]


@pytest.mark.weights
def test_the_extra_views_count_only_from_the_floor(frame: Image, yunet: Any) -> None:
    """Below ``min_score`` the stretched and half-size views add nothing: at a floor no score
    reaches, a dark frame gets exactly the detections of the frame as it is."""
    rng = np.random.default_rng(4)
    dark = np.clip(frame * 0.1 + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8)
    size = (frame.shape[1], frame.shape[0])
    alone = yunet.detect([dark], [size])[0]
    floored = LowLightPass(yunet, 1.01).detect([dark], [size])[0]
    assert np.array_equal(floored.scores, alone.scores)
    assert np.allclose(floored.boxes, np.clip(alone.boxes, 0, [*size, *size]))
    counted = LowLightPass(yunet, 0.15).detect([dark], [size])[0]
    assert len(counted) > len(alone)


@pytest.mark.weights
def test_faces_in_a_dim_noisy_still_are_found(shared_data: Path, yunet: Any) -> None:
    """A WIDER still (the generated dim-room clip's) dimmed to x0.12 with sensor noise and
    stored as a low-quality JPEG: the pass finds labelled faces the detector alone misses at
    the new-track threshold, and loses none."""
    name = "10--People_Marching/10_People_Marching_People_Marching_2_256.jpg"
    annotations = json.loads((shared_data / "stills/widerface/annotations.json").read_text())
    entry = next(e for e in annotations["images"] if e["wider_name"] == name)
    image = cv2.imread(str(shared_data / "stills/widerface" / entry["file"]))[..., ::-1]
    rng = np.random.default_rng(2)
    dim = np.clip(image * 0.12 + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", dim[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 25])
    dim = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1].copy()
    height, width = dim.shape[:2]
    scaled = cv2.resize(dim, fit_size(width, height, 640), interpolation=cv2.INTER_AREA)
    faces = np.array(
        [
            [f["x"], f["y"], f["x"] + f["w"], f["y"] + f["h"]]
            for f in entry["faces"]
            if not f["invalid"]
        ],
        np.float32,
    )

    def found(detections: Detections) -> set[int]:
        strong = detections.boxes[detections.scores >= 0.5]
        if not len(strong):
            return set()
        return {int(k) for k in np.flatnonzero(iou_matrix(faces, strong).max(axis=1) >= 0.3)}

    alone = found(yunet.detect([scaled], [(width, height)])[0])
    with_pass = found(LowLightPass(yunet, 0.5).detect([scaled], [(width, height)])[0])
    assert alone <= with_pass
    assert len(with_pass) >= len(alone) + 3, (alone, with_pass)


@pytest.mark.weights
def test_the_pass_is_recorded_and_can_be_turned_off(sample_clip: Path, tmp_path: Path) -> None:
    dark = darken(sample_clip, tmp_path / "dark.mp4", exposure=0.1, noise=4, frames=12)
    on = detect(dark)
    assert on.detector["options"]["low_light"] == {
        "range": LOW_LIGHT_RANGE,
        "max_gain": LOW_LIGHT_MAX_GAIN,
        "min_score": DetectionConfig().detector.score_threshold,
    }
    assert "preset_overrides" not in on.detector
    off = detect(
        dark, config=DetectionConfig.from_preset("balanced", detector={"low_light": False})
    )
    assert "low_light" not in off.detector["options"]
    assert off.detector["preset_overrides"] == ["detector.low_light"]
    assert on.summary()["tracks"] >= 1


def test_client_passes_follow_the_settings() -> None:
    class _Null:
        info = DetectorInfo(
            model="none",
            weights_sha256="",
            backend="test",
            execution_provider="",
            max_side=640,
            score_threshold=0.5,
            nms_threshold=0.3,
        )

        def detect(
            self, images: Sequence[Image], sizes: Sequence[tuple[int, int]]
        ) -> list[Detections]:
            return [Detections.empty() for _ in images]

        def close(self) -> None:
            pass

    null = _Null()
    settings = DetectionConfig.from_preset("fast").detector
    assert isinstance(client_passes(null, settings), LowLightPass)
    from dataclasses import replace

    assert client_passes(null, replace(settings, low_light=False)) is null


@pytest.mark.weights
def test_dark_frames_are_flagged_for_review(sample_clip: Path, tmp_path: Path) -> None:
    """The residual risk lists dark frames (where every detector measured lost faces), the
    estimate counts them and the review flags them; a lit clip has none."""
    import jsonschema

    from veil.job._documents import load_schema
    from veil.job._edits import Applied
    from veil.job._replay import final_frames
    from veil.review._flags import find_flags

    dark = darken(sample_clip, tmp_path / "dark.mp4", exposure=0.1, noise=4, frames=12)
    record = detect(dark, tmp_path / "dark.json")
    risk = record.residual_risk
    assert risk is not None
    flags = find_flags(record, final_frames(record), Applied.of(record), {}, risk)
    assert [(f.first, f.last) for f in flags if f.reason == "dark frames"] == [(0, 11)]
    assert risk["dark_frames"] == {"count": 12, "list": [{"first": 0, "last": 11}]}
    assert risk["estimate"]["review_frames"] == 12
    document = json.loads((tmp_path / "dark.json").read_text())
    jsonschema.Draft202012Validator(load_schema("record")).validate(document)
    lit = detect(sample_clip).residual_risk
    assert lit is not None and lit["dark_frames"]["count"] == 0
