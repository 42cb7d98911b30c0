"""Media I/O on PyAV: open and probe an input, demux it, write the output atomically.

Every non-video stream is copied as packets (PyAV's remux pattern: a stream made from the
input's template, packets re-parented to it, nothing decoded). Video frames keep their pts and
time base; the output container gets no wall-clock metadata.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import heapq
import io
import logging
import os
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from veil.core import ConfigError, InputError, OutputError

from ._atomic import check_writable, partial_path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20

#: Encoders by output container when the user names none.
_DEFAULT_CODEC = {".webm": "libvpx-vp9"}
#: NVENC's own speed presets (h264_nvenc, hevc_nvenc), fastest first.
_NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
#: x264's (and x265's) speed presets, fastest first.
_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """How the masked video is encoded. Recorded in every render manifest.

    ``threads`` is fixed (not "all cores") because x264's output depends on its thread
    count: the same settings give the same bytes on every machine.
    """

    codec: str | None = None  # None: libx264, or libvpx-vp9 for .webm
    preset: str = "veryfast"
    crf: int = 18
    pix_fmt: str | None = None  # None: follow the source (see ``pix_fmt_for``)
    threads: int = 4

    def __post_init__(self) -> None:
        """Every value checked once, here (``ConfigError``); a ``codec`` named by its format
        (``h264``) becomes the encoder FFmpeg picks for it (``libx264``)."""
        if not isinstance(self.crf, int) or isinstance(self.crf, bool):
            raise ConfigError(f"encoder crf {self.crf!r} must be a whole number")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise ConfigError(
                f"encoder threads {self.threads!r} must be 1..64 (fixed, not auto: x264's "
                "bytes depend on it)"
            )
        if self.preset not in _X264_PRESETS + _NVENC_PRESETS:
            raise ConfigError(
                f"encoder preset {self.preset!r} is not a preset name: x264 and x265 take "
                f"{', '.join(_X264_PRESETS)}; NVENC also p1..p7"
            )
        if self.pix_fmt is not None:
            try:
                av.VideoFormat(self.pix_fmt)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"encoder pix_fmt {self.pix_fmt!r} is not a pixel format"
                ) from None
        if self.codec is not None:
            object.__setattr__(self, "codec", _video_encoder(self.codec))
            self._check_codec(self.codec)

    def _check_codec(self, codec: str) -> None:
        """The settings ``codec`` takes: its CRF range, its preset names, the pixel format."""
        crf_range = _crf_range(codec)
        if crf_range is not None and not crf_range[0] <= self.crf <= crf_range[1]:
            low, high = crf_range
            raise ConfigError(f"crf {self.crf} is out of range for {codec}: {low}..{high}")
        if codec in ("libx264", "libx265") and self.preset not in _X264_PRESETS:
            raise ConfigError(
                f"encoder preset {self.preset!r} is not one of {codec}'s: "
                f"{', '.join(_X264_PRESETS)}"
            )
        formats = _pixel_formats(codec)
        if self.pix_fmt is not None and formats and self.pix_fmt not in formats:
            raise ConfigError(
                f"{codec} cannot encode pix_fmt {self.pix_fmt}; it takes {', '.join(formats)}"
            )

    def check(self, output: Path) -> str:
        """Check these settings against ``output``'s container, before any work; returns the
        codec. ``ConfigError`` for a codec the container cannot hold (or settings the codec
        does not take), ``OutputError`` for a file name FFmpeg knows no container for."""
        codec = self.codec_for(output)
        try:
            guess = av.open(str(output), "w")  # the container, from the name; opens no file
        except ValueError:
            raise OutputError(
                f"{output}: no container format for the extension {output.suffix or '(none)'!r}"
                " (use .mp4, .mkv, .mov or .webm)"
            ) from None
        fmt = guess.format.name
        guess.close()
        with av.open(io.BytesIO(), "w", format=fmt) as trial:
            try:
                trial.add_stream(codec)
            except (av.error.FFmpegError, ValueError) as exc:
                raise ConfigError(
                    f"codec {codec} cannot go in a {output.suffix} file ({exc}); "
                    f"{_DEFAULT_CODEC.get(output.suffix.lower(), 'libx264')} can"
                ) from None
        if self.codec is None:
            self._check_codec(codec)
        formats = _pixel_formats(codec)
        if self.pix_fmt is None and formats and not any(f.startswith("yuv") for f in formats):
            raise ConfigError(
                f"{codec} takes no YUV pixel format, and veil keeps the source's YUV family "
                f"unless told: set [encoder] pix_fmt in --config to one of {', '.join(formats)}"
            )
        return codec

    def codec_for(self, output: Path) -> str:
        return self.codec or _DEFAULT_CODEC.get(output.suffix.lower(), "libx264")

    def options(self, codec: str) -> dict[str, str]:
        if codec in ("libx264", "libx265"):
            return {"crf": str(self.crf), "preset": self.preset, "threads": str(self.threads)}
        if codec.startswith("libvpx"):
            return {
                "crf": str(self.crf + 13),
                "b": "0",
                "deadline": "good",
                "cpu-used": "4",
                "threads": str(self.threads),
                "row-mt": "1",
            }
        if codec.endswith("_nvenc"):
            # NVENC (GPU): constant quality at ``crf`` (its -cq), presets p1 (fastest) to p7;
            # an x264 preset name maps to p4. Bytes repeat on the same GPU and driver only.
            preset = self.preset if self.preset in _NVENC_PRESETS else "p4"
            return {"preset": preset, "rc": "vbr", "cq": str(self.crf), "b": "0"}
        return {"threads": str(self.threads)}

    def pix_fmt_for(self, source: VideoInfo) -> str:
        """The encoder's pixel format: the one asked for, else the source's family.

        Chroma subsampling, bit depth (8 or 10) and full range follow the source, so pixels
        outside the masks are not resampled; a frame with an odd side cannot be subsampled
        and gets 4:4:4, as do RGB and palette sources (GIF).
        """
        if self.pix_fmt is not None:
            return self.pix_fmt
        fmt = av.VideoFormat(source.pix_fmt)
        deep = max(c.bits for c in fmt.components) > 8
        odd = source.width % 2 or source.height % 2
        if fmt.is_rgb or len(fmt.components) < 3 or fmt.name.startswith("pal") or odd:
            chroma = "444"
        else:
            sx, sy = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
            chroma = {(2, 2): "420", (2, 1): "422"}.get((sx, sy), "444")
        if deep:
            return f"yuv{chroma}p10le"
        full = source.color_range == 2 or fmt.name.startswith("yuvj")
        return f"yuv{'j' if full else ''}{chroma}p"

    def to_json(self, output: Path, pix_fmt: str) -> dict[str, Any]:
        codec = self.codec_for(output)
        return {
            "codec": codec,
            "options": self.options(codec),
            "pix_fmt": pix_fmt,
            "ffmpeg": str(av.ffmpeg_version_info),
            "pyav": av.__version__,
        }


def _video_encoder(name: str) -> str:
    """The FFmpeg encoder ``name`` names (a format name picks FFmpeg's default encoder)."""
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, TypeError):
        raise ConfigError(
            f"codec {name!r} is not an encoder in this FFmpeg build ({av.ffmpeg_version_info}); "
            "try libx264, libx265 or libvpx-vp9"
        ) from None
    if codec.type != "video":
        raise ConfigError(f"codec {name!r} is an {codec.type} encoder, not a video encoder")
    return str(codec.name)


