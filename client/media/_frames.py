"""Frames of a video by number, in any order, as veil's reader numbers them (the pictures
of the review workstation, ``veil.review``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av

from ._input import DecodedFrame, Input
from ._probe import probe


class Frames:
    """Frame ``i`` of a video exactly as veil's own reader (:class:`~._input.Input`) numbers it, the
    numbering the record's frames follow.

    Where the container's timestamps are the reader's (checked once: the first frames decoded
    straight, and one seek), a jump seeks to the key frame before and decodes forward; a seek
    that does not reach the frame (an open GOP, a container that seeks late) and every
    container whose timestamps the reader repairs (AVI with B-frames, edit lists) decode from
    the start instead. A step forward decodes one frame either way."""

    def __init__(
        self, path: Path, pts: list[int | None] | None = None, drop: list[int] | None = None
    ) -> None:
        self._path = path
        self._info = probe(path, drop=drop or [])
        self._reader: Input | None = None
        self._read: Iterator[DecodedFrame | av.Packet] | None = None
        self._read_next = 0
        if pts is None:  # the rendered output: read once
            pts = [f.frame.pts for f in self._sequence()]
        self.pts = pts
        self._index = {p: i for i, p in enumerate(pts) if p is not None}
        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        for stream in self._container.streams.video:
            if stream.index == self._info.index:
                self._stream = stream
        self._decoded: Iterator[av.VideoFrame] | None = None
        self._next = -1
        self._seekable = self._seeks_true()

    def _sequence(self) -> Iterator[DecodedFrame]:
        with Input(self._path, self._info) as reader:
            for item in reader.demux():
                if isinstance(item, DecodedFrame):
                    yield item

    def _seeks_true(self) -> bool:
        """Whether seeking finds the reader's frames: the first frames decoded straight
        carry the reader's timestamps, and a seek to the middle frame lands on it."""
        try:
            straight = []
            for frame in self._container.decode(self._stream):
                straight.append(frame.pts)
                if len(straight) == min(48, len(self.pts)):
                    break
            if straight != self.pts[: len(straight)]:
                return False
            middle = len(self.pts) // 2
            found = self._seek(middle)
            return found is not None
        except (av.FFmpegError, ValueError):
            return False

    def _seek(self, index: int) -> av.VideoFrame | None:
        if self._decoded is None or not self._next <= index <= self._next + 32:
            target = self.pts[index]
            if target is None:
                return None
            self._container.seek(target, stream=self._stream, backward=True)
            self._decoded = self._container.decode(self._stream)
        for frame in self._decoded:
            found = self._index.get(frame.pts) if frame.pts is not None else None
            if found is None:
                continue
            self._next = found + 1
            if found == index:
                return frame
            if found > index:
                break
        self._decoded = None
        return None

    def _sequential(self, index: int) -> av.VideoFrame:
        if self._read is None or index < self._read_next:
            if self._reader is not None:
                self._reader.container.close()
            self._reader = Input(self._path, self._info)
            self._read = self._reader.demux()
            self._read_next = 0
        for item in self._read:
            if isinstance(item, DecodedFrame):
                self._read_next = item.index + 1
                if item.index == index:
                    return item.frame
        raise KeyError(index)

    def get(self, index: int) -> av.VideoFrame:
        if not 0 <= index < len(self.pts):
            raise KeyError(index)
        near = self._read is not None and self._read_next <= index <= self._read_next + 32
        if self._seekable and not near:
            frame = self._seek(index)
            if frame is not None:
                return frame
        return self._sequential(index)

    def close(self) -> None:
        self._container.close()
        if self._reader is not None:
            self._reader.container.close()
