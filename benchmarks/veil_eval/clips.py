"""Hard GT clips for the harness, generated on demand (never committed).

Each spec is one labelled still and a camera path for ``shared/tools/make_clip.py`` (exact
per-frame face ground truth), plus an optional degradation applied afterwards frame by frame
(the GT stays exact: degradations never move a pixel's content, except motion blur, which
smears along the camera motion around the true position). Clips land in a cache directory
keyed by the spec, so a benchmark re-run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

WIDER = "stills/widerface/WIDER_val/images"
WIDER_ANN = "stills/widerface/annotations.json"
DLIB = "stills/dlib_faces"
DLIB_ANN = "stills/dlib_faces/annotations.json"


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    name: str
    image: str  # relative to shared/data
    annotations: str
    keyframes: tuple[tuple[float, float, float, float, float], ...]  # t, cx, cy, zoom, rot
    size: tuple[int, int] = (1280, 720)
    fps: str = "30"
    crf: int = 18
    degrade: str | None = None  # "motion_blur", "low_light", "dim_room", None
    covers: str = ""

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


SPECS: tuple[ClipSpec, ...] = (
    ClipSpec(
        name="gen_fast_pan_blur",
        image=f"{WIDER}/1--Handshaking/1_Handshaking_Handshaking_1_579.jpg",
        annotations=WIDER_ANN,
        keyframes=(
            (0.0, 0.25, 0.45, 1.6, 0),
            (0.6, 0.75, 0.55, 1.6, 0),
            (1.2, 0.3, 0.5, 1.6, 8),
            (2.0, 0.6, 0.45, 1.8, 0),
        ),
        degrade="motion_blur",
        covers="fast pan (up to ~40 px/frame) with motion blur along the motion",
    ),
    ClipSpec(
        name="gen_low_light_noise",
        image=f"{WIDER}/10--People_Marching/10_People_Marching_People_Marching_2_373.jpg",
        annotations=WIDER_ANN,
        keyframes=((0.0, 0.5, 0.5, 1.0, 0), (2.0, 0.45, 0.45, 1.3, 0)),
        size=(960, 540),
        degrade="low_light",
        covers="a dim scene (x0.25 exposure) with sensor noise (sigma 6 grey levels)",
    ),
    ClipSpec(
        name="gen_dim_room_crf35",
        image=f"{WIDER}/10--People_Marching/10_People_Marching_People_Marching_2_256.jpg",
        annotations=WIDER_ANN,
        keyframes=((0.0, 0.5, 0.5, 1.0, 0), (2.0, 0.55, 0.45, 1.25, 0)),
        crf=35,
        degrade="dim_room",
        covers="a dim room (x0.22 exposure, colour faded) with sensor noise (sigma 5), x264 crf 35",
    ),
    ClipSpec(
        name="gen_heavy_compression",
        image=f"{WIDER}/0--Parade/0_Parade_Parade_0_472.jpg",
        annotations=WIDER_ANN,
        keyframes=((0.0, 0.5, 0.5, 1.0, 0), (2.0, 0.55, 0.5, 1.4, -10)),
        crf=40,
        covers="x264 crf 40: blocking and smeared detail",
    ),
    ClipSpec(
        name="gen_many_small_faces",
        image=f"{WIDER}/10--People_Marching/10_People_Marching_People_Marching_10_People_Marching_People_Marching_10_69.jpg",
        annotations=WIDER_ANN,
        keyframes=((0.0, 0.5, 0.5, 1.0, 0), (2.0, 0.52, 0.5, 1.1, 0)),
        covers="a crowd of 10-30 px faces",
    ),
    ClipSpec(
        name="gen_profile_crowd",
        image=f"{WIDER}/0--Parade/0_Parade_Parade_0_873.jpg",
        annotations=WIDER_ANN,
        keyframes=((0.0, 0.5, 0.5, 1.1, 0), (1.0, 0.45, 0.5, 1.4, 15), (2.0, 0.55, 0.5, 1.4, -15)),
        covers="a crowd with many WIDER 'atypical pose' (profile) faces, rolled +-15 degrees",
    ),
    ClipSpec(
        name="gen_odd_size_portrait",
        image=f"{DLIB}/2008_002079.jpg",
        annotations=DLIB_ANN,
        keyframes=((0.0, 0.4, 0.5, 1.0, 0), (2.0, 0.6, 0.5, 1.2, 0)),
        size=(406, 722),
        fps="30000/1001",
        covers="portrait 406x722 (not a multiple of 16 or 32) at 29.97 fps",
    ),
)


def _motion(gt: dict[str, Any], i: int) -> tuple[float, float]:
    """The mean displacement of face centres from frame ``i - 1`` to ``i`` (the camera's)."""
    if i == 0:
        return 0.0, 0.0

    def centres(entry: dict[str, Any]) -> dict[int, tuple[float, float]]:
        return {
            f["id"]: (
                (f["bbox_full"][0] + f["bbox_full"][2]) / 2,
                (f["bbox_full"][1] + f["bbox_full"][3]) / 2,
            )
            for f in entry["faces"]
        }

    a, b = centres(gt["frames"][i - 1]), centres(gt["frames"][i])
    common = sorted(set(a) & set(b))
    if not common:
        return 0.0, 0.0
    return (
        float(np.mean([b[k][0] - a[k][0] for k in common])),
        float(np.mean([b[k][1] - a[k][1] for k in common])),
    )


def _motion_blur(rgb: npt.NDArray[np.uint8], dx: float, dy: float) -> npt.NDArray[np.uint8]:
    length = round(float(np.hypot(dx, dy)))
    if length < 2:
        return rgb
    kernel = np.zeros((length | 1, length | 1), np.float32)
    c = (length | 1) // 2
    ux, uy = dx / np.hypot(dx, dy), dy / np.hypot(dx, dy)
    for t in np.linspace(-length / 2, length / 2, 2 * length + 1):
        kernel[round(c + t * uy), round(c + t * ux)] = 1.0
    kernel /= kernel.sum()
    return np.asarray(cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REFLECT), np.uint8)