def _pixel_formats(codec: str) -> list[str]:
    """The pixel formats encoder ``codec`` takes (empty: it does not say)."""
    return sorted(f.name for f in av.codec.Codec(codec, "w").video_formats or ())


def _crf_range(codec: str) -> tuple[int, int] | None:
    """The ``crf`` values ``codec`` takes (None: it has no constant-quality mode veil sets).

    ``crf`` is on x264's scale everywhere: libvpx gets ``crf + 13`` (its 0..63 scale, so
    0..50 here) and NVENC takes it as its ``cq`` (0..51).
    """
    if codec in ("libx264", "libx265") or codec.endswith("_nvenc"):
        return (0, 51)
    if codec.startswith("libvpx"):
        return (0, 50)
    return None


def adts_header_size(payload: bytes) -> int:
    """Bytes of ADTS framing an AAC packet starts with (7, or 9 with a CRC); 0 if none.

    ADTS is AAC's self-describing framing, which MPEG-TS carries; MP4, MOV and Matroska hold
    the bare AAC frames and describe them once (AudioSpecificConfig), so their muxers strip
    it (FFmpeg's ``aac_adtstoasc``) and the MPEG-TS muxer adds it. The AAC frame after it is
    the same bytes either way.
    """
    if len(payload) < 7 or payload[0] != 0xFF or payload[1] & 0xF6 != 0xF0:
        return 0
    length = ((payload[3] & 0x03) << 11) | (payload[4] << 3) | (payload[5] >> 5)
    if length != len(payload):
        return 0
    return 7 if payload[1] & 0x01 else 9


