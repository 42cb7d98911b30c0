"""A masked video written to a file (:class:`Output`): under a partial name, read back and
checked against the input before it is moved to its own, so a stream veil copies is either
the input's bytes or nothing is written."""

from __future__ import annotations

import functools
import io
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from veil.core import ConfigError, OutputError

from ._atomic import partial_path
from ._digest import StreamDigest, packet_digests
from ._encoder import EncoderSettings, pixel_formats
from ._input import Input
from ._muxer import MOV_FAMILY, NO_PTS, Muxer, encoder_options_for

logger = logging.getLogger(__name__)


class Output(Muxer):
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
        codec = encoder.check(path)
        pix_fmt = encoder.pix_fmt_for(source.info)
        try:
            container = av.open(str(self.tmp), "w", options={"fflags": "+bitexact"})
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(f"{path}: cannot write this kind of file ({exc})") from exc
        start = source.container.start_time
        super().__init__(
            container,
            where=str(path),
            codec=codec,
            pix_fmt=pix_fmt,
            options=encoder.options(codec) | encoder_options_for(container.format.name),
            before_zero=start is not None and start < 0,
            target=self.tmp,
            final=path,
        )
        self._source = source
        self._first_pts: int | None = None
        #: input stream index -> output stream index, for every stream kept
        self._out_index: dict[int, int] = {}
        #: what the check found: the copied streams, with any framing change
        self.copied_streams: list[dict[str, Any]] = []
        #: per-stream digests of the file as written (its manifest's ``output.streams``)
        self.written_streams: list[dict[str, Any]] = []
        #: seconds the muxer moved every stream later (0: timestamps as the input's)
        self.timestamp_shift = Fraction(0)
        #: the input's tmcd track, which the muxer rewrites from the video's ``timecode``
        self._timecode: int | None = None
        # Where the container stores positions, not pts (AVI), frames are stored that many
        # ticks earlier, so that they read back at the input's pts (AVI stores the input's
        # positions when the input is an AVI of the same codec).
        self._lead = 0
        try:
            if self.format in NO_PTS:
                options = tuple(sorted(self._options.items()))
                self._lead = _read_back_delay(self.format, codec, pix_fmt, options)
            self.video = self._add_output_video()
            into = path.suffix or "this container"
            for stream in source.copied:
                if _is_timecode(stream):
                    self._keep_timecode(stream)
                else:
                    self.streams[stream.index] = self._add_copy(stream, into)
                    self._out_index[stream.index] = self.streams[stream.index].index
            if self._timecode is not None:  # the muxer adds its tmcd track after the others
                self._out_index[self._timecode] = len(self.container.streams)
            self._start()
        except Exception:
            self.abort()
            raise
        _note_left_out(source, path)

    def _add_output_video(self) -> av.VideoStream:
        formats = pixel_formats(self.codec)
        if formats and self.pix_fmt not in formats:
            raise ConfigError(
                f"{self.codec} cannot encode {self.pix_fmt} (the source's pixel format family); "
                f"set [encoder] pix_fmt in --config to one it takes: {', '.join(formats)}"
            )
        info = self._source.info
        return self._add_video(self._source.video, info, info.average_rate)

    def _keep_timecode(self, stream: av.stream.Stream) -> None:
        """A timecode track is kept the way MP4 and MOV hold one: their muxer writes it from
        the masked video's ``timecode`` (the check then compares its packet with the input's).
        Other containers hold no timecode track: an ``OutputError`` naming the stream."""
        timecode = stream.metadata["timecode"]
        label = f"stream #{stream.index} (data, timecode track, {timecode})"
        if self.format not in MOV_FAMILY:
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

    def copy(self, packet: av.Packet, index: int | None = None) -> None:
        """As :meth:`Muxer.copy`; the timecode track's packets are left out, as the muxer
        writes that track itself."""
        if packet.stream.index != self._timecode:
            super().copy(packet, index)

    def encode(self, frame: av.VideoFrame | None) -> None:
        """As :meth:`Muxer.encode`, noting the first pts (for :meth:`_check`'s timestamp
        shift) and storing frames ``_lead`` ticks early where the container needs it (AVI)."""
        if frame is not None and frame.pts is not None:
            first = self._first_pts
            self._first_pts = frame.pts if first is None else min(first, frame.pts)
            frame.pts -= self._lead
        super().encode(frame)

    def commit(self) -> None:
        """Flush the encoder, close the file, check it (:meth:`_check`) and move it to its
        final name; on any failure nothing is written."""
        self._close()

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


def _is_timecode(stream: av.stream.Stream) -> bool:
    """A QuickTime timecode track (``tmcd``): a data stream FFmpeg describes by its start
    timecode."""
    return stream.type == "data" and "timecode" in stream.metadata


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
    if fmt in MOV_FAMILY:
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
