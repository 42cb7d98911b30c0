"""An input being read: frames of the masked video stream in presentation order, with
increasing timestamps, and every other stream's packets as they are, each stream hashed on
the way (:class:`~._digest.StreamDigest`) for the output's check and the record."""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error

from veil.core import InputError

from ._digest import StreamDigest
from ._probe import Picture, VideoInfo, open_input

logger = logging.getLogger(__name__)


@dataclass
class DecodedFrame:
    """A frame of the masked video and its index in presentation order (from 0)."""

    index: int
    frame: av.VideoFrame


class Input:
    """A demuxed input: video frames in presentation order, other streams as packets."""

    def __init__(self, path: Path, info: VideoInfo) -> None:
        self.path = path
        self.info = info
        self.container = open_input(path)
        self.video = next(s for s in self.container.streams.video if s.index == info.index)
        self.video.thread_type = "AUTO"
        self.digests = {s.index: StreamDigest.of(s) for s in self.container.streams}
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