@dataclass
class StreamDigest:
    """Packet count and payload hash of one stream: proof that a stream was not touched.

    An AAC stream also gets the hash of its AAC frames less any ADTS framing
    (``aac_frames_sha256``): what stays the same when a container requires the framing
    changed (:func:`adts_header_size`).
    """

    index: int
    kind: str
    codec: str
    time_base: Fraction
    packets: int = 0
    #: the earliest pts, in seconds (None: no packet had one)
    start: Fraction | None = None
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _frames: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.codec == "aac":
            self._frames = hashlib.sha256()

    def add(self, packet: av.Packet) -> None:
        payload = bytes(packet)
        self.packets += 1
        self._sha.update(payload)
        if self._frames is not None:
            self._frames.update(payload[adts_header_size(payload) :])
        if packet.pts is not None and packet.time_base:
            at = packet.pts * packet.time_base
            self.start = at if self.start is None else min(self.start, at)

    @property
    def payload_sha256(self) -> str:
        return str(self._sha.hexdigest())

    @property
    def aac_frames_sha256(self) -> str | None:
        return None if self._frames is None else str(self._frames.hexdigest())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "type": self.kind,
            "codec": self.codec,
            "time_base": str(self.time_base),
            "packets": self.packets,
            "payload_sha256": self.payload_sha256,
        }
        if self._frames is not None:
            out["aac_frames_sha256"] = self.aac_frames_sha256
        return out


def packet_digests(container: av.container.InputContainer) -> dict[int, StreamDigest]:
    """Every stream's :class:`StreamDigest`, from its packets (nothing decoded; empty flush
    packets skipped, as ``Input.demux`` skips them)."""
    digests = {
        s.index: StreamDigest(
            index=s.index,
            kind=s.type,
            codec=s.codec_context.name if s.codec_context else "none",
            time_base=s.time_base or Fraction(1, 1),
        )
        for s in container.streams
    }
    for packet in container.demux():
        if packet.size:
            digests[packet.stream.index].add(packet)
    return digests


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


def _open(path: Path) -> av.container.InputContainer:
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
        with _open(path) as again:  # read to the end: ``container`` stays at the start
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
    with _open(path) as container:
        main, others = _pictures(path, container)
        _check_drops(path, container, main, others, drop)
        stream = next(s for s in container.streams.video if s.index == main.index)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: the video stream cannot be decoded ({exc})") from exc
        if first is None:
            raise InputError(f"{path}: the video stream has no decodable frame")
        ctx = stream.codec_context
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
            color_range=int(ctx.color_range or 0),
            colorspace=int(ctx.colorspace or 0),
            color_primaries=int(ctx.color_primaries or 0),
            color_trc=int(ctx.color_trc or 0),
            sample_aspect_ratio=sample_aspect(stream),
            dropped=tuple(sorted(set(drop))),
        )


def sample_aspect(stream: av.VideoStream) -> Fraction:
    """The stream's SAR as FFmpeg guesses it (container first, then codec); 1 when unknown."""
    sar = stream.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


@dataclass
class DecodedFrame:
    index: int
    frame: av.VideoFrame


