"""Clips made in the tests with PyAV: known frame timing, known audio packets, no shared data."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_CODECS = {
    "aac": ("aac", "fltp", 48000),
    "opus": ("libopus", "s16", 48000),
    "pcm": ("pcm_s16le", "s16", 48000),
    "ac3": ("ac3", "fltp", 48000),
    "mp3": ("libmp3lame", "s16p", 44100),
    "alac": ("alac", "s16p", 48000),
}


def _picture(i: int, width: int, height: int) -> np.ndarray:
    """A moving, textured picture (so the encoder has real work), RGB uint8."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(width - 1, 1) + i * 3) % 256
    g = (y * 255 // max(height - 1, 1) + i * 5) % 256
    b = ((x // 8 + y // 8 + i) % 2) * 200
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def make_clip(
    path: Path,
    *,
    size: tuple[int, int] = (320, 240),
    rate: Fraction = Fraction(25),
    frames: int = 30,
    audio: str | None = "aac",
    vfr: bool = False,
    codec: str = "libx264",
    rotation: int = 0,
    picture: np.ndarray | None = None,
    pix_fmt: str = "yuv420p",
    audio_tracks: int = 1,
) -> Path:
    """Write a clip: ``frames`` video frames at ``rate`` (or irregular pts when ``vfr``),
    plus a sine tone in ``audio`` codec covering the same duration.

    ``picture`` (RGB, any size) is pasted onto every frame, drifting slowly, when given.
    """
    width, height = size
    with av.open(str(path), "w") as out:
        # AVI has no pts field: B-frames would come back with shuffled timestamps.
        options = {"bf": "0"} if path.suffix == ".avi" and codec == "libx264" else {}
        video = out.add_stream(codec, rate=rate, options=options)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        time_base = Fraction(1, 1000) if vfr else 1 / rate
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        astreams = []
        for _ in range(audio_tracks if audio is not None else 0):
            name, fmt, sample_rate = AUDIO_CODECS[audio]  # type: ignore[index]
            astream = out.add_stream(name, rate=sample_rate)
            astream.layout = "stereo"
            astream.format = fmt
            astreams.append(astream)
        pts = 0
        duration = Fraction(0)
        rng = np.random.default_rng(7)
        for i in range(frames):
            image = _picture(i, width, height)
            if picture is not None:
                ph, pw = picture.shape[:2]
                ox = min(width - pw, i) if width > pw else 0
                oy = (height - ph) // 2 if height > ph else 0
                image[oy : oy + ph, ox : ox + pw] = picture[: height - oy, : width - ox]
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            frame.pts = pts
            frame.time_base = time_base
            for packet in video.encode(frame):
                out.mux(packet)
            step = int(rng.integers(20, 80)) if vfr else 1
            pts += step
            duration = pts * time_base
        for packet in video.encode(None):
            out.mux(packet)
        for k, astream in enumerate(astreams):
            _write_tone(out, astream, float(duration), 440 * (k + 1))
    return path


def _write_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, hz: float
) -> None:
    sample_rate = stream.rate
    frame_size = stream.codec_context.frame_size or 1024
    total = int(seconds * sample_rate)
    fmt = stream.format.name
    planar = stream.format.is_planar
    pts = 0
    while pts < total:
        n = min(frame_size, total - pts)
        t = (np.arange(pts, pts + n) / sample_rate).astype(np.float32)
        tone = 0.3 * np.sin(2 * np.pi * hz * t)
        if fmt.startswith("s16"):
            samples = (tone * 32767).astype(np.int16)
        else:
            samples = tone.astype(np.float32)
        data = (
            np.stack([samples, samples])
            if planar
            else np.stack([samples, samples], 1).reshape(1, -1)
        )
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
        frame.sample_rate = sample_rate
        frame.pts = pts
        for packet in stream.encode(frame):
            out.mux(packet)
        pts += n
    for packet in stream.encode(None):
        out.mux(packet)


def packets(path: Path, kind: str, nth: int = 0) -> list[tuple[int | None, int | None, bytes]]:
    """(pts, dts, payload) of every non-empty packet of the ``nth`` stream of ``kind``."""
    with av.open(str(path)) as container:
        stream = [s for s in container.streams if s.type == kind][nth]
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]


def frame_times(path: Path) -> tuple[Fraction, list[int]]:
    """Time base and pts of every decoded video frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.time_base, [f.pts for f in container.decode(stream)]


def add_subtitles(clip: Path, dst: Path, lines: int = 3) -> Path:
    """``clip`` with a SubRip subtitle stream added (stream copy of everything)."""
    srt = dst.with_suffix(".srt")
    srt.write_text(
        "".join(
            f"{i + 1}\n00:00:0{i},000 --> 00:00:0{i},900\nline {i + 1}\n\n" for i in range(lines)
        )
    )
    with av.open(str(clip)) as media, av.open(str(srt)) as subs, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in media.streams}
        sub = out.add_stream_from_template(subs.streams[0])
        for packet in media.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        for packet in subs.demux():
            if packet.size:
                packet.stream = sub
                out.mux(packet)
    srt.unlink()
    return dst


def cut(source: Path, target: Path, frames: int) -> Path:
    """The first ``frames`` video packets of ``source`` and the audio they span, copied."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        video = src.streams.video[0]
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        packets = [p for p in src.demux(video) if p.size]
        pts = sorted(p.pts for p in packets)[:frames]
        end = Fraction(pts[-1] + 1) * video.time_base
        src.seek(0)
        for packet in src.demux():
            if not packet.size or packet.pts is None:
                continue
            if packet.stream.type == "video" and packet.pts not in pts:
                continue
            if packet.stream.type != "video" and packet.pts * packet.time_base >= end:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return target


def darken(source: Path, target: Path, exposure: float, noise: float, frames: int) -> Path:
    """The first ``frames`` frames of ``source`` re-encoded dim (pixels times ``exposure``)
    with Gaussian sensor noise of ``noise`` grey levels (seeded per frame), video only."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        video = src.streams.video[0]
        rate = video.average_rate or Fraction(25)
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.time_base = video.time_base
        stream.codec_context.time_base = video.time_base
        for i, frame in enumerate(src.decode(video)):
            if i == frames:
                break
            rng = np.random.default_rng(i)
            dim = frame.to_ndarray(format="rgb24") * exposure
            dim += rng.normal(0.0, noise, dim.shape)
            new = av.VideoFrame.from_ndarray(np.clip(dim, 0, 255).astype(np.uint8), "rgb24")
            new.pts, new.time_base = frame.pts, frame.time_base
            for packet in stream.encode(new):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target
