"""The muxer every masked output is, file or live: one encoded video stream set up as the
source's, the input's other streams copied as packets, and the source's timestamps kept
wherever the container holds them.

:class:`~._output.Output` (a file, checked before it is published) and
:class:`~._sink.LiveSink` (a live stream) are thin subclasses of :class:`Muxer`: their stream
setup is this one, so the two cannot drift apart again (a live copy of it once lost the
source's rotation and colour tags).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import av.error

from veil.core import OutputError

from ._atomic import check_writable
from ._probe import VideoInfo
from ._x264 import x264_asm

logger = logging.getLogger(__name__)

#: Muxers of the MP4/MOV family: their timeline starts at zero (an edit list hides what
#: comes before), and they hold a QuickTime timecode (``tmcd``) track.
MOV_FAMILY = frozenset({"mov", "mp4", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"})
#: Muxers whose timestamps are modular (MPEG-TS: 33 bits at 90 kHz), so a timestamp before
#: zero is written as its wrap, exactly as an input near the wrap had it.
_WRAPPING = frozenset({"mpegts", "rtp_mpegts"})
#: Muxers that store no presentation timestamp (AVI: one frame per tick, in stored order).
NO_PTS = frozenset({"avi"})


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
    if fmt in MOV_FAMILY and before_zero:
        return {"avoid_negative_ts": "make_non_negative"}
    return {}


def encoder_options_for(fmt: str) -> dict[str, str]:
    """Encoder options muxer ``fmt`` needs: no B-frames where it stores no pts (AVI), so
    frames are stored in the order they are shown."""
    return {"bf": "0"} if fmt in NO_PTS else {}


class Muxer:
    """An output container being written: the masked video, encoded, plus copied streams.

    A subclass opens ``container`` (its own options, its own errors), then adds the video
    (:meth:`_add_video`) and the copied streams (:meth:`_add_copy`, into :attr:`streams`),
    and starts it (:meth:`_start`); on failure there it calls :meth:`abort`. A file is
    written at ``target`` and moved to ``final`` only once complete (:meth:`_close`): never
    a partial file under an output's name. Both are None for a network sink, and the same
    path for a file written in place.
    """

    video: av.VideoStream

    def __init__(
        self,
        container: av.container.OutputContainer,
        *,
        where: str,
        codec: str,
        pix_fmt: str,
        options: dict[str, str],
        before_zero: bool,
        target: Path | None = None,
        final: Path | None = None,
    ) -> None:
        self.container = container
        self.format: str = container.format.name
        self.codec = codec
        self.pix_fmt = pix_fmt
        #: the encoder's options, as asked (x264's ``asm`` is added when the stream is made)
        self._options = options
        self._where = where
        self._target, self._final = target, final
        self._closed = False
        #: input stream index -> the output stream its packets are copied to
        self.streams: dict[int, av.stream.Stream] = {}
        container.container_options.update(muxer_options(self.format, before_zero=before_zero))

    def _add_video(
        self, source: av.VideoStream, info: VideoInfo, rate: Fraction | None
    ) -> av.VideoStream:
        """The encoded video stream: ``info``'s size, time base, colour description and
        display rotation, and ``source``'s pixel aspect ratio as its container or codec
        states it (none stays none). libx264 runs without AVX-512 (see :func:`x264_asm`)."""
        options = self._options
        if self.codec.startswith("libx264") and (asm := x264_asm()) is not None:
            params = options.get("x264-params")
            options = options | {"x264-params": f"{params}:asm={asm}" if params else f"asm={asm}"}
        try:
            stream = self.container.add_stream(self.codec, rate=rate or None, options=options)
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"{self._where}: encoder {self.codec} is not available ({exc})"
            ) from exc
        if not isinstance(stream, av.VideoStream):
            raise OutputError(f"{self._where}: {self.codec} is not a video encoder")
        stream.width, stream.height = info.width, info.height
        stream.pix_fmt = self.pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        ctx.color_range = info.color_range
        ctx.colorspace = info.colorspace
        ctx.color_primaries = info.color_primaries
        ctx.color_trc = info.color_trc
        if source.sample_aspect_ratio:
            ctx.sample_aspect_ratio = source.sample_aspect_ratio
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        return stream

    def _add_copy(self, stream: av.stream.Stream, into: str) -> av.stream.Stream:
        """A stream that takes ``stream``'s packets as they are (PyAV's remux pattern: made
        from its template, nothing decoded); ``OutputError`` naming the stream when the
        container (``into`` says which) cannot hold it."""
        try:
            return self.container.add_stream_from_template(stream)
        except (av.error.FFmpegError, ValueError, TypeError) as exc:
            name = stream.codec_context.name if stream.codec_context else "no codec"
            raise OutputError(
                f"stream #{stream.index} ({stream.type}, {name}) cannot be copied into {into}: "
                f"{exc} (.mkv holds nearly every kind of stream)"
            ) from exc

    def _start(self) -> None:
        """Write the header and open the encoder; their failures as one-line ``OutputError``s."""
        try:
            self.container.start_encoding()
        except OSError as exc:  # PyAV's file errors are OSErrors too
            if self._final is not None and self._target is not None and not self._target.exists():
                check_writable(self._final)  # names the folder's problem when it has one
            raise OutputError(f"{self._where}: cannot write ({exc.strerror or exc})") from exc
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"{self._where}: encoder {self.codec} does not start with {self._options} "
                f"and pix_fmt {self.pix_fmt} ({exc})"
            ) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._closed:
            self.abort()

    def encode(self, frame: av.VideoFrame | None) -> None:
        """Encode ``frame`` (None: flush the encoder) and mux the packets that come out."""
        for packet in self.video.encode(frame):
            self._mux(packet)

    def copy(self, packet: av.Packet, index: int | None = None) -> None:
        """Mux ``packet`` as it is into the stream copied from input stream ``index`` (None:
        the packet's own; a live source after a reconnect names the first session's)."""
        packet.stream = self.streams[packet.stream.index if index is None else index]
        self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"{self._where}: writing failed ({exc})") from exc

    def _close(self, *, keep_partial: bool = False) -> None:
        """Flush the encoder, write the trailer, check the file (:meth:`_check`) and move it
        to its name. Any failure abandons the output (:meth:`abort`, which keeps the partial
        file with ``keep_partial``); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.encode(None)
            try:
                self.container.close()
            except av.error.FFmpegError as exc:
                raise OutputError(f"{self._where}: finishing the output failed ({exc})") from exc
            self._check()
            self._publish()
        except BaseException:
            self.abort(keep_partial=keep_partial)
            raise

    def _check(self) -> None:
        """What a subclass checks in the closed file before it gets its name (nothing here)."""

    def _publish(self) -> None:
        """Move the complete file from its partial name to its own, synced first: a crash
        leaves the old file or the new one under that name, never part of one."""
        if self._target is None or self._final is None or self._target == self._final:
            return
        try:
            with self._target.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self._target, self._final)
        except OSError as exc:
            raise OutputError(f"{self._where}: cannot write ({exc.strerror or exc})") from exc

    def abort(self, *, keep_partial: bool = False) -> None:
        """Abandon the output: close the container (what that raises is only logged) and
        remove the partial file, unless ``keep_partial``. Either way nothing is left under the
        final name."""
        try:
            self.container.close()
        except Exception:
            logger.debug("closing a failed output raised", exc_info=True)
        if keep_partial and self._target is not None:
            logger.warning("%s: what was written is kept in %s", self._where, self._target)
        elif self._target is not None and self._target != self._final:
            self._target.unlink(missing_ok=True)
