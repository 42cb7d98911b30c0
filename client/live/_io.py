"""Live sources and sinks: which URL is what, opening it, and writing the masked stream.

A source is a URL or a path (RTSP, UDP/RTP MPEG-TS, RTMP, HTTP(S)/HLS, SRT where FFmpeg has
libsrt, a V4L2 device, or a file played at its native rate). A sink is a URL or a path
(UDP or SRT MPEG-TS, RTMP, RTSP push, an HLS playlist on disk, a file). What the FFmpeg inside
the PyAV wheel cannot do (e.g. SRT: the wheel is built without libsrt) fails at open with an
error that names the protocol (:class:`ProtocolError`). docs/live.md has the table.

Video is decoded here and re-encoded by :class:`LiveSink` (x264 ``ultrafast`` +
``zerolatency``: no B-frames, no look-ahead, one packet out per frame in); every other
stream is copied as packets, exactly like the offline ``Output`` (template stream, packet
re-parented, nothing decoded).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import av.error

from veil.core import ConfigError, InputError, OutputError
from veil.media import (
    EncoderSettings,
    add_copy_stream,
    add_video_stream,
    muxer_options,
    partial_path,
    video_info,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Endpoint",
    "LiveEncoder",
    "LiveSink",
    "ProtocolError",
    "SourceKind",
    "open_source",
    "redact",
    "sink_endpoint",
    "source_endpoint",
]


class ProtocolError(ConfigError):
    """The FFmpeg in this PyAV build cannot speak a protocol (e.g. ``srt``: no libsrt)."""


class SourceKind(StrEnum):
    NETWORK = "network"  # reconnected with backoff when lost
    DEVICE = "device"  # a V4L2 camera
    FILE = "file"  # played at its native rate, once


#: URL schemes a source may use, and the demuxer to force (None: probe).
_SOURCE_SCHEMES: dict[str, str | None] = {
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "srt": None,
    "udp": None,
    "rtp": None,
    "rtmp": None,
    "rtmps": None,
    "http": None,
    "https": None,
    "tcp": None,
}

#: URL schemes a sink may use, and the muxer each one gets.
_SINK_SCHEMES: dict[str, str] = {
    "udp": "mpegts",
    "srt": "mpegts",
    "tcp": "mpegts",
    "rtp": "rtp_mpegts",
    "rtmp": "flv",
    "rtmps": "flv",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
}

#: Muxers by file extension for file sinks (others: FFmpeg guesses from the name).
_FILE_FORMATS = {".ts": "mpegts", ".m2ts": "mpegts", ".m3u8": "hls", ".flv": "flv"}

#: Muxers that can be read while being written: no trailer is needed to play them.
_STREAMABLE = frozenset({"mpegts", "rtp_mpegts", "flv", "rtsp", "hls", "matroska"})


def redact(url: str) -> str:
    """``url`` without user:password (records and logs must not carry camera credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A source or sink: what FFmpeg opens, with which (de)muxer and options."""

    url: str
    scheme: str  # "file" for paths, "v4l2" for devices
    format: str | None
    options: dict[str, str] = field(default_factory=dict)
    kind: SourceKind = SourceKind.NETWORK

    @property
    def listens(self) -> bool:
        """A source that waits for a sender (UDP/RTP, or a ``?listen`` URL) rather than
        connecting: opening it waits for data, there is nothing to retry."""
        return self.scheme in ("udp", "rtp") or "listen" in urlsplit(self.url).query

    def __str__(self) -> str:
        return redact(self.url)


def _scheme(text: str) -> str | None:
    if "://" not in text:
        return None
    return text.split("://", 1)[0].lower()


def source_endpoint(text: str, *, read_timeout_s: float = 5.0) -> Endpoint:
    """What ``text`` (a URL, a ``/dev/video*`` device or a file path) opens as a source."""
    scheme = _scheme(text)
    timeout_us = str(int(read_timeout_s * 1e6))
    if scheme is None or scheme == "file":
        path = text.split("://", 1)[1] if scheme == "file" else text
        if path.startswith("/dev/video"):
            return Endpoint(url=path, scheme="v4l2", format="v4l2", kind=SourceKind.DEVICE)
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file (a live source is a URL, device or file)")
        return Endpoint(url=path, scheme="file", format=None, kind=SourceKind.FILE)
    if scheme == "v4l2":
        return Endpoint(
            url=text.split("://", 1)[1], scheme="v4l2", format="v4l2", kind=SourceKind.DEVICE
        )
    if scheme not in _SOURCE_SCHEMES:
        raise ProtocolError(
            f"{redact(text)}: unsupported source scheme {scheme!r} (use one of "
            f"{', '.join(sorted(_SOURCE_SCHEMES))}, a /dev/video device or a file)"
        )
    # (not fflags=nobuffer: it discards the packets read while probing, the first keyframe)
    options: dict[str, str] = {"analyzeduration": "2000000"}
    if scheme in ("udp", "rtp"):
        # FFmpeg's receive thread drains the socket into a 4 MiB ring, so a busy interpreter
        # does not make the kernel drop datagrams; "timeout" notices a sender that went away.
        options |= {
            "timeout": timeout_us,
            "fifo_size": str((4 << 20) // 188),
            "buffer_size": str(4 << 20),
            "overrun_nonfatal": "1",
        }
    elif scheme in ("rtsp", "rtsps"):
        options |= {"rtsp_transport": "tcp", "timeout": timeout_us}
    else:
        options["rw_timeout"] = timeout_us
    return Endpoint(url=text, scheme=scheme, format=_SOURCE_SCHEMES[scheme], options=options)


def sink_endpoint(text: str) -> Endpoint:
    """What ``text`` (a URL or a path) opens as a sink."""
    scheme = _scheme(text)
    if scheme is None or scheme == "file":
        path = text.split("://", 1)[1] if scheme == "file" else text
        suffix = Path(path).suffix.lower()
        fmt = _FILE_FORMATS.get(suffix)
        options: dict[str, str] = {}
        if fmt == "hls":
            options = {
                "hls_time": "2",
                "hls_list_size": "0",
                "hls_playlist_type": "event",
                "hls_flags": "independent_segments+temp_file",
            }
        elif suffix in (".mp4", ".mov"):
            # fragmented: a killed process still leaves a playable file
            options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        return Endpoint(url=path, scheme="file", format=fmt, options=options)
    if scheme not in _SINK_SCHEMES:
        raise ProtocolError(
            f"{redact(text)}: unsupported sink scheme {scheme!r} (use one of "
            f"{', '.join(sorted(_SINK_SCHEMES))}, an .m3u8 playlist or a file)"
        )
    url, options = text, {}
    if scheme == "udp" and "pkt_size" not in text:
        url += ("&" if "?" in text else "?") + "pkt_size=1316"
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"
    return Endpoint(url=url, scheme=scheme, format=_SINK_SCHEMES[scheme], options=options)


def _protocol_error(endpoint: Endpoint, exc: Exception, role: str) -> ProtocolError:
    return ProtocolError(
        f"{endpoint}: this FFmpeg build (FFmpeg {av.ffmpeg_version_info}, PyAV "
        f"{av.__version__}) has no {endpoint.scheme!r} protocol, so it cannot be a live "
        f"{role} ({exc}); see docs/live.md for the protocols it has"
    )


def open_source(endpoint: Endpoint, *, open_timeout_s: float | None) -> av.container.InputContainer:
    """Open a source. ``open_timeout_s`` None waits for a sender forever (UDP)."""
    try:
        return av.open(
            endpoint.url,
            format=endpoint.format,
            options=dict(endpoint.options),
            metadata_errors="ignore",
            timeout=(open_timeout_s, None),
        )
    except av.error.ProtocolNotFoundError as exc:
        raise _protocol_error(endpoint, exc, "source") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{endpoint}: cannot open the source ({exc})") from exc


@dataclass(frozen=True, kw_only=True)
class LiveEncoder:
    """How live video is encoded: ``EncoderSettings`` plus what live needs.

    x264 ``ultrafast`` + ``tune=zerolatency`` (no B-frames, no frame look-ahead, sliced
    threads: a frame in is a packet out), a keyframe every ``keyframe_s`` seconds so a
    receiver joining late (or after a lost datagram) recovers quickly.
    """

    base: EncoderSettings = field(
        default_factory=lambda: EncoderSettings(
            preset="ultrafast", crf=23, threads=2, pix_fmt="yuv420p"
        )
    )
    tune: str = "zerolatency"
    keyframe_s: float = 1.0

    @property
    def pix_fmt(self) -> str:
        """8-bit 4:2:0 unless asked otherwise: what every live receiver and player decodes."""
        return self.base.pix_fmt or "yuv420p"

    def options(self, codec: str) -> dict[str, str]:
        options = self.base.options(codec)
        if codec in ("libx264", "libx265") and self.tune:
            options["tune"] = self.tune
        return options

    def to_json(self, codec: str) -> dict[str, Any]:
        return {
            "codec": codec,
            "options": self.options(codec),
            "pix_fmt": self.pix_fmt,
            "keyframe_s": self.keyframe_s,
            "ffmpeg": str(av.ffmpeg_version_info),
            "pyav": av.__version__,
        }


class LiveSink:
    """The masked stream going out: one encoded video stream plus copied streams.

    A file sink is written under a temporary name and renamed by :meth:`close` (the offline
    ``Output``'s all-or-nothing rule), unless its format is streamable, in which case what was
    written stays readable even after a crash; network sinks are written as they go.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        video: av.video.stream.VideoStream,
        first: av.VideoFrame,
        copied: list[av.stream.Stream],
        encoder: LiveEncoder,
        rate: Fraction | None,
        max_interleave_s: float,
    ) -> None:
        self.endpoint = endpoint
        self.codec = encoder.base.codec or "libx264"
        self._encoder = encoder
        self._final: Path | None = None
        target = endpoint.url
        if endpoint.scheme == "file":
            self._final = Path(endpoint.url)
            if endpoint.format != "hls":
                target = str(partial_path(self._final))
        options = dict(endpoint.options)
        options["max_interleave_delta"] = str(int(max_interleave_s * 1e6))
        if endpoint.scheme != "file":
            options["flush_packets"] = "1"  # a frame's last datagram must not wait for the next
        try:
            self.container = av.open(target, "w", format=endpoint.format, options=options)
        except av.error.ProtocolNotFoundError as exc:
            raise _protocol_error(endpoint, exc, "sink") from exc
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise OutputError(f"{endpoint}: cannot open the sink ({exc})") from exc
        self._target = target
        # The offline ``Output``'s timestamp rule: the source's timestamps wherever the
        # sink's container holds them (``muxer_options``).
        start = getattr(video.container, "start_time", None)  # an InputContainer's
        self.container.container_options.update(
            muxer_options(self.container.format.name, before_zero=start is not None and start < 0)
        )
        try:
            self.video = self._add_video(video, first, rate)
            self.streams: dict[int, av.stream.Stream] = {}
            for stream in copied:
                self.streams[stream.index] = self._add_copy(stream)
            self.container.start_encoding()
        except Exception:
            self._discard()
            raise
        self.time_base: Fraction = self.video.codec_context.time_base
        self._closed = False

    def _add_video(
        self, source: av.video.stream.VideoStream, first: av.VideoFrame, rate: Fraction | None
    ) -> av.video.stream.VideoStream:
        # The offline ``Output``'s stream setup: size, time base, colour description, pixel
        # aspect ratio and display rotation, as the source has them.
        stream = add_video_stream(
            self.container,
            self.codec,
            info=video_info(source, first),
            pix_fmt=self._encoder.pix_fmt,
            rate=rate,
            options=self._encoder.options(self.codec),
            sample_aspect_ratio=source.sample_aspect_ratio,
            where=str(self.endpoint),
        )
        ctx = stream.codec_context
        if rate:
            ctx.gop_size = max(1, round(rate * Fraction(self._encoder.keyframe_s)))
        if self.container.format.name in ("mpegts", "rtp_mpegts", "flv", "rtsp"):
            # in-band SPS/PPS before every keyframe: a receiver can join at any keyframe
            ctx.flags &= ~av.codec.context.Flags.global_header
        return stream

    def _add_copy(self, stream: av.stream.Stream) -> av.stream.Stream:
        where = f"{self.endpoint} ({self.container.format.name})"
        return add_copy_stream(self.container, stream, where)

    def encode(self, frame: av.VideoFrame | None) -> None:
        for packet in self.video.encode(frame):
            self._mux(packet)

    def copy(self, packet: av.Packet, out_index: int) -> None:
        packet.stream = self.streams[out_index]
        self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self.endpoint}: writing failed ({exc})") from exc

    def close(self) -> None:
        """Flush the encoder, write the trailer and (file sinks) move to the final name."""
        if self._closed:
            return
        self._closed = True
        try:
            self.encode(None)
        finally:
            try:
                self.container.close()
            except av.error.FFmpegError as exc:
                raise OutputError(f"{self.endpoint}: finishing the output failed ({exc})") from exc
        if self._final is not None and self._target != str(self._final):
            os.replace(self._target, self._final)

    def _discard(self) -> None:
        try:
            self.container.close()
        except Exception:
            logger.debug("closing a failed sink raised", exc_info=True)
        if self._final is not None and self._target != str(self._final):
            Path(self._target).unlink(missing_ok=True)
