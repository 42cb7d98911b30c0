"""The reader thread: demuxes and decodes the source, plays a file at its native rate, and
reconnects to a lost network source with backoff."""

from __future__ import annotations

import logging
import threading
import time

import av
import av.error

from veil.core import InputError
from veil.media import Picture, ProtocolError

from ._config import LiveConfig
from ._endpoints import Endpoint, SourceKind, open_source
from ._inbox import Connected, Crashed, End, Inbox, Lost, Release, SourceFrame, SourcePacket

logger = logging.getLogger(__name__)

__all__ = ["Reader"]


class _Pacer:
    """Plays a file at its native rate: each packet waits for its time on the wall clock."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._origin: tuple[float, float] | None = None

    def wait(self, packet: av.Packet) -> None:
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None or packet.time_base is None:
            return
        t = float(ts * packet.time_base)
        now = time.monotonic()
        if self._origin is None:
            self._origin = (t, now)
            return
        due = self._origin[1] + (t - self._origin[0])
        if due > now:
            self._stop.wait(due - now)


def _live_picture(container: av.container.InputContainer, source: str) -> av.VideoStream:
    """The one picture stream a live source may have (cover art aside, the first video).

    A picture stream is never copied unmasked, and a live job masks one: a source with
    another (a second camera, a thumbnail track) is refused, each one named.
    """
    pictures = [Picture.of(s) for s in container.streams.video]
    main = next((p for p in pictures if not p.attached), pictures[0])
    extra = [p for p in pictures if p.index != main.index]
    if extra:
        raise InputError(
            f"{source}: veil live masks one picture stream, {main.describe()}, and never "
            f"copies one unmasked; this source also has {', '.join(p.describe() for p in extra)}"
            ": send it without them (veil anonymize takes --drop-stream N for files)"
        )
    return next(s for s in container.streams.video if s.index == main.index)


class Reader(threading.Thread):
    """Demuxes and decodes the source; reconnects to a lost network source with backoff.
    Whatever happens ends in the inbox: :class:`End` with the reason, or ``Crashed``."""

    def __init__(
        self, endpoint: Endpoint, config: LiveConfig, inbox: Inbox, stop: threading.Event
    ) -> None:
        super().__init__(name="veil-live-read", daemon=True)
        self._endpoint = endpoint
        self._config = config
        self._inbox = inbox
        self._stop = stop
        self._index = 0
        self._session = 0

    def run(self) -> None:
        try:
            self._inbox.put(End(self._run()))
        except BaseException as exc:
            self._inbox.put(Crashed(exc))

    def _run(self) -> str:
        endpoint, policy = self._endpoint, self._config.reconnect
        failures = 0
        while not self._stop.is_set():
            try:
                container = open_source(endpoint, open_timeout_s=None if endpoint.listens else 10.0)
            except ProtocolError:
                raise
            except InputError as exc:
                if endpoint.kind is not SourceKind.NETWORK:
                    raise
                failures += 1
                if policy.attempts is not None and failures > policy.attempts:
                    raise InputError(
                        f"{endpoint}: gave up after {failures - 1} retries: {exc}"
                    ) from exc
                backoff = policy.backoff(failures)
                self._inbox.put(Lost(self._session, str(exc), backoff))
                self._stop.wait(backoff)
                continue
            self._session += 1
            delivered = 0
            try:
                delivered, reason = self._pump(container)
            except av.error.FFmpegError as exc:
                reason = f"read failed: {exc}"
            finally:
                self._inbox.put(Release(container))
            if self._stop.is_set():
                return "stopped"
            if endpoint.kind is SourceKind.FILE:
                return reason
            failures = 1 if delivered else failures + 1
            if policy.attempts is not None and failures > policy.attempts:
                return f"gave up after {policy.attempts} retries ({reason})"
            backoff = policy.backoff(failures)
            self._inbox.put(Lost(self._session, reason, backoff))
            self._stop.wait(backoff)
        return "stopped"

    def _pump(self, container: av.container.InputContainer) -> tuple[int, str]:
        if not container.streams.video:
            raise InputError(f"{self._endpoint}: the source has no video stream")
        video = _live_picture(container, str(self._endpoint))
        others = [s for s in container.streams if s.index != video.index]
        self._inbox.put(Connected(self._session, video, others))
        pacer = _Pacer(self._stop) if self._endpoint.kind is SourceKind.FILE else None
        try:
            return self._demux(container, video, pacer)
        finally:
            # a live source ends by going silent: what the decoder still holds is flushed
            try:
                for frame in video.decode(None):
                    self._frame(frame)
            except av.error.FFmpegError:
                pass

    def _frame(self, frame: av.VideoFrame) -> None:
        self._inbox.put(SourceFrame(self._index, frame, time.monotonic(), self._session))
        self._index += 1

    def _demux(
        self,
        container: av.container.InputContainer,
        video: av.video.stream.VideoStream,
        pacer: _Pacer | None,
    ) -> tuple[int, str]:
        delivered = 0
        for packet in container.demux():
            if self._stop.is_set():
                return delivered, "stopped"
            if packet.stream.index != video.index:
                if packet.size:  # skip only empty flush packets
                    if pacer is not None:
                        pacer.wait(packet)
                    self._inbox.put(SourcePacket(packet, self._session, packet.stream.index))
                continue
            if pacer is not None and packet.size:
                pacer.wait(packet)
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as exc:  # a lost datagram; the next keyframe heals
                logger.debug("undecodable video packet: %s", exc)
                continue
            for frame in frames:
                assert isinstance(frame, av.VideoFrame)
                self._frame(frame)
                delivered += 1
        return delivered, "end of stream"