class Input:
    """A demuxed input: video frames in presentation order, other streams as packets."""

    def __init__(self, path: Path, info: VideoInfo) -> None:
        self.path = path
        self.info = info
        self.container = _open(path)
        self.video = next(s for s in self.container.streams.video if s.index == info.index)
        self.video.thread_type = "AUTO"
        self.digests = {
            s.index: StreamDigest(
                index=s.index,
                kind=s.type,
                codec=s.codec_context.name if s.codec_context else "none",
                time_base=s.time_base or Fraction(1, 1),
            )
            for s in self.container.streams
        }
        # Picture streams the user dropped: hashed (the record lists them), never written.
        self.dropped = [s for s in self.container.streams if s.index in info.dropped]
        self.copied = [
            s
            for s in self.container.streams
            if s.index != self.video.index and s.index not in info.dropped
        ]
        self.timestamps_repaired = 0

    def dropped_json(self) -> list[dict[str, Any]]:
        """The dropped picture streams as the record and manifest list them: what each was
        (size, attached picture or video) and the packets left out (count, payload hash)."""
        return [
            {
                **self.digests[s.index].to_json(),
                "width": s.codec_context.width,
                "height": s.codec_context.height,
                "attached_picture": Picture.of(s).attached,
                "reason": "--drop-stream",
            }
            for s in self.dropped
            if isinstance(s, av.VideoStream)
        ]

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def demux(self) -> Iterator[DecodedFrame | av.Packet]:
        """Frames of the video stream and packets of every other stream, in file order."""
        index = decoded = 0
        hidden = 0  # frames an edit list leaves out (the decoder discards them)
        timing = _Timestamps()
        packet = None
        try:
            for packet in self.container.demux():
                if packet.stream.index != self.video.index:
                    if packet.size:  # skip only empty flush packets
                        self.digests[packet.stream.index].add(packet)
                        if packet.stream.index not in self.info.dropped:
                            yield packet
                    continue
                if packet.size:
                    self.digests[packet.stream.index].add(packet)
                    hidden += packet.is_discard
                for frame in self.video.decode(packet):
                    self._check_size(frame, decoded)
                    decoded += 1
                    for ready in timing.push(frame):
                        yield DecodedFrame(index, ready)
                        index += 1
        except av.error.FFmpegError as exc:
            where = ""
            if packet is not None and packet.pts is not None and packet.time_base:
                where = f", at {float(packet.pts * packet.time_base):.3f} s"
            raise InputError(
                f"{self.path}: video decoding failed at frame {decoded}{where} ({exc}); "
                "nothing was written"
            ) from exc
        for ready in timing.flush():
            yield DecodedFrame(index, ready)
            index += 1
        if timing.repaired:
            logger.warning(
                "%s: %d frames had missing or out-of-order timestamps; they were given the "
                "input's timestamps in sorted order",
                self.path,
                timing.repaired,
            )
        self.timestamps_repaired = timing.repaired
        # Only the MP4/MOV sample table counts frames exactly (AVI's header may not); it
        # counts the frames its edit list leaves out too (``ffmpeg -ss T -c copy`` makes them).
        exact_count = "mp4" in self.container.format.name.split(",")
        if exact_count and self.info.frames and index < self.info.frames - hidden:
            shown = f" ({hidden} of them left out by its edit list)" if hidden else ""
            raise InputError(
                f"{self.path}: truncated: the container declares {self.info.frames} frames"
                f"{shown} but only {index} could be decoded"
            )

    def _check_size(self, frame: av.VideoFrame, index: int) -> None:
        """A frame of another size than the first is an input veil does not take (the
        encoder, the record's boxes and the masks all assume one size)."""
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise InputError(
                f"{self.path}: frame {index} changes size from {self.info.width}x"
                f"{self.info.height} to {frame.width}x{frame.height}; veil needs a constant "
                "frame size (split the file where the size changes); nothing was written"
            )


class _Timestamps:
    """Gives decoded frames increasing pts, as presentation order requires.

    Containers without a pts field (AVI) hand the decoder dts values, which come back
    shuffled when the stream has B-frames. A short reorder window assigns each frame the
    smallest pending pts: the identity for a well-formed stream, the sorted pts otherwise.
    """

    WINDOW = 8

    def __init__(self) -> None:
        self._frames: deque[av.VideoFrame] = deque()
        self._pts: list[int] = []
        self._last: int | None = None
        self.repaired = 0

    def push(self, frame: av.VideoFrame) -> Iterator[av.VideoFrame]:
        if frame.pts is None:
            frame.pts = (self._pts[-1] if self._pts else (self._last or -1)) + 1
            self.repaired += 1
        self._frames.append(frame)
        heapq.heappush(self._pts, frame.pts)
        while len(self._frames) > self.WINDOW:
            yield self._pop()

    def flush(self) -> Iterator[av.VideoFrame]:
        while self._frames:
            yield self._pop()

    def _pop(self) -> av.VideoFrame:
        frame = self._frames.popleft()
        pts = heapq.heappop(self._pts)
        if self._last is not None and pts <= self._last:
            pts = self._last + 1
        if pts != frame.pts:
            self.repaired += 1
            frame.pts = pts
        self._last = pts
        return frame


