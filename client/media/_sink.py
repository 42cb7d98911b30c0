"""The masked live stream going out (:class:`LiveSink`): a :class:`~._muxer.Muxer` whose
video stream is set up exactly as a file output's (size, time base, colour description,
pixel aspect ratio, rotation) and whose encoder is tuned for receivers that join at any
time. Where it goes (``veil.live``'s endpoints) is told here only through
:class:`SinkEndpoint`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import av.error

from veil.core import ConfigError, OutputError

from ._atomic import partial_path
from ._encoder import LiveEncoder
from ._muxer import Muxer
from ._probe import video_info

#: Muxers a receiver may join mid-stream: they get the codec's headers (H.264's SPS/PPS)
#: before every keyframe instead of once at the start.
_JOINABLE = frozenset({"mpegts", "rtp_mpegts", "flv", "rtsp"})


class ProtocolError(ConfigError):
    """The FFmpeg in this PyAV build cannot speak a protocol (e.g. ``srt``: no libsrt)."""

    @classmethod
    def missing(cls, where: str, scheme: str, role: str, exc: Exception) -> ProtocolError:
        """The error for a live ``role`` ("source" or "sink") at ``where`` whose ``scheme``
        FFmpeg reported it has no protocol for (``exc``)."""
        return cls(
            f"{where}: this FFmpeg build (FFmpeg {av.ffmpeg_version_info}, PyAV "
            f"{av.__version__}) has no {scheme!r} protocol, so it cannot be a live "
            f"{role} ({exc}); see docs/live.md for the protocols it has"
        )


class SinkEndpoint(Protocol):
    """Where a live sink writes: what FFmpeg opens (``url``; ``scheme`` is ``file`` for a
    path), with which muxer and options (``veil.live.Endpoint``). Its ``str`` names it in
    messages, without credentials."""

    @property
    def url(self) -> str: ...

    @property
    def scheme(self) -> str: ...

    @property
    def format(self) -> str | None: ...

    @property
    def options(self) -> dict[str, str]: ...


class LiveSink(Muxer):
    """The masked stream going out: one encoded video stream plus copied streams.

    A file sink is written under a partial name and moved to its own by :meth:`close`, as a
    file output is; an HLS playlist is written in place (FFmpeg replaces it whole at each
    segment, ``hls_flags=temp_file``); network sinks are written as they go, each packet
    sent at once. The encoder puts a keyframe every ``encoder.keyframe_s`` seconds.
    """

    def __init__(
        self,
        endpoint: SinkEndpoint,
        *,
        video: av.VideoStream,
        first: av.VideoFrame,
        copied: list[av.stream.Stream],
        encoder: LiveEncoder,
        rate: Fraction | None,
        max_interleave_s: float,
    ) -> None:
        self.endpoint = endpoint
        target = final = None
        if endpoint.scheme == "file":
            final = Path(endpoint.url)
            target = final if endpoint.format == "hls" else partial_path(final)
        options = dict(endpoint.options)
        options["max_interleave_delta"] = str(int(max_interleave_s * 1e6))
        if endpoint.scheme != "file":
            options["flush_packets"] = "1"  # a frame's last datagram must not wait for the next
        url = endpoint.url if target is None else str(target)
        try:
            container = av.open(url, "w", format=endpoint.format, options=options)
        except av.error.ProtocolNotFoundError as exc:
            raise ProtocolError.missing(str(endpoint), endpoint.scheme, "sink", exc) from exc
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise OutputError(f"{endpoint}: cannot open the sink ({exc})") from exc
        start = getattr(video.container, "start_time", None)  # an InputContainer's
        super().__init__(
            container,
            where=str(endpoint),
            codec=encoder.codec,
            pix_fmt=encoder.pix_fmt,
            options=encoder.options(encoder.codec),
            before_zero=start is not None and start < 0,
            target=target,
            final=final,
        )
        try:
            self.video = self._add_video(video, video_info(video, first, frame_colour=True), rate)
            ctx = self.video.codec_context
            if rate:
                ctx.gop_size = max(1, round(rate * Fraction(encoder.keyframe_s)))
            if self.format in _JOINABLE:
                ctx.flags &= ~av.codec.context.Flags.global_header
            into = f"{endpoint} ({self.format})"
            for stream in copied:
                self.streams[stream.index] = self._add_copy(stream, into)
            self._start()
        except Exception:
            self.abort()
            raise
        self.time_base: Fraction = self.video.codec_context.time_base

    def close(self) -> None:
        """Flush the encoder, write the trailer and (file sinks) move the file to its name.
        If finishing fails, the partial file stays (and the log names it): every frame in it
        is masked, and a stream's recording of hours is not thrown away for a failed trailer
        (an MPEG-TS file reads without one)."""
        self._close(keep_partial=True)
