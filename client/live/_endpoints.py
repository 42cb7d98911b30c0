"""Live sources and sinks: which URL is what, and opening a source.

A source is a URL or a path (RTSP, UDP/RTP MPEG-TS, RTMP, HTTP(S)/HLS, SRT where FFmpeg has
libsrt, a V4L2 device, or a file played at its native rate). A sink is a URL or a path
(UDP or SRT MPEG-TS, RTMP, RTSP push, an HLS playlist on disk, a file). What the FFmpeg inside
the PyAV wheel cannot do (e.g. SRT: the wheel is built without libsrt) fails at open with an
error that names the protocol (``veil.media.ProtocolError``). docs/live.md has the table.

The masked stream is written by ``veil.media.LiveSink`` (the file output's muxer, with x264
``ultrafast`` + ``zerolatency``: no B-frames, no look-ahead, one packet out per frame in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import av
import av.error

from veil.core import InputError
from veil.media import ProtocolError

__all__ = [
    "Endpoint",
    "SourceKind",
    "open_source",
    "redact",
    "sink_endpoint",
    "source_endpoint",
]


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
        raise ProtocolError.missing(str(endpoint), endpoint.scheme, "source", exc) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{endpoint}: cannot open the source ({exc})") from exc