#: Muxers of the MP4/MOV family: their timeline starts at zero (an edit list hides what
#: comes before), and they hold a QuickTime timecode (``tmcd``) track.
_MOV_FAMILY = frozenset({"mov", "mp4", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"})
#: Muxers whose timestamps are modular (MPEG-TS: 33 bits at 90 kHz), so a timestamp before
#: zero is written as its wrap, exactly as an input near the wrap had it.
_WRAPPING = frozenset({"mpegts", "rtp_mpegts"})
#: Muxers that store no presentation timestamp (AVI: one frame per tick, in stored order).
_NO_PTS = frozenset({"avi"})


def muxer_options(fmt: str, *, before_zero: bool) -> dict[str, str]:
    """Timestamp options for muxer ``fmt``: the input's timestamps, wherever ``fmt`` can hold
    them (one rule for file and live outputs).

    FFmpeg's default (``avoid_negative_ts`` auto) moves every stream later when a packet's
    timestamp is before zero: an MPEG-TS near its 2^33 wrap, AAC priming, the dts of the
    encoder's first B-frames. MPEG-TS holds such timestamps (as their wrap): nothing is moved.
    MP4/MOV hold them too, but hide what comes before zero: when the input starts before
    zero (``before_zero``) every stream is moved later by the same amount instead. Matroska
    and AVI cannot hold them; their muxer moves every stream by the same amount, which the
    output's check measures and the manifest records (``Output.timestamp_shift``).
    """
    if fmt in _WRAPPING:
        return {"avoid_negative_ts": "disabled"}
    if fmt in _MOV_FAMILY and before_zero:
        return {"avoid_negative_ts": "make_non_negative"}
    return {}


def encoder_options_for(fmt: str) -> dict[str, str]:
    """Encoder options muxer ``fmt`` needs: no B-frames where it stores no pts (AVI), so
    frames are stored in the order they are shown."""
    return {"bf": "0"} if fmt in _NO_PTS else {}


@functools.lru_cache(maxsize=8)
def _read_back_delay(
    fmt: str, codec: str, pix_fmt: str, options: tuple[tuple[str, str], ...]
) -> int:
    """Ticks by which FFmpeg reads ``codec``'s frames back from a ``fmt`` file later than the
    position they are stored at. AVI stores positions, no pts; for H.264 FFmpeg's reader
    assumes a reorder delay and shows every frame one tick late. Measured with a two-frame
    file in memory (so it follows the FFmpeg build), not assumed."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt, options={"fflags": "+bitexact"}) as trial:
        stream = trial.add_stream(codec, rate=25, options=dict(options))
        assert isinstance(stream, av.VideoStream)
        stream.width = stream.height = 64
        stream.pix_fmt = pix_fmt
        for pts in range(2):
            frame = av.VideoFrame(64, 64, pix_fmt)
            frame.pts = pts
            trial.mux(stream.encode(frame))
        trial.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, "r", format=fmt) as back:
        first = next((p.pts for p in back.demux(video=0) if p.size), None)
    return int(first or 0)


def is_timecode(stream: av.stream.Stream) -> bool:
    """A QuickTime timecode track (``tmcd``): a data stream FFmpeg describes by its start
    timecode."""
    return stream.type == "data" and "timecode" in stream.metadata


def video_info(stream: av.VideoStream, first: av.VideoFrame) -> VideoInfo:
    """A :class:`VideoInfo` of a stream being decoded, from its first frame (live sources)."""
    ctx = stream.codec_context
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
        color_range=int(ctx.color_range or first.color_range or 0),
        colorspace=int(ctx.colorspace or first.colorspace or 0),
        color_primaries=int(ctx.color_primaries or 0),
        color_trc=int(ctx.color_trc or 0),
    )


class _X264CpuName(ctypes.Structure):
    """An entry of libx264's ``x264_cpu_names`` table (x264.h's ``x264_cpu_name_t``)."""

    _fields_ = (("name", ctypes.c_char_p), ("flags", ctypes.c_uint32))


def _loaded_x264() -> ctypes.CDLL | None:
    """The libx264 this process's libavcodec uses (already loaded with it), or None."""
    paths: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:  # Linux: the library actually mapped
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "libx264" in fields[5].rsplit("/", 1)[-1]:
                    paths.add(fields[5].strip())
    except OSError:  # not Linux: the copy bundled in PyAV's wheel, if any
        root = Path(av.__file__).parent
        for folder in (root.parent / "av.libs", root / ".dylibs", root):
            if folder.is_dir():
                paths.update(str(p) for p in folder.glob("*x264*") if p.is_file())
    if len(paths) != 1:
        return None
    try:
        return ctypes.CDLL(paths.pop())
    except OSError:
        return None


@functools.cache
def x264_asm() -> str | None:
    """x264's ``asm`` setting for every veil encode: each instruction set x264 detects on
    this CPU except AVX-512 (x264's CPU flags, as a number), or None where x264 detects no
    AVX-512 (its own detection is then left as it is).

    x264's AVX-512 macroblock-tree code (libx264 core 165, the one PyAV 18's wheels bundle)
    reads memory nothing wrote: on an AVX-512 CPU the same frames and settings encoded to
    different bytes depending on what the heap held before (``MALLOC_PERTURB_`` changed
    them; so did the timing of other threads' allocations: 1 job in 4 differed). Its AVX2
    and older code, which x264 keeps bit-exact with each other, does not. The flags are
    x264's own detection minus one bit, never a fixed list: a flag the CPU lacks would make
    x264 run instructions it does not have.
    """
    lib = _loaded_x264()
    if lib is None:
        return None
    try:
        detect = lib.x264_cpu_detect
        table = (_X264CpuName * 128).in_dll(lib, "x264_cpu_names")
    except (AttributeError, ValueError):
        return None
    detect.restype = ctypes.c_uint32
    names: dict[bytes, int] = {}
    for entry in table:  # ends with an entry without flags
        if not entry.flags:
            break
        names[entry.name or b""] = entry.flags
    avx512 = names.get(b"AVX512", 0) & ~names.get(b"AVX2", 0)
    detected = int(detect())
    if not avx512 or not detected & avx512:
        return None
    return str(detected & ~avx512)


def add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    *,
    info: VideoInfo,
    pix_fmt: str,
    rate: Fraction | None,
    options: dict[str, str],
    sample_aspect_ratio: Fraction | None,
    where: str,
) -> av.VideoStream:
    """The encoded video stream of an output, file or live: the source's size, time base,
    colour description, pixel aspect ratio and display rotation (one setup for both).
    libx264 runs without AVX-512 (see :func:`x264_asm`)."""
    if codec.startswith("libx264") and (asm := x264_asm()) is not None:
        params = options.get("x264-params")
        options = options | {"x264-params": f"{params}:asm={asm}" if params else f"asm={asm}"}
    try:
        stream = container.add_stream(codec, rate=rate or None, options=options)
    except (av.error.FFmpegError, ValueError) as exc:
        raise OutputError(f"{where}: encoder {codec} is not available ({exc})") from exc
    if not isinstance(stream, av.VideoStream):
        raise OutputError(f"{where}: {codec} is not a video encoder")
    stream.width, stream.height = info.width, info.height
    stream.pix_fmt = pix_fmt
    stream.time_base = info.time_base
    ctx = stream.codec_context
    ctx.time_base = info.time_base
    ctx.color_range = info.color_range
    ctx.colorspace = info.colorspace
    ctx.color_primaries = info.color_primaries
    ctx.color_trc = info.color_trc
    if sample_aspect_ratio:
        ctx.sample_aspect_ratio = sample_aspect_ratio
    if info.rotation:
        stream.set_display_rotation(info.rotation)
    return stream


