"""The live engine: the loop that holds each frame at most the delay budget, asks the policy
how to mask it (``_policy``), renders, encodes and muxes it, copies every other stream's
packets, and writes the record as it goes.

Three threads, joined by bounded queues::

    reader (demux, decode, reconnect)  --Inbox-->  engine (track, mask, encode, mux, record)
                                                     |  ^
                                                 job |  | result (one in flight)
                                                     v  |
                                                  detection worker (in process or gRPC)

A frame that is older than ``max_lag`` when its turn comes (the machine cannot encode at the
input's rate) is dropped, never sent unmasked; drops are counted in the record and metrics.
Audio and every other stream are copied as packets as they arrive; the muxer interleaves
them with the (delayed) video.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum

import av
from av.video.reformatter import VideoReformatter

from veil.core import Detector, Mask, Offset, Upright, whole_frame
from veil.mask import by_track, render_frame
from veil.media import LiveSink, sample_aspect
from veil.track import CameraMotion, CutDetector, grey_thumbnail

from ._config import LiveConfig
from ._endpoints import Endpoint
from ._inbox import (
    Connected,
    Crashed,
    End,
    Inbox,
    Lost,
    Media,
    Release,
    Result,
    SourceFrame,
    SourcePacket,
)
from ._policy import Decision, LivePolicy, Mode
from ._predict import Predictor
from ._reader import Reader
from ._record import (
    DetectorBack,
    DetectorFailed,
    DetectorGone,
    FrameDropped,
    FrameSent,
    RecordWriter,
    SinkOpened,
    SourceLost,
)
from ._stats import LiveStats
from ._timeline import Sessions
from ._worker import Worker

logger = logging.getLogger(__name__)

#: Frames back the camera's position is kept for a detection that comes back after its frame
#: went out (the inbox holds 64 frames); an older one is placed at the camera's position now.
_POSITIONS_KEPT = 512

__all__ = ["EndKind", "Ending", "Engine"]


class EndKind(Enum):
    SOURCE = "source"  # the reader is done: the source ended or was given up on
    STOPPED = "stopped"  # the stop event: SIGINT/SIGTERM, or the caller
    OUTAGE = "outage"  # the detector gone longer than the delay, with OutagePolicy.STOP


@dataclass(frozen=True)
class Ending:
    """How a run ended; ``reason`` is the summary's ``ended``."""

    kind: EndKind
    reason: str


@dataclass
class _Pending:
    """A frame held until its detection is back or its deadline comes."""

    index: int
    frame: av.VideoFrame
    arrival: float
    deadline: float
    session: int
    #: the camera's translation since the frame before, and its position (the translations
    #: summed since the first frame), measured on arrival: predictions move with it
    motion: Offset
    offset: Offset
    submitted: bool = False
    detected: list[Mask] | None = None
    failed: bool = False


@dataclass(frozen=True)
class _Live:
    """What the first frame starts: the detection worker, the tracks, the policy (all need
    the stream's frame rate, size or pixel aspect)."""

    worker: Worker
    predictor: Predictor
    policy: LivePolicy


