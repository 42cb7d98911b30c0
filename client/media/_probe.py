"""What an input is before the job starts: which of its video streams veil masks (the main
video, not a cover or a thumbnail), that every other picture stream is dropped on purpose,
and that stream's geometry, timing, colour description and rotation (:class:`VideoInfo`),
which the output's video stream takes as it is."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from veil.core import ConfigError, InputError


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """The video stream as probed before the job."""

    index: int
    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    average_rate: Fraction | None
    frames: int  # from the container index; 0 when it does not say
    rotation: int
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    #: The pixels' aspect ratio (SAR): a player shows each stored pixel this many times as
    #: wide as tall. Faces are detected in that geometry; masks are drawn in stored pixels.
    sample_aspect_ratio: Fraction = Fraction(1)
    #: The other picture streams, left out of the output as the user asked (``--drop-stream``).
    dropped: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "sample_aspect_ratio": (
                f"{self.sample_aspect_ratio.numerator}/{self.sample_aspect_ratio.denominator}"
            ),
            "pix_fmt": self.pix_fmt,
            "time_base": str(self.time_base),
            "average_rate": None if self.average_rate is None else str(self.average_rate),
            "frames_declared": self.frames,
            "rotation": self.rotation,
            "color": {
                "range": self.color_range,
                "space": self.colorspace,
                "primaries": self.color_primaries,
                "trc": self.color_trc,
            },
        }


def open_input(path: Path) -> av.container.InputContainer:
    """``path`` opened for reading; ``InputError`` (exit 3) naming what is wrong with it."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video file ({exc.strerror or exc})") from exc


@dataclass(frozen=True, kw_only=True)
class Picture:
    """A video stream of an input, as the choice of the one veil masks sees it."""

    index: int
    codec: str
    width: int
    height: int
    attached: bool  # an attached picture (cover art): one image, no timeline
    frames: int | None = None  # packets, when they were counted
    seconds: Fraction = Fraction(0)  # from its first pts to the end of its last packet

    @classmethod
    def of(cls, stream: av.VideoStream) -> Picture:
        ctx = stream.codec_context
        return cls(
            index=stream.index,
            codec=ctx.name if ctx else "unknown",
            width=ctx.width if ctx else 0,
            height=ctx.height if ctx else 0,
            attached=bool(stream.disposition & av.stream.Disposition.attached_pic),
        )

    def describe(self) -> str:
        kind = "attached picture" if self.attached else "video"
        if self.frames is not None and not self.attached:
            kind += f", {self.frames} frame{'' if self.frames == 1 else 's'}"
        return f"#{self.index} ({self.codec} {self.width}x{self.height}, {kind})"


def _pictures(path: Path, container: av.container.InputContainer) -> tuple[Picture, list[Picture]]:
    """The video stream veil masks, and every other picture stream of ``container``.

    The masked one is the main video: not an attached picture (cover art) unless the file
    has nothing else, and of several, the longest (then the one with most frames, then the
    default one, then the first): a one-frame thumbnail track placed first is not it.
    """
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "no streams"
        raise InputError(f"{path}: no video stream (it has {kinds})")
    found = [Picture.of(s) for s in container.streams.video]
    candidates = {p.index for p in found if not p.attached} or {p.index for p in found}
    if len(candidates) > 1:
        with open_input(path) as again:  # read to the end: ``container`` stays at the start
            found = _measured(again, found, candidates)
    default = {
        s.index for s in container.streams.video if s.disposition & av.stream.Disposition.default
    }
    main = max(
        (p for p in found if p.index in candidates),
        key=lambda p: (p.seconds, p.frames or 0, p.index in default, -p.index),
    )
    return main, [p for p in found if p.index != main.index]


def _measured(
    container: av.container.InputContainer, found: list[Picture], indices: set[int]
) -> list[Picture]:
    """``found`` with the streams of ``indices`` measured: packets counted and their span
    timed (packets only, nothing decoded)."""
    streams = [s for s in container.streams.video if s.index in indices]
    frames = dict.fromkeys(indices, 0)
    first: dict[int, int] = {}
    end: dict[int, int] = {}
    try:
        for packet in container.demux(*streams):
            if not packet.size:
                continue
            k = packet.stream.index
            frames[k] += 1
            at = packet.pts if packet.pts is not None else packet.dts
            if at is not None:
                first[k] = min(first.get(k, at), at)
                end[k] = max(end.get(k, at), at + (packet.duration or 0))
    except av.error.FFmpegError as exc:
        raise InputError(f"{container.name}: its video streams cannot be read ({exc})") from exc
    time_base = {s.index: s.time_base or Fraction(1, 90000) for s in streams}
    measured = []
    for p in found:
        if p.index in indices:
            span = end[p.index] - first[p.index] if p.index in first else 0
            p = replace(p, frames=frames[p.index], seconds=span * time_base[p.index])
        measured.append(p)
    return measured