def add_copy_stream(
    container: av.container.OutputContainer, stream: av.stream.Stream, where: str
) -> av.stream.Stream:
    """A stream of ``container`` that takes ``stream``'s packets as they are (PyAV's remux
    pattern); ``OutputError`` naming the stream when the container cannot hold it."""
    try:
        return container.add_stream_from_template(stream)
    except (av.error.FFmpegError, ValueError, TypeError) as exc:
        name = stream.codec_context.name if stream.codec_context else "no codec"
        raise OutputError(
            f"stream #{stream.index} ({stream.type}, {name}) cannot be copied into {where}: "
            f"{exc} (.mkv holds nearly every kind of stream)"
        ) from exc


class Output:
    """An output file written under a temporary name and renamed only when complete.

    Before the rename, :meth:`commit` reads the file back (packets only) and compares every
    copied stream with the input's: same packet count and payload hash, or for AAC the
    framing change the container requires (``copied_streams`` says which) with the same AAC
    frames. Anything else is an ``OutputError`` naming the stream, and nothing is written.
    """

    def __init__(self, path: Path, source: Input, encoder: EncoderSettings) -> None:
        self.path = path
        self.tmp = partial_path(path)
        self.encoder = encoder
        self.codec = encoder.check(path)
        self.pix_fmt = encoder.pix_fmt_for(source.info)
        self._source = source
        self._committed = False
        self._first_pts: int | None = None
        #: input stream index -> output stream index, for every stream kept
        self._out_index: dict[int, int] = {}
        #: what the check found: the copied streams, with any framing change
        self.copied_streams: list[dict[str, Any]] = []
        #: per-stream digests of the file as written (its manifest's ``output.streams``)
        self.written_streams: list[dict[str, Any]] = []
        #: seconds the muxer moved every stream later (0: timestamps as the input's)
        self.timestamp_shift = Fraction(0)
        info = source.info
        try:
            self.container = av.open(str(self.tmp), "w", options={"fflags": "+bitexact"})
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"{path}: cannot write this kind of file ({exc})") from exc
        self.format = self.container.format.name
        start = source.container.start_time
        self.container.container_options.update(
            muxer_options(self.format, before_zero=start is not None and start < 0)
        )
        self._options = self.encoder.options(self.codec) | encoder_options_for(self.format)
        # Where the container stores positions, not pts (AVI), frames are stored that many
        # ticks earlier, so that they read back at the input's pts (AVI stores the input's
        # positions when the input is an AVI of the same codec).
        self._lead = 0
        if self.format in _NO_PTS:
            options = tuple(sorted(self._options.items()))
            self._lead = _read_back_delay(self.format, self.codec, self.pix_fmt, options)
        try:
            self.video = self._add_video(info, source)
            self.streams: dict[int, av.stream.Stream] = {}
            self._timecode: int | None = None  # the input's tmcd track, rewritten by the muxer
            for stream in source.copied:
                if is_timecode(stream):
                    self._keep_timecode(stream)
                else:
                    self.streams[stream.index] = self._add_copy(stream)
                    self._out_index[stream.index] = self.streams[stream.index].index
            if self._timecode is not None:  # the muxer adds its tmcd track after the others
                self._out_index[self._timecode] = len(self.container.streams)
            self._start()
        except Exception:
            self.abort()
            raise
        _note_left_out(source, path)

    def _start(self) -> None:
        """Open the file and the encoder; their failures as one-line ``OutputError``s."""
        try:
            self.container.start_encoding()
        except OSError as exc:  # PyAV's file errors are OSErrors too
            if not self.tmp.exists():
                check_writable(self.path)  # names the folder's problem when it has one
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"{self.path}: encoder {self.codec} does not start with "
                f"{self.encoder.options(self.codec)} and pix_fmt {self.pix_fmt} ({exc})"
            ) from exc

    def _add_video(self, info: VideoInfo, source: Input) -> av.VideoStream:
        formats = _pixel_formats(self.codec)
        if formats and self.pix_fmt not in formats:
            raise ConfigError(
                f"{self.codec} cannot encode {self.pix_fmt} (the source's pixel format family); "
                f"set [encoder] pix_fmt in --config to one it takes: {', '.join(formats)}"
            )
        return add_video_stream(
            self.container,
            self.codec,
            info=info,
            pix_fmt=self.pix_fmt,
            rate=info.average_rate,
            options=self._options,
            sample_aspect_ratio=source.video.sample_aspect_ratio,
            where=str(self.path),
        )

    def _add_copy(self, stream: av.stream.Stream) -> av.stream.Stream:
        return add_copy_stream(self.container, stream, self.path.suffix or "this container")

    def _keep_timecode(self, stream: av.stream.Stream) -> None:
        """A timecode track is kept the way MP4 and MOV hold one: their muxer writes it from
        the masked video's ``timecode`` (the check then compares its packet with the input's).
        Other containers hold no timecode track: an ``OutputError`` naming the stream."""
        timecode = stream.metadata["timecode"]
        label = f"stream #{stream.index} (data, timecode track, {timecode})"
        if self.format not in _MOV_FAMILY:
            raise OutputError(
                f"{label} cannot be kept in {self.path.suffix or 'this container'}: only .mov "
                "and .mp4 hold a timecode track; write one of those"
            )
        if self._timecode is not None:
            raise OutputError(
                f"{label}: the input has a second timecode track (#{self._timecode} is the "
                "first); veil keeps one, the masked video's"
            )
        self._timecode = stream.index
        self.video.metadata["timecode"] = timecode

    def settings_json(self) -> dict[str, Any]:
        """The encoder settings as resolved for this output (for the render manifest)."""
        return self.encoder.to_json(self.path, self.pix_fmt) | {"options": self._options}

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._committed:
            self.abort()

    def copy(self, packet: av.Packet) -> None:
        if packet.stream.index == self._timecode:
            return  # the muxer writes the timecode track itself
        packet.stream = self.streams[packet.stream.index]
        self._mux(packet)

    def encode(self, frame: av.VideoFrame | None) -> None:
        if frame is not None and frame.pts is not None:
            first = self._first_pts
            self._first_pts = frame.pts if first is None else min(first, frame.pts)
            frame.pts -= self._lead
        for packet in self.video.encode(frame):
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.path}: writing failed ({exc})") from exc

    def commit(self) -> None:
        """Flush the encoder, close the file, check it (:meth:`_check`) and move it to its
        final name."""
        self.encode(None)
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.path}: finishing the file failed ({exc})") from exc
        self._check()
        try:
            with self.tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self._committed = True

    def _check(self) -> None:
        """Read the closed file back (packets only) and compare every kept stream with the
        input's (the input's digests are final: the demuxer is done). Records the mapping
        (``copied_streams``), the digests (``written_streams``) and the timestamp shift."""
        try:
            with av.open(str(self.tmp), metadata_errors="ignore") as written:
                digests = packet_digests(written)
        except av.error.FFmpegError as exc:
            raise OutputError(
                f"{self.path}: the file written cannot be read back ({exc}); nothing was written"
            ) from exc
        self.copied_streams = []
        for index, out_index in self._out_index.items():
            entry = _kept(self._source.digests[index], digests.get(out_index), self.path)
            self.copied_streams.append({"input": index, "output": out_index, **entry})
        self.written_streams = [d.to_json() for d in digests.values()]
        video = digests.get(self.video.index)
        if video is None or video.start is None or self._first_pts is None:
            return
        shift = video.start - self._first_pts * self._source.info.time_base
        if abs(shift) >= video.time_base:  # more than the output's rounding
            self.timestamp_shift = shift
            logger.warning(
                "%s: every stream is %.3f s later than in the input: %s",
                self.path,
                shift,
                _shift_reason(self.format),
            )

    def timing_json(self) -> dict[str, Any]:
        """The manifest's account of a timestamp shift (empty: none)."""
        if not self.timestamp_shift:
            return {}
        shift = self.timestamp_shift
        return {
            "timestamp_shift": {
                "seconds": f"{shift.numerator}/{shift.denominator}",
                "reason": _shift_reason(self.format),
            }
        }

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            logger.debug("closing a failed output raised", exc_info=True)
        self.tmp.unlink(missing_ok=True)