def _masked_whole(frame: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
    """The whole frame masked: scaled down to 1/64 and back up (swscale, ~3 ms at 720p here,
    where ``render_frame``'s full-frame blend costs ~60 ms: too slow to be the fallback of a
    live stream). Blocks of 64 px leave no face structure at any size that fits in a frame."""
    small = frame.reformat(
        max(2, frame.width // 64), max(2, frame.height // 64), pix_fmt, interpolation="AREA"
    )
    out = small.reformat(frame.width, frame.height, pix_fmt, interpolation="BILINEAR")
    out.pts = frame.pts
    out.color_range = frame.color_range
    out.colorspace = frame.colorspace
    return out


class Engine:
    """One live run's loop and what it holds (see the module docstring): :meth:`run` until
    the source ends, ``stop`` is set or an outage stops it; :meth:`close` finishes the sink."""

    def __init__(
        self,
        source: Endpoint,
        sink: Endpoint,
        detector: Detector,
        config: LiveConfig,
        record: RecordWriter,
        stats: LiveStats,
        stop: threading.Event,
    ) -> None:
        self._source, self._sink_endpoint = source, sink
        self._detector = detector
        self._config = config
        self._record = record
        self._stats = stats
        self._stop = stop
        self._inbox = Inbox(max_frames=64, max_packets=4096)
        self._reader = Reader(source, config, self._inbox, stop)
        self._sessions = Sessions(str(source), record)
        self._sink: LiveSink | None = None  # opened by the first frame
        self._live: _Live | None = None  # started by the first frame
        self._pending: deque[_Pending] = deque()
        self._by_index: dict[int, _Pending] = {}
        self._early: deque[SourcePacket] = deque(maxlen=4096)  # packets before the sink
        # hard cuts and the camera's motion, measured on arrival: cheap (one 160 px grey thumbnail)
        self._shots = CutDetector()
        self._camera = CameraMotion()
        self._thumbnails = VideoReformatter()  # the frame thread's (``_on_frame``)
        self._offset: Offset = (0.0, 0.0)
        # the camera's position at recent frames, for detections that come back after their
        # frame went out (late): pruned to the frames a detection may still come back for
        self._positions: dict[int, Offset] = {}
        self._encode_s = 0.0  # render + encode time per frame (moving average)
        self._ending: Ending | None = None

    # ----- the loop

    def run(self) -> Ending:
        self._reader.start()
        try:
            while self._ending is None and not self._stop.is_set():
                media, results, dropped = self._inbox.take(self._wait_s(time.monotonic()))
                self._on_results(results, dropped)
                for thing in media:
                    self._on_media(thing)
                if results and self._pending:  # the detector is free: give it the newest frame
                    self._maybe_submit(self._pending[-1])
                self._emit_ready(final=False)
            ending = self._ending or Ending(EndKind.STOPPED, "stopped")
            self._stop.set()
            self._inbox.close()
            self._drain()
            return ending
        finally:
            self._stop.set()
            self._inbox.close()
            if self._live is not None:
                self._live.worker.stop()

    def _wait_s(self, now: float) -> float:
        if not self._pending:
            return 0.1
        return min(0.1, max(0.0, self._pending[0].deadline - now))

    def _drain(self) -> None:
        """Send what is pending (each frame waits at most until its deadline)."""
        first = True
        while self._pending or first:
            first = False
            media, results, dropped = self._inbox.take(self._wait_s(time.monotonic()))
            self._on_results(results, dropped)
            for thing in media:  # already read: frames are sent masked, packets copied
                if isinstance(thing, SourceFrame | SourcePacket | Release):
                    self._on_media(thing)
            self._emit_ready(final=True)

    def _on_results(self, results: list[Result], dropped: list[SourceFrame]) -> None:
        for result in results:
            self._on_result(result)
        for item in dropped:
            self._stats.frames_in += 1
            self._drop(item.index, item.frame, "ingest queue full")

    # ----- media from the reader

    def _on_media(self, item: Media) -> None:
        match item:
            case SourceFrame():
                self._on_frame(item)
            case SourcePacket():
                if self._sink is None:
                    if len(self._early) == self._early.maxlen:
                        self._stats.drop("packet before first video frame")
                    self._early.append(item)
                else:
                    self._copy(item)
            case Connected():
                self._sessions.connected(item)
            case Lost():
                self._stats.reconnects += 1
                logger.warning(
                    "%s: lost (%s); reconnecting in %.1f s",
                    self._source,
                    item.reason,
                    item.retry_in_s,
                )
                self._record.write(
                    SourceLost(session=item.session, reason=item.reason, retry_in_s=item.retry_in_s)
                )
            case End():
                self._ending = Ending(EndKind.SOURCE, item.reason)
            case Release():
                item.container.close()
            case Crashed():
                raise item.error

    def _copy(self, item: SourcePacket) -> None:
        assert self._sink is not None
        out_index = self._sessions.stream_of(item)
        if out_index is None or out_index not in self._sink.streams:
            self._stats.packets_unmapped += 1
            return
        self._sessions.shift(item)
        self._sink.copy(item.packet, out_index)
        self._stats.packets_copied += 1

    def _on_frame(self, item: SourceFrame) -> None:
        self._stats.frames_in += 1
        if self._sink is None:
            self._open(item)
        assert self._live is not None
        thumbnail = grey_thumbnail(item.frame, self._thumbnails)
        cut = self._shots.is_cut(thumbnail)
        if cut:
            self._live.policy.cut(item.index)
        motion = self._camera.measure(thumbnail, (item.frame.width, item.frame.height), cut=cut)
        self._offset = (self._offset[0] + motion[0], self._offset[1] + motion[1])
        self._positions[item.index] = self._offset
        if len(self._positions) > 2 * _POSITIONS_KEPT:
            oldest = item.index - _POSITIONS_KEPT
            self._positions = {i: o for i, o in self._positions.items() if i > oldest}
        pending = _Pending(
            index=item.index,
            frame=item.frame,
            arrival=item.arrival,
            deadline=item.arrival + self._config.delay_s - self._encode_s,
            session=item.session,
            motion=motion,
            offset=self._offset,
        )
        self._pending.append(pending)
        self._by_index[item.index] = pending
        self._maybe_submit(pending)

    def _open(self, item: SourceFrame) -> None:
        """The first frame: the sink opened (from the first session's streams), the tracks,
        the policy and the detection worker started."""
        first, rate, config = self._sessions.first, self._sessions.rate, self._config
        assert first is not None
        self._sink = LiveSink(
            self._sink_endpoint,
            video=first.video,
            first=item.frame,
            copied=first.others,
            encoder=config.encoder,
            rate=rate,
            max_interleave_s=max(1.0, 2 * config.max_lag),
        )
        predictor = Predictor(
            config, rate, self._detector.info.members, (item.frame.width, item.frame.height)
        )
        rotation = float(item.frame.rotation or 0)
        worker = Worker(Upright(self._detector, rotation), self._inbox, sample_aspect(first.video))
        self._live = _Live(worker, predictor, LivePolicy(config, rate, time.monotonic))
        worker.start()
        self._record.write(
            SinkOpened(
                sink=str(self._sink_endpoint),
                format=self._sink.container.format.name,
                encoder=config.encoder.to_json(self._sink.codec),
                tracker=predictor.tracker.to_json(),
            )
        )
        while self._early:
            self._copy(self._early.popleft())

    # ----- detection

    def _maybe_submit(self, pending: _Pending) -> None:
        live = self._live
        if live is None or pending.submitted or pending.detected is not None:
            return
        if not live.policy.wants(pending.index):
            return
        stride = live.policy.sent(pending.index)
        if stride is not None:
            self._stats.stride = stride
            self._stats.strides.append(stride)
        live.worker.submit(pending.index, pending.frame)
        pending.submitted = True

    def _on_result(self, result: Result) -> None:
        assert self._live is not None
        policy = self._live.policy
        pending = self._by_index.get(result.index)
        if result.detections is None:
            self._stats.detector_errors += 1
            error = result.error or "unknown error"
            if policy.failed(error):
                logger.error("detector failed: %s", error)
                self._record.write(DetectorFailed(frame=result.index, error=error))
            if pending is not None:
                pending.failed = True
            return
        down = policy.answered(result.index, result.seconds)
        if down is not None:
            logger.warning("detector is back after %.1f s", down)
            self._record.write(DetectorBack(frame=result.index, down_s=down))
        self._stats.detections += 1
        self._stats.detect_s.append(result.seconds)
        offset = self._positions.get(result.index, self._offset)
        masks = self._live.predictor.detected(result.index, result.detections, offset)
        if pending is not None:
            pending.detected = masks
        else:
            self._stats.detections_late += 1

    # ----- sending frames

    def _emit_ready(self, *, final: bool) -> None:
        while self._pending:
            now = time.monotonic()
            head = self._pending[0]
            assert self._live is not None
            settled = head.detected is not None or head.failed
            policy = self._live.policy
            if not policy.ready(head.deadline, settled=settled, submitted=head.submitted):
                return
            self._pending.popleft()
            del self._by_index[head.index]
            if now - head.arrival > self._config.max_lag and not final:
                self._drop(head.index, head.frame, "lag")
                continue
            self._send(head)

    def _masks(self, pending: _Pending, decision: Decision) -> list[Mask]:
        assert self._live is not None
        predictor = self._live.predictor
        match decision.mode:
            case Mode.DETECTED:
                assert pending.detected is not None
                present = {m.track for m in pending.detected}
                predicted = predictor.predicted(pending.index, pending.offset, 0.0, exclude=present)
                return sorted(set(pending.detected) | set(predicted))
            case Mode.POLICY:
                return [whole_frame(pending.frame.width, pending.frame.height)]
            case Mode.LATE:
                return predictor.predicted(pending.index, pending.offset, self._config.late_margin)
            case Mode.TRACKED:
                return predictor.predicted(pending.index, pending.offset, 0.0)

    def _send(self, pending: _Pending) -> None:
        assert self._sink is not None and self._live is not None
        decision = self._live.policy.decide(
            pending.index,
            detected=pending.detected is not None,
            submitted=pending.submitted,
            failed=pending.failed,
        )
        if decision.outage is not None and decision.outage.first:
            gone, error = decision.outage.gone_s, decision.outage.error
            logger.error("detector gone for %.1f s (%s): masking whole frames", gone, error)
            self._record.write(DetectorGone(frame=pending.index, gone_s=gone, error=error))
        masks = self._masks(pending, decision)
        if self._live.policy.stops(decision):
            self._ending = self._ending or Ending(EndKind.OUTAGE, f"stopped: {decision.reason}")
        started = time.perf_counter()
        pix_fmt = self._config.encoder.pix_fmt
        if decision.mode is Mode.POLICY:
            frame = _masked_whole(pending.frame, pix_fmt)
        else:
            groups = by_track(masks)
            frame = render_frame(pending.frame, groups, self._config.style, pix_fmt=pix_fmt)
        frame.pts = self._sessions.out_pts(pending.frame, pending.session, self._sink.time_base)
        frame.time_base = self._sink.time_base
        self._sink.encode(frame)
        spent = time.perf_counter() - started
        if self._stats.frames_out:  # the first frame also starts the encoder: not typical
            # capped: a stalled machine must not make every frame leave at once
            spent = min(spent, self._config.delay_s / 2)
            alpha = 0.1 if self._encode_s else 1.0
            self._encode_s += alpha * (spent - self._encode_s)
        latency = time.monotonic() - pending.arrival
        self._stats.frame(decision.mode, latency)
        self._live.policy.adapt(latency)
        self._record.write(
            FrameSent(
                frame=pending.index,
                pts=pending.frame.pts,
                out_pts=frame.pts,
                session=pending.session,
                mode=decision.mode,
                latency_s=latency,
                stride=self._stats.stride,
                motion=pending.motion,
                masks=tuple(masks),
                policy=decision.reason,
            )
        )
        if self._ending is not None and self._ending.kind is EndKind.OUTAGE:
            self._stop.set()

    def _drop(self, index: int, frame: av.VideoFrame, reason: str) -> None:
        self._stats.drop(reason)
        self._record.write(FrameDropped(frame=index, pts=frame.pts, reason=reason))

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