def _low_light(rgb: npt.NDArray[np.uint8], i: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(1000 + i)
    dim = rgb.astype(np.float32) * 0.25 + rng.normal(0.0, 6.0, rgb.shape).astype(np.float32)
    return np.clip(np.rint(dim), 0, 255).astype(np.uint8)


def _dim_room(rgb: npt.NDArray[np.uint8], i: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(2000 + i)
    light = rgb.astype(np.float32) * 0.22
    grey = light.mean(axis=2, keepdims=True)
    faded = 0.6 * light + 0.4 * grey + rng.normal(0.0, 5.0, (*rgb.shape[:2], 1)).astype(np.float32)
    faded += rng.normal(0.0, 2.0, rgb.shape).astype(np.float32)
    return np.clip(np.rint(faded), 0, 255).astype(np.uint8)


def _degrade(src: Path, dst: Path, spec: ClipSpec, gt: dict[str, Any]) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=Fraction(spec.fps))
        stream.width, stream.height, stream.pix_fmt = spec.size[0], spec.size[1], "yuv420p"
        time_base = vin.time_base or 1 / Fraction(spec.fps)
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"crf": str(spec.crf), "preset": "veryfast"}
        for i, frame in enumerate(inp.decode(vin)):
            rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
            if spec.degrade == "motion_blur":
                rgb = _motion_blur(rgb, *_motion(gt, i))
            elif spec.degrade == "low_light":
                rgb = _low_light(rgb, i)
            elif spec.degrade == "dim_room":
                rgb = _dim_room(rgb, i)
            new = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def generate(spec: ClipSpec, data: Path, cache: Path) -> Path:
    """Make ``spec``'s clip (cached); returns its GT JSON path (the video beside it)."""
    folder = cache / f"{spec.name}-{spec.key()}"
    gt_path = folder / f"{spec.name}.json"
    if gt_path.exists() and gt_path.with_suffix(".mp4").exists():
        return gt_path
    folder.mkdir(parents=True, exist_ok=True)
    tool = data.parent / "tools" / "make_clip.py"
    raw = folder / ("raw.mp4" if spec.degrade else f"{spec.name}.mp4")
    keyframes = [
        dict(zip(("t", "cx", "cy", "zoom", "rot"), k, strict=True)) for k in spec.keyframes
    ]
    cmd = [
        sys.executable, str(tool),
        "--image", str(data / spec.image),
        "--ann", str(data / spec.annotations),
        "--keyframes", json.dumps(keyframes),
        "--size", f"{spec.size[0]}x{spec.size[1]}",
        "--fps", spec.fps,
        "--crf", str(spec.crf if not spec.degrade else 12),
        "--license", "generated by veil eval from shared/data stills (research use only)",
        "--out", str(raw),
    ]  # fmt: skip
    logger.info("generating %s", spec.name)
    subprocess.run(cmd, check=True, capture_output=True)
    if spec.degrade:
        gt = json.loads(raw.with_suffix(".json").read_text())
        _degrade(raw, gt_path.with_suffix(".mp4"), spec, gt)
        gt["video"] = gt_path.with_suffix(".mp4").name
        gt["degradation"] = spec.degrade
        gt_path.write_text(json.dumps(gt))
        raw.unlink()
        raw.with_suffix(".json").unlink()
    gt = json.loads(gt_path.read_text())
    gt["covers"] = spec.covers
    gt_path.write_text(json.dumps(gt))
    return gt_path


def generate_all(data: Path, cache: Path, names: list[str] | None = None) -> list[Path]:
    specs = [s for s in SPECS if names is None or s.name in names]
    return [generate(spec, data, cache) for spec in specs]


def live_clips(data: Path, cache: Path) -> list[Path]:
    """The GT clips the live benchmarks play: the public WIDER pan (720p30) and every
    generated hard clip."""
    return [data / "clips" / "wider_group_tilted_pan.json", *generate_all(data, cache)]


def clean(cache: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