def _check_drops(
    path: Path,
    container: av.container.InputContainer,
    main: Picture,
    others: list[Picture],
    drop: Collection[int],
) -> None:
    """``drop`` names only extra picture streams (else ``ConfigError``, exit 2), and every
    one of them (else ``InputError``, exit 3): a picture stream is never copied unmasked."""
    streams = {s.index: s for s in container.streams}
    extra = {p.index for p in others}
    for index in sorted(set(drop)):
        if index == main.index:
            raise ConfigError(
                f"--drop-stream {index}: stream {main.describe()} is the video veil masks; "
                "it cannot be left out"
            )
        if index not in streams:
            raise ConfigError(
                f"--drop-stream {index}: {path.name} has no stream #{index} "
                f"(its streams are #0 to #{len(streams) - 1})"
            )
        if index not in extra:
            ctx = streams[index].codec_context
            raise ConfigError(
                f"--drop-stream {index}: stream #{index} is {streams[index].type} "
                f"({ctx.name if ctx else 'no codec'}), not a picture stream; veil copies every "
                "other stream unchanged and drops none"
            )
    left = [p for p in others if p.index not in set(drop)]
    if left:
        flags = " ".join(f"--drop-stream {p.index}" for p in left)
        raise InputError(
            f"{path}: veil masks one picture stream, {main.describe()}, and never copies one "
            f"unmasked; this file also has {', '.join(p.describe() for p in left)}: pass "
            f"{flags} to leave {'it' if len(left) == 1 else 'them'} out of the output (the "
            "record lists what was left out)"
        )


def probe(path: Path, *, drop: Collection[int] = ()) -> VideoInfo:
    """Open ``path``, choose the video stream veil masks (the main video, not a cover or a
    thumbnail), check that ``drop`` names exactly the other picture streams, and describe
    the chosen stream from its first decoded frame."""
    with open_input(path) as container:
        main, others = _pictures(path, container)
        _check_drops(path, container, main, others, drop)
        stream = next(s for s in container.streams.video if s.index == main.index)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video stream cannot be decoded ({exc})") from exc
        if first is None:
            raise InputError(f"{path}: the video stream has no decodable frame")
        return video_info(stream, first, dropped=drop)


def sample_aspect(stream: av.VideoStream) -> Fraction:
    """The stream's SAR as FFmpeg guesses it (container first, then codec); 1 when unknown."""
    sar = stream.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


def video_info(
    stream: av.VideoStream,
    first: av.VideoFrame,
    *,
    dropped: Collection[int] = (),
    frame_colour: bool = False,
) -> VideoInfo:
    """The :class:`VideoInfo` of ``stream`` from ``first``, its first decoded frame: one
    description for a file (:func:`probe`) and a live source, so that their outputs are set
    up alike. The colour range and matrix are the stream's as its decoder filled them in;
    with ``frame_colour`` (a live source, whose decoder may leave them unset until frames
    carry them) the first frame's where the stream has none."""
    ctx = stream.codec_context
    fallback = first if frame_colour else None
    return VideoInfo(
        index=stream.index,
        codec=ctx.name,
        width=first.width,
        height=first.height,
        pix_fmt=first.format.name,
        time_base=stream.time_base or Fraction(1, 90000),
        average_rate=stream.average_rate,
        frames=stream.frames or 0,
        rotation=int(first.rotation or 0),
        color_range=int(ctx.color_range or (fallback and fallback.color_range) or 0),
        colorspace=int(ctx.colorspace or (fallback and fallback.colorspace) or 0),
        color_primaries=int(ctx.color_primaries or 0),
        color_trc=int(ctx.color_trc or 0),
        sample_aspect_ratio=sample_aspect(stream),
        dropped=tuple(sorted(set(dropped))),
    )
