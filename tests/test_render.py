"""The renderer: what "masked" means (DESIGN), checked on frames the tests build."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil import Effect, Mask, Origin, Shape, Style
from veil.mask import by_track
from veil.mask._draw import Geometry, plane_arrays, render_frame

W, H = 320, 240
FACE = (100.0, 60.0, 180.0, 160.0)  # 80 x 100 px


def _textured_frame() -> av.VideoFrame:
    """Fine checkerboard (structure at the scale of eyes) over a gradient, yuv420p."""
    y, x = np.mgrid[0:H, 0:W]
    luma = ((x // 3 + y // 3) % 2 * 120 + x // 4 + 40).astype(np.uint8)
    frame = av.VideoFrame(W, H, "yuv420p")
    planes = plane_arrays(frame)
    planes[0][...] = luma
    planes[1][...] = ((x[::2, ::2] // 2) % 256).astype(np.uint8)
    planes[2][...] = 128
    return frame


def _luma(frame: av.VideoFrame) -> np.ndarray:
    return plane_arrays(frame)[0].astype(np.float64)


def _detail(region: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: fine structure."""
    return float(np.abs(np.diff(region, axis=1)).mean() + np.abs(np.diff(region, axis=0)).mean())


def _face(luma: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in FACE)
    return luma[y0:y1, x0:x1]


@pytest.mark.parametrize("effect", list(Effect))
@pytest.mark.parametrize("shape", list(Shape))
def test_face_structure_is_gone_and_the_rest_untouched(effect: Effect, shape: Shape) -> None:
    style = Style(effect=effect, shape=shape)
    src = _textured_frame()
    out = render_frame(src, [[FACE]], style, pix_fmt="yuv420p")
    before, after = _luma(src), _luma(out)
    assert _detail(_face(after)) < 0.1 * _detail(_face(before))
    # Outside the covered area and its feather band nothing changes, bit for bit.
    x0, y0, x1, y1 = Geometry.of(FACE, style).roi(W, H, style.shape) or (0, 0, 0, 0)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(after[outside], before[outside])
    assert out.pts == src.pts


@pytest.mark.parametrize("effect", list(Effect))
@pytest.mark.parametrize("shape", list(Shape))
def test_a_face_s_boxes_drawn_as_one_cover_all_each_would(effect: Effect, shape: Shape) -> None:
    """One face's detection and its steadied blend, drawn as one group: every pixel either
    box changes alone is changed, and each box's face area loses its structure."""
    style = Style(effect=effect, shape=shape)
    src = _textured_frame()
    moved = (FACE[0] + 24, FACE[1] + 10, FACE[2] + 30, FACE[3] + 14)
    before = _luma(src)
    together = _luma(render_frame(src, [[FACE, moved]], style, pix_fmt="yuv420p"))
    for box in (FACE, moved):
        alone = _luma(render_frame(src, [[box]], style, pix_fmt="yuv420p"))
        touched = np.abs(alone - before) > 2
        assert touched.any()
        assert (np.abs(together - before) > 0)[touched].mean() > 0.99
        x0, y0, x1, y1 = (int(v) for v in box)
        face_before, face_after = before[y0:y1, x0:x1], together[y0:y1, x0:x1]
        assert _detail(face_after) < 0.1 * _detail(face_before)


def test_masks_are_grouped_by_track() -> None:
    masks = [
        Mask(track=1, origin=Origin.DETECTED, box=FACE, score=0.9),
        Mask(track=2, origin=Origin.DETECTED, box=(0.0, 0.0, 20.0, 20.0), score=0.8),
        Mask(track=1, origin=Origin.INTERPOLATED, box=(102.0, 61.0, 181.0, 160.0), score=0.9),
    ]
    assert by_track(masks) == [[FACE, (102.0, 61.0, 181.0, 160.0)], [(0.0, 0.0, 20.0, 20.0)]]


def test_pixelate_leaves_at_most_the_configured_blocks_across_the_face() -> None:
    style = Style(effect=Effect.PIXELATE, feather=0.0, pixel_blocks=5)
    out = _luma(render_frame(_textured_frame(), [[FACE]], style, pix_fmt="yuv420p"))
    row = _face(out)[50]
    runs = 1 + int(np.count_nonzero(np.diff(row)))
    assert runs <= 6  # 5 blocks across the 100 px face side, plus a partial one at an edge


def test_blur_strength_scales_with_face_size() -> None:
    style = Style(effect=Effect.BLUR, feather=0.0)
    src = _textured_frame()
    small = (20.0, 20.0, 40.0, 44.0)
    out = _luma(render_frame(src, [[small], [FACE]], style, pix_fmt="yuv420p"))
    # A fixed kernel sized for the small face would leave the big face's structure.
    assert _detail(_face(out)) < 0.1 * _detail(_face(_luma(src)))
    assert _detail(out[20:44, 20:40]) < 0.2 * _detail(_luma(src)[20:44, 20:40])


def test_solid_fill_is_one_value() -> None:
    out = _luma(
        render_frame(_textured_frame(), [[FACE]], Style(effect=Effect.SOLID), pix_fmt="yuv420p")
    )
    assert np.unique(_face(out)).tolist() == [16.0]  # black, limited range


def test_weak_settings_are_named() -> None:
    assert Style(blur_strength=0.05).weak_settings == ["blur_strength 0.05 < 0.125"]
    assert Style(effect=Effect.PIXELATE, pixel_blocks=12).weak_settings == ["pixel_blocks 12 > 5"]
    assert Style().weak_settings == []


@settings(max_examples=200, deadline=None)
@given(
    x0=st.floats(-50, 300),
    y0=st.floats(-50, 220),
    w=st.floats(1, 200),
    h=st.floats(1, 200),
    margin=st.floats(0, 0.5),
    shape=st.sampled_from(list(Shape)),
)
def test_the_whole_face_box_is_fully_covered(
    x0: float, y0: float, w: float, h: float, margin: float, shape: Shape
) -> None:
    """Every pixel whose centre lies in the face box gets alpha 1, for box and ellipse
    (the ellipse circumscribes the grown box, so it never leaves the box's corners)."""
    box = (x0, y0, x0 + w, y0 + h)
    geometry = Geometry.of(box, Style(shape=shape, margin=margin))
    xs = np.arange(max(0, int(np.ceil(x0 - 0.5))), min(W, int(np.floor(x0 + w - 0.5)) + 1)) + 0.5
    ys = np.arange(max(0, int(np.ceil(y0 - 0.5))), min(H, int(np.floor(y0 + h - 0.5)) + 1)) + 0.5
    if len(xs) == 0 or len(ys) == 0:
        return
    alpha = geometry.alpha(shape, xs.astype(np.float64), ys.astype(np.float64))
    assert alpha.min() == 1.0