def _note_left_out(source: Input, path: Path) -> None:
    """Say what of the input is deliberately not in the output (docs/hardening.md)."""
    chapters = len(source.container.chapters())
    if chapters:
        logger.warning(
            "%s: its %d chapters are left out of %s: chapter titles can name people and "
            "places, which masking does not reach",
            source.path.name,
            chapters,
            path.name,
        )
    if source.video.metadata.get("alpha_mode") == "1":
        logger.warning(
            "%s: the video's alpha channel (VP9 alpha) is not kept: %s is opaque",
            source.path.name,
            path.name,
        )


def _shift_reason(fmt: str) -> str:
    if fmt in _MOV_FAMILY:
        return (
            "the input starts before zero, and an MP4/MOV timeline starts at zero (what comes "
            "before is hidden): every stream was moved later by the same amount"
        )
    return (
        f"the {fmt} container cannot hold timestamps before zero: its muxer moved every "
        "stream later by the same amount (relative timing kept)"
    )


def _kept(want: StreamDigest, got: StreamDigest | None, path: Path) -> dict[str, Any]:
    """How stream ``want`` of the input was kept as ``got`` of the output: ``{}`` when its
    packets are the same bytes; ``bitstream_filter`` (and the payload hash after it) when the
    container changed AAC's ADTS framing and nothing else. ``OutputError`` otherwise."""
    label = f"stream #{want.index} ({want.kind}, {want.codec})"
    hint = "" if path.suffix.lower() == ".mkv" else " (.mkv keeps nearly every stream as it is)"
    if got is None:
        raise OutputError(f"{path}: {label} is missing from the file written{hint}")
    if got.packets != want.packets:
        raise OutputError(
            f"{path}: {label} would lose packets: {got.packets} of its {want.packets} can be "
            f"read back from the {path.suffix or 'output'} file{hint}; nothing was written"
        )
    if got.payload_sha256 == want.payload_sha256:
        return {}
    frames = want.aac_frames_sha256
    if frames is not None and got.aac_frames_sha256 == frames:
        # ADTS removed (the input had it: its frames differ from its payloads), or added
        adts_in = frames != want.payload_sha256
        return {
            "bitstream_filter": "aac_adtstoasc" if adts_in else "adts",
            "payload_sha256": got.payload_sha256,
        }
    raise OutputError(
        f"{path}: {label} would be changed: its {want.packets} packets are not the input's "
        f"bytes once written to {path.suffix or 'this container'}{hint}; nothing was written"
    )
