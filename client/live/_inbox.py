"""What travels from the reader and the detection worker to the engine, and the bounded
queue it travels in (:class:`Inbox`)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import av

from veil.core import Detections

__all__ = [
    "Connected",
    "Crashed",
    "End",
    "Inbox",
    "Lost",
    "Media",
    "Release",
    "Result",
    "SourceFrame",
    "SourcePacket",
]


@dataclass
class SourceFrame:
    """A decoded video frame; ``index`` counts frames over every session."""

    index: int
    frame: av.VideoFrame
    arrival: float  # time.monotonic() when decoded: its deadline counts from here
    session: int


@dataclass
class SourcePacket:
    """A packet of any other stream, copied as it is."""

    packet: av.Packet
    session: int
    stream: int  # its input stream's index, read before anything else can happen to it


@dataclass
class Connected:
    """A session of the source began: its picture stream and the others."""

    session: int
    video: av.video.stream.VideoStream
    others: list[av.stream.Stream]


@dataclass
class Lost:
    session: int
    reason: str
    retry_in_s: float


@dataclass
class End:
    """The reader is done: the source ended, gave up, or the run was stopped."""

    reason: str


@dataclass
class Release:
    """A finished session's input, closed by the engine once it has consumed everything read
    from it (packets and streams still point into the demuxer until then)."""

    container: av.container.InputContainer


@dataclass
class Crashed:
    """The reader raised: the engine re-raises it."""

    error: BaseException


@dataclass
class Result:
    """A detection of frame ``index``: its detections, or the error it failed with."""

    index: int
    detections: Detections | None
    error: str | None
    seconds: float


Media = SourceFrame | SourcePacket | Connected | Lost | End | Crashed | Release


class Inbox:
    """Reader items and detection results, for the engine. Bounded: when ``max_frames`` frames
    wait, the oldest waiting frame is dropped (and reported); packets make the reader wait."""

    def __init__(self, max_frames: int, max_packets: int) -> None:
        self._cond = threading.Condition()
        self._media: deque[Media] = deque()
        self._results: deque[Result] = deque()
        self._dropped: list[SourceFrame] = []
        self._frames = self._packets = 0
        self._max_frames, self._max_packets = max_frames, max_packets
        self.closed = False

    def put(self, item: Media) -> None:
        with self._cond:
            if isinstance(item, SourceFrame):
                if self._frames >= self._max_frames:
                    for k, old in enumerate(self._media):
                        if isinstance(old, SourceFrame):
                            del self._media[k]
                            self._dropped.append(old)
                            self._frames -= 1
                            break
                self._frames += 1
            elif isinstance(item, SourcePacket):
                while self._packets >= self._max_packets and not self.closed:
                    self._cond.wait(0.1)
                self._packets += 1
            self._media.append(item)
            self._cond.notify_all()

    def put_result(self, result: Result) -> None:
        with self._cond:
            self._results.append(result)
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[list[Media], list[Result], list[SourceFrame]]:
        """Everything waiting (media, results, frames dropped since), after waiting up to
        ``timeout`` seconds for something to arrive."""
        with self._cond:
            if not (self._media or self._results or self._dropped) and timeout > 0:
                self._cond.wait(timeout)
            media, self._media = list(self._media), deque()
            results, self._results = list(self._results), deque()
            dropped, self._dropped = self._dropped, []
            self._frames = self._packets = 0
            self._cond.notify_all()
            return media, results, dropped

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
