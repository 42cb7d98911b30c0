"""Media I/O on PyAV: open and probe an input, demux it, write the output atomically.

Every non-video stream is copied as packets (PyAV's remux pattern: a stream made from the
input's template, packets re-parented to it, nothing decoded). Video frames keep their pts and
time base; the output container gets no wall-clock metadata.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from ._atomic import check_writable, partial_path
from ._errors import ConfigError, InputError, OutputError

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


@dataclass
class StreamDigest:
    """Packet count and payload hash of one stream: proof that a stream was not touched."""

    index: int
    kind: str
    codec: str
    time_base: Fraction
    packets: int = 0
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)

    def add(self, packet: av.Packet) -> None:
        self.packets += 1
        self._sha.update(bytes(packet))

    @property
    def payload_sha256(self) -> str:
        return str(self._sha.hexdigest())

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "type": self.kind,
            "codec": self.codec,
            "time_base": str(self.time_base),
            "packets": self.packets,
            "payload_sha256": self.payload_sha256,
        }


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

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
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


def probe(path: Path) -> VideoInfo:
    """Open ``path``, check it has a decodable video stream, and describe that stream."""
    with _open(path) as container:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise InputError(f"{path}: no video stream (it has {kinds})")
        stream = container.streams.video[0]
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
        )


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
        self.video = self.container.streams.video[0]
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
        self.copied = [s for s in self.container.streams if s.index != self.video.index]
        self.timestamps_repaired = 0

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def demux(self) -> Iterator[DecodedFrame | av.Packet]:
        """Frames of the video stream and packets of every other stream, in file order."""
        index = decoded = 0
        timing = _Timestamps()
        packet = None
        try:
            for packet in self.container.demux():
                if packet.stream.index != self.video.index:
                    if packet.size:  # skip only empty flush packets
                        self.digests[packet.stream.index].add(packet)
                        yield packet
                    continue
                if packet.size:
                    self.digests[packet.stream.index].add(packet)
                for frame in self.video.decode(packet):
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
        # Only the MP4/MOV sample table counts frames exactly (AVI's header may not).
        exact_count = "mp4" in self.container.format.name.split(",")
        if exact_count and self.info.frames and index < self.info.frames:
            raise InputError(
                f"{self.path}: truncated: the container declares {self.info.frames} frames "
                f"but only {index} could be decoded"
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


class Output:
    """An output file written under a temporary name and renamed only when complete."""

    def __init__(self, path: Path, source: Input, encoder: EncoderSettings) -> None:
        self.path = path
        self.tmp = partial_path(path)
        self.encoder = encoder
        self.codec = encoder.check(path)
        self.pix_fmt = encoder.pix_fmt_for(source.info)
        self._committed = False
        info = source.info
        try:
            self.container = av.open(str(self.tmp), "w", options={"fflags": "+bitexact"})
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"{path}: cannot write this kind of file ({exc})") from exc
        try:
            self.video = self._add_video(info, source)
            self.streams: dict[int, av.stream.Stream] = {}
            for stream in source.copied:
                self.streams[stream.index] = self._add_copy(stream)
            self._start()
        except Exception:
            self.abort()
            raise

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
        options = self.encoder.options(self.codec)
        try:
            stream = self.container.add_stream(
                self.codec, rate=info.average_rate or None, options=options
            )
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"{self.path}: encoder {self.codec} is not available ({exc})"
            ) from exc
        if not isinstance(stream, av.VideoStream):
            raise OutputError(f"{self.path}: {self.codec} is not a video encoder")
        formats = _pixel_formats(self.codec)
        if formats and self.pix_fmt not in formats:
            raise ConfigError(
                f"{self.codec} cannot encode {self.pix_fmt} (the source's pixel format family); "
                f"set [encoder] pix_fmt in --config to one it takes: {', '.join(formats)}"
            )
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = self.pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        ctx.color_range = info.color_range
        ctx.colorspace = info.colorspace
        ctx.color_primaries = info.color_primaries
        ctx.color_trc = info.color_trc
        if source.video.sample_aspect_ratio:
            ctx.sample_aspect_ratio = source.video.sample_aspect_ratio
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        return stream

    def _add_copy(self, stream: av.stream.Stream) -> av.stream.Stream:
        try:
            out = self.container.add_stream_from_template(stream)
        except (av.error.FFmpegError, ValueError, TypeError) as exc:
            raise OutputError(
                f"stream #{stream.index} ({stream.type}, {stream.codec_context.name}) cannot be "
                f"copied into {self.path.suffix or 'this container'}: {exc} "
                "(.mkv holds nearly every kind of stream)"
            ) from exc
        return out

    def settings_json(self) -> dict[str, Any]:
        """The encoder settings as resolved for this output (for the render manifest)."""
        return self.encoder.to_json(self.path, self.pix_fmt)

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._committed:
            self.abort()

    def copy(self, packet: av.Packet) -> None:
        packet.stream = self.streams[packet.stream.index]
        self._mux(packet)

    def encode(self, frame: av.VideoFrame | None) -> None:
        for packet in self.video.encode(frame):
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.path}: writing failed ({exc})") from exc

    def commit(self) -> None:
        """Flush the encoder, close the file and move it to its final name."""
        self.encode(None)
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.path}: finishing the file failed ({exc})") from exc
        try:
            with self.tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write ({exc.strerror or exc})") from exc
        self._committed = True

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            logger.debug("closing a failed output raised", exc_info=True)
        self.tmp.unlink(missing_ok=True)
