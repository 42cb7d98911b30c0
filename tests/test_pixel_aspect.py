"""Issue 14.2: non-square pixels. Faces are detected on the picture as displayed (the sample
aspect ratio, SAR, applied), and masked in stored pixels.

Was: the detector saw the stored, squeezed pixels; at SAR 3:1 two of three faces stayed
unmasked, at 1:2 one. The clips here are the bundled sample's real face, stored squeezed by
the SAR so that a player shows the original picture; the check is made on that displayed
picture: every face found on the square-pixel original has lost its structure there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import veil
from veil import DetectionConfig
from veil.core import Origin
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo, display_size, unrotate
from veil_eval import STRUCTURE_MAX, structure_retained

#: Frames of the sample: shot 1 (one face, 95-200 px tall), shot 2 (60 and 35 px faces).
PICKED = (0, 40, 80, 120, 150, 170, 185, 199)
DISPLAY = (640, 360)


def _squeezed(sample: Path, dst: Path, sar: Fraction) -> Path:
    """The sample's ``PICKED`` frames stored at SAR ``sar``: squeezed (or stretched) across
    so that a player that applies the SAR shows the original 640x360 picture."""
    stored_w = round(DISPLAY[0] / sar / 2) * 2
    with av.open(str(sample)) as src, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "16"})
        stream.width, stream.height, stream.pix_fmt = stored_w, DISPLAY[1], "yuv420p"
        stream.codec_context.sample_aspect_ratio = sar
        for i, frame in enumerate(src.decode(video=0)):
            if i not in PICKED:
                continue
            picture = frame.to_ndarray(format="rgb24")
            stored = cv2.resize(picture, (stored_w, DISPLAY[1]), interpolation=cv2.INTER_AREA)
            coded = av.VideoFrame.from_ndarray(stored, format="rgb24")
            for packet in stream.encode(coded):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def _displayed(path: Path) -> list[np.ndarray]:
    """Each frame's luma as a player shows it: stretched back to 640x360."""
    with av.open(str(path)) as media:
        return [
            cv2.resize(f.to_ndarray(format="gray"), DISPLAY, interpolation=cv2.INTER_LINEAR)
            for f in media.decode(video=0)
        ]


@pytest.fixture(scope="module")
def faces(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """The faces of the square-pixel original, frame by frame (640x360 pixels): what a
    viewer of every squeezed copy sees."""
    square = _squeezed(sample_clip, tmp_path_factory.mktemp("square") / "square.mp4", Fraction(1))
    record = veil.detect(square, config=DetectionConfig.from_preset("balanced"))
    found = [
        np.array([m.box for m in f.masks if m.origin is Origin.DETECTED]).reshape(-1, 4)
        for f in record.frames
    ]
    assert sum(len(f) for f in found) >= len(PICKED)  # the sample's faces, seen
    return found


@pytest.mark.weights
@pytest.mark.parametrize(
    "sar",
    [Fraction(1), Fraction(3, 1), Fraction(1, 2), Fraction(64, 45), Fraction(2, 1)],
    ids=lambda sar: f"{sar.numerator}:{sar.denominator}",
)
def test_bug_faces_in_non_square_pixels_were_missed(
    sample_clip: Path, faces: list[np.ndarray], tmp_path: Path, sar: Fraction
) -> None:
    src = _squeezed(sample_clip, tmp_path / "in.mp4", sar)
    with av.open(str(src)) as media:
        assert media.streams.video[0].sample_aspect_ratio == sar
    dst = tmp_path / "out.mp4"
    record = veil.anonymize(src, dst).record
    assert record.input["video"]["sample_aspect_ratio"] == f"{sar.numerator}/{sar.denominator}"
    with av.open(str(dst)) as media:  # the output keeps the SAR: it displays as the input
        assert media.streams.video[0].sample_aspect_ratio == sar
    before, after = _displayed(src), _displayed(dst)
    leaks = []
    for k, boxes in enumerate(faces):
        for box in boxes:
            kept = structure_retained(before[k], after[k], tuple(box))
            if kept is not None and kept >= STRUCTURE_MAX:
                leaks.append((k, [round(float(v)) for v in box], round(kept, 2)))
    assert not leaks, f"faces left recognisable at SAR {sar} (frame, box, structure): {leaks}"


@pytest.mark.weights
def test_hybrid_detects_on_the_displayed_picture_too(
    veil_server: Callable[..., Any], sample_clip: Path, tmp_path: Path
) -> None:
    """Hybrid mode goes through the same scaling: the record equals the on-prem one."""
    from veil.remote import RemoteDetector

    src = _squeezed(sample_clip, tmp_path / "in.mp4", Fraction(3, 1))
    on_prem = veil.detect(src, tmp_path / "local.json")
    assert on_prem.summary()["tracks"] >= 1
    server = veil_server()
    with RemoteDetector(f"grpc://127.0.0.1:{server.port}", DetectionConfig().detector) as remote:
        veil.detect(src, tmp_path / "hybrid.json", detector=remote)
    local, hybrid = (json.loads((tmp_path / n).read_text()) for n in ("local.json", "hybrid.json"))
    hybrid["detector"].pop("transport")
    assert hybrid == local


#: The clips below are flat grey, which the low-light pass would also send stretched and at half
#: size: these tests are about the geometry of the frame as it is.
ONE_VIEW = veil.DetectionConfig.from_preset("balanced", detector={"low_light": False})


class Recording:
    """Finds one face at a fixed place of the displayed picture; records what it was given."""

    info = DetectorInfo(
        model="recording",
        weights_sha256="0" * 64,
        backend="test",
        execution_provider="cpu",
        max_side=320,
        score_threshold=0.5,
        nms_threshold=0.4,
    )

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.sizes: list[tuple[int, int]] = []

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        self.shapes += [(image.shape[1], image.shape[0]) for image in images]
        self.sizes += list(sizes)
        box = [[w * 0.25, h * 0.25, w * 0.5, h * 0.75] for w, h in sizes]
        return [Detections(np.array([b]), np.array([0.9])) for b in box]

    def close(self) -> None:
        pass


def _flat_clip(
    path: Path, stored: tuple[int, int], sar: Fraction, rotation: int = 0, frames: int = 3
) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *stored, "yuv420p"
        stream.codec_context.sample_aspect_ratio = sar
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((stored[1], stored[0], 3), 60 + i, np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    ("sar", "stored", "display"),
    [
        (Fraction(1), (320, 240), (320, 240)),
        (Fraction(3, 1), (120, 240), (360, 240)),  # squeezed across: widened for detection
        (Fraction(1, 2), (320, 120), (320, 240)),  # stretched across: made taller
        (Fraction(64, 45), (720, 480), (1024, 480)),  # DV/DVD PAL widescreen-like
    ],
    ids=str,
)
def test_detection_sees_the_display_geometry_and_masks_land_in_stored_pixels(
    tmp_path: Path, sar: Fraction, stored: tuple[int, int], display: tuple[int, int]
) -> None:
    src = _flat_clip(tmp_path / "in.mkv", stored, sar)
    detector = Recording()
    record = veil.detect(src, detector=detector, config=ONE_VIEW)
    assert set(detector.sizes) == {display}
    assert set(detector.shapes) == {veil.fit_size(*display, 320)}
    w, h = stored
    boxes = [m.box for f in record.frames for m in f.masks if m.origin is Origin.DETECTED]
    assert boxes and np.allclose(boxes, [w * 0.25, h * 0.25, w * 0.5, h * 0.75], atol=0.01)


def test_rotation_and_non_square_pixels_together(tmp_path: Path) -> None:
    """A sideways phone clip with 3:1 pixels: stretched across, then turned upright."""
    src = _flat_clip(tmp_path / "in.mp4", (120, 240), Fraction(3, 1), rotation=90)
    detector = Recording()
    record = veil.detect(src, detector=detector, config=ONE_VIEW)
    assert set(detector.sizes) == {(240, 360)}  # 360x240 as displayed, turned upright
    # The box found upright, turned back (``unrotate``) and unsqueezed to stored pixels.
    upright = Detections(np.array([[60.0, 90.0, 120.0, 270.0]]), np.array([0.9]))
    with av.open(str(src)) as media:  # the quarter turns ``Upright`` applies
        turns = round(next(media.decode(video=0)).rotation / 90) % 4
    expected = unrotate(upright, turns, (360, 240)).scaled(1 / 3, 1).boxes[0]
    boxes = [m.box for f in record.frames for m in f.masks if m.origin is Origin.DETECTED]
    assert boxes and np.allclose(boxes, expected, atol=0.01)


def test_live_detects_on_the_displayed_picture_too(tmp_path: Path) -> None:
    from veil.live import run_live

    src = _flat_clip(tmp_path / "in.mkv", (120, 240), Fraction(3, 1), frames=8)
    detector = Recording()
    run_live(str(src), str(tmp_path / "out.mkv"), detector=detector, record=tmp_path / "r.jsonl")
    assert set(detector.sizes) == {(360, 240)}
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    boxes = [m["box"] for e in lines for m in e.get("masks", []) if m["origin"] == "detected"]
    assert boxes and np.allclose(boxes, [30.0, 60.0, 60.0, 180.0], atol=0.01)


@given(
    width=st.integers(1, 8192),
    height=st.integers(1, 8192),
    num=st.integers(1, 255),
    den=st.integers(1, 255),
)
def test_display_size_squares_the_pixels_and_never_shrinks(
    width: int, height: int, num: int, den: int
) -> None:
    sar = Fraction(num, den)
    w, h = display_size(width, height, sar)
    if max(width * sar, height / sar) <= 16384:
        assert w >= width and h >= height  # one side stretched, never one shrunk
        assert (w, h) == (width, height) or w == width or h == height
    assert max(w, h) <= max(16384, width, height)
    # the displayed shape, width * SAR / height, to within half a pixel's rounding a side
    # (unless capping an absurd SAR left a side under 2 pixels: then no shape survives)
    shape = width * sar / height
    assert min(w, h) < 2 or abs(w / h - shape) <= shape * 1.01 * (1 / w + 1 / h)
