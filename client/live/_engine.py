"""Real-time mode (``veil live``): a stream in, the same stream out with every face masked,
within a bounded delay, whatever the detector does.

Three threads, joined by bounded queues::

    reader (demux, decode, reconnect)  --_Inbox-->  engine (track, mask, encode, mux, record)
                                                       |  ^
                                                   job |  | result (one in flight)
                                                       v  |
                                                    detection worker (in process or gRPC)

The engine holds each frame at most ``delay`` seconds. A frame leaves with

* ``detected``: its own detection came back in time; masks = the raw detections plus the
  constant-velocity predictions of every other live track (the tracker adds, never removes);
* ``tracked``: it was not sent to the detector (detection runs on every ``stride``-th frame,
  the stride adapting to the detector's speed); masks = track predictions grown with
  staleness, and, when a later frame's detection came back while it waited, those boxes
  carried back to it (live mode's only look-ahead, bounded by the delay);
* ``late``: its detection was not back by the deadline (or failed); masks = predictions
  grown by a safety margin (``late_margin``);
* ``policy``: the detector has been gone (failing, or silent past its usual time) for longer
  than the delay, or has not answered yet since the start; the whole frame is masked, or
  the stream stops (``OutagePolicy.STOP``). Likewise every frame from a hard cut (a new
  shot: no track of the old one says where its faces are) until a detection of a frame at
  or after the cut has come back; the first frame after a cut is sent to the detector at
  once. Also (masked whole, never a stop) every frame
  whose surrounding detections are further apart than the trust horizon
  (``LiveConfig.trust_s``, ``extrapolate_s``): fail closed when the detector cannot keep up.
  A frame is never passed through unmasked.

A frame that is older than ``max_lag`` when its turn comes (the machine cannot encode at the
input's rate) is dropped, never sent unmasked; drops are counted in the record and metrics.
Audio and every other stream are copied as packets as they arrive; the muxer interleaves
them with the (delayed) video.

The detection record streams out as JSON Lines (``veil.live-record/1``): a header, one line
per frame (mode, masks, latency, stride), events (connected, lost, detector down/back), and
a summary line when the run ends, on SIGINT/SIGTERM too.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import av
import av.error
from av.video.reformatter import VideoReformatter

from veil import __version__
from veil.core import (
    Box,
    ConfigError,
    Detections,
    Detector,
    DetectorError,
    Image,
    InputError,
    Mask,
    Origin,
    Upright,
    backoff,
    centre,
    display_size,
    fit_size,
    whole_frame,
)
from veil.mask import Style, render_frame, single_threaded_opencv
from veil.media import Picture, sample_aspect
from veil.track import Associator, CutDetector, TrackerConfig

from ._io import (
    Endpoint,
    LiveEncoder,
    LiveSink,
    ProtocolError,
    SourceKind,
    open_source,
    redact,
    sink_endpoint,
    source_endpoint,
)

logger = logging.getLogger(__name__)

__all__ = ["LiveConfig", "LiveStats", "OutagePolicy", "ReconnectPolicy", "run_live"]

RECORD_SCHEMA = "veil.live-record/1"


class OutagePolicy(StrEnum):
    """What happens when the detector is gone for longer than the delay budget."""

    MASK = "mask"  # mask every frame whole until it is back
    STOP = "stop"  # finish the output (all masked) and stop with an error


class Mode(StrEnum):
    """How a frame's masks were decided (see the module docstring)."""

    DETECTED = "detected"
    TRACKED = "tracked"
    LATE = "late"
    POLICY = "policy"


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """Reconnecting to a lost network source: sleep ``initial_s``, ``multiplier`` times more
    after each failure, at most ``max_s``; ``attempts`` failures in a row end the run
    (None: never give up)."""

    initial_s: float = 0.5
    max_s: float = 10.0
    multiplier: float = 2.0
    attempts: int | None = None

    def backoff(self, failures: int) -> float:
        return backoff(
            failures, initial=self.initial_s, multiplier=self.multiplier, ceiling=self.max_s
        )


@dataclass(frozen=True, kw_only=True)
class LiveConfig:
    """Live-mode settings. Times in seconds; shares of the face box."""

    delay_s: float = 0.2
    on_outage: OutagePolicy = OutagePolicy.MASK
    #: extra growth of predicted boxes for a frame whose own detection is late or failed
    late_margin: float = 0.3
    #: how long a track keeps being predicted after its last detection
    track_s: float = 1.0
    #: growth of a predicted box per frame since its track's last detection (live mode has
    #: no look-ahead to interpolate with, and the camera may pan: more than offline's 0.03)
    growth_per_frame: float = 0.06
    #: the trust horizon (fail closed): a frame is masked from its detection or from track
    #: predictions only when the detections that came back around it are at most this much
    #: media time apart, in whole frames, at least one (0.12 s: 3 frames at 25 or 30 fps):
    #: its own and the one before it (a face missed in one is in the other's tracks), the
    #: two it lies between (the later one's boxes carried back: for a track seen in both, an
    #: interpolation), or, after the newest one, that one and the one before it. Otherwise it
    #: is masked whole. The trade-off: when the detector cannot keep up (a stride above the
    #: horizon: a slow detector, a large frame, a loaded CPU), or its answer is not back
    #: within the delay, frames are masked whole; raising it (and ``extrapolate_s``) masks
    #: fewer whole at the risk of a leak (a face the detector missed, one that entered since,
    #: or a prediction outrun by the camera)
    trust_s: float = 0.12
    #: the horizon for a frame after the newest detection that came back (none after it yet:
    #: not sent to the detector, or its own detection late): predictions extrapolated this far
    #: (in whole frames, may be 0: never) are trusted (0.04 s: 1 frame at 25 or 30 fps).
    #: Shorter than ``trust_s``: a face that entered since, or a camera that accelerates, pans
    #: or zooms, is not in the extrapolation, and would show
    extrapolate_s: float = 0.04
    #: extra growth of a predicted box, per frame of staleness, as a share of the distance its
    #: track (or, for a track with no velocity yet, the scene's median track) moves per frame:
    #: the velocity estimate's uncertainty (the camera may accelerate, pan or zoom)
    velocity_uncertainty: float = 0.5
    #: frames older than this when their turn comes are dropped (None: max(1 s, 3 x delay))
    max_lag_s: float | None = None
    read_timeout_s: float = 5.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    style: Style = field(default_factory=Style)
    encoder: LiveEncoder = field(default_factory=LiveEncoder)

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_outage", OutagePolicy(self.on_outage))
        if not 0.02 <= self.delay_s <= 30:
            raise ConfigError(f"delay {self.delay_s * 1000:g} ms must be between 20 ms and 30 s")
        if not 0 <= self.late_margin <= 2:
            raise ConfigError(f"late_margin {self.late_margin} must be between 0 and 2")
        if not 0 < self.track_s <= 10:
            raise ConfigError(f"track_s {self.track_s} must be in (0, 10]")
        if not 0 <= self.growth_per_frame <= 0.5:
            raise ConfigError(f"growth_per_frame {self.growth_per_frame} must be in [0, 0.5]")
        if not 0 < self.trust_s <= 10:
            raise ConfigError(f"trust_s {self.trust_s} must be in (0, 10]")
        if not 0 <= self.extrapolate_s <= self.trust_s:
            raise ConfigError(f"extrapolate_s {self.extrapolate_s} must be in [0, trust_s]")
        if not 0 <= self.velocity_uncertainty <= 5:
            raise ConfigError(f"velocity_uncertainty {self.velocity_uncertainty} must be in [0, 5]")
        if self.max_lag_s is not None and self.max_lag_s < self.delay_s:
            raise ConfigError("max_lag_s must be at least the delay")

    def trust_frames(self, rate: Fraction) -> tuple[int, int]:
        """The trust horizons in whole frames at ``rate`` frames per second: between two
        detections (at least one), and after the newest one."""
        between = max(1, math.floor(rate * Fraction(self.trust_s) + Fraction(1, 1000)))
        after = math.floor(rate * Fraction(self.extrapolate_s) + Fraction(1, 1000))
        return between, min(after, between)

    @property
    def max_lag(self) -> float:
        return self.max_lag_s if self.max_lag_s is not None else max(1.0, 3 * self.delay_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "delay_ms": round(self.delay_s * 1000, 3),
            "on_outage": self.on_outage.value,
            "late_margin": self.late_margin,
            "track_s": self.track_s,
            "growth_per_frame": self.growth_per_frame,
            "trust_ms": round(self.trust_s * 1000, 3),
            "extrapolate_ms": round(self.extrapolate_s * 1000, 3),
            "velocity_uncertainty": self.velocity_uncertainty,
            "max_lag_ms": round(self.max_lag * 1000, 3),
        }


# ---------------------------------------------------------------------------------------------
# what travels between the threads


@dataclass
class _Frame:
    index: int
    frame: av.VideoFrame
    arrival: float
    session: int


@dataclass
class _Packet:
    packet: av.Packet
    session: int
    stream: int  # its input stream's index, read before anything else can happen to it


@dataclass
class _Connected:
    session: int
    video: av.video.stream.VideoStream
    others: list[av.stream.Stream]


@dataclass
class _Lost:
    session: int
    reason: str
    retry_in_s: float


@dataclass
class _End:
    reason: str


@dataclass
class _Release:
    """A finished session's input, closed by the engine once it has consumed everything read
    from it (packets and streams still point into the demuxer until then)."""

    container: av.container.InputContainer


@dataclass
class _Crashed:
    error: BaseException


@dataclass
class _Result:
    index: int
    detections: Detections | None
    error: str | None
    seconds: float


_Media = _Frame | _Packet | _Connected | _Lost | _End | _Crashed | _Release


class _Inbox:
    """Reader items and detection results, for the engine. Bounded: when ``max_frames`` frames
    wait, the oldest waiting frame is dropped (and reported); packets make the reader wait."""

    def __init__(self, max_frames: int, max_packets: int) -> None:
        self._cond = threading.Condition()
        self._media: deque[_Media] = deque()
        self._results: deque[_Result] = deque()
        self._dropped: list[_Frame] = []
        self._frames = self._packets = 0
        self._max_frames, self._max_packets = max_frames, max_packets
        self.closed = False

    def put(self, item: _Media) -> None:
        with self._cond:
            if isinstance(item, _Frame):
                if self._frames >= self._max_frames:
                    for k, old in enumerate(self._media):
                        if isinstance(old, _Frame):
                            del self._media[k]
                            self._dropped.append(old)
                            self._frames -= 1
                            break
                self._frames += 1
            elif isinstance(item, _Packet):
                while self._packets >= self._max_packets and not self.closed:
                    self._cond.wait(0.1)
                self._packets += 1
            self._media.append(item)
            self._cond.notify_all()

    def put_result(self, result: _Result) -> None:
        with self._cond:
            self._results.append(result)
            self._cond.notify_all()

    def take(self, timeout: float) -> tuple[list[_Media], list[_Result], list[_Frame]]:
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


# ---------------------------------------------------------------------------------------------
# the reader thread


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


class _Reader(threading.Thread):
    """Demuxes and decodes the source; reconnects to a lost network source with backoff."""

    def __init__(
        self, endpoint: Endpoint, config: LiveConfig, inbox: _Inbox, stop: threading.Event
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
            self._inbox.put(_End(self._run()))
        except BaseException as exc:
            self._inbox.put(_Crashed(exc))

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
                self._inbox.put(_Lost(self._session, str(exc), backoff))
                self._stop.wait(backoff)
                continue
            self._session += 1
            delivered = 0
            try:
                delivered, reason = self._pump(container)
            except av.error.FFmpegError as exc:
                reason = f"read failed: {exc}"
            finally:
                self._inbox.put(_Release(container))
            if self._stop.is_set():
                return "stopped"
            if endpoint.kind is SourceKind.FILE:
                return reason
            failures = 1 if delivered else failures + 1
            if policy.attempts is not None and failures > policy.attempts:
                return f"gave up after {policy.attempts} retries ({reason})"
            backoff = policy.backoff(failures)
            self._inbox.put(_Lost(self._session, reason, backoff))
            self._stop.wait(backoff)
        return "stopped"

    def _pump(self, container: av.container.InputContainer) -> tuple[int, str]:
        if not container.streams.video:
            raise InputError(f"{self._endpoint}: the source has no video stream")
        video = _live_picture(container, str(self._endpoint))
        others = [s for s in container.streams if s.index != video.index]
        self._inbox.put(_Connected(self._session, video, others))
        pacer = _Pacer(self._stop) if self._endpoint.kind is SourceKind.FILE else None
        try:
            return self._demux(container, video, pacer)
        finally:
            # a live source ends by going silent: what the decoder still holds is flushed
            try:
                for frame in video.decode(None):
                    self._inbox.put(_Frame(self._index, frame, time.monotonic(), self._session))
                    self._index += 1
            except av.error.FFmpegError:
                pass

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
                    self._inbox.put(_Packet(packet, self._session, packet.stream.index))
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
                self._inbox.put(_Frame(self._index, frame, time.monotonic(), self._session))
                self._index += 1
                delivered += 1
        return delivered, "end of stream"


# ---------------------------------------------------------------------------------------------
# the detection worker


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


class _Worker(threading.Thread):
    """Runs the detector on one frame at a time. A daemon: a hung detector cannot keep the
    process alive; the engine notices the silence and masks by policy."""

    def __init__(
        self, detector: Detector, inbox: _Inbox, sample_aspect: Fraction = Fraction(1)
    ) -> None:
        super().__init__(name="veil-live-detect", daemon=True)
        self._detector = detector
        self._inbox = inbox
        self._sample_aspect = sample_aspect
        self._jobs: queue.Queue[tuple[int, av.VideoFrame] | None] = queue.Queue(maxsize=1)
        self._max_side = detector.info.max_side
        self._scaler = VideoReformatter()

    def submit(self, index: int, frame: av.VideoFrame) -> None:
        self._jobs.put_nowait((index, frame))

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):  # busy: it stops after the job (or never: hung)
            self._jobs.put_nowait(None)

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            index, frame = job
            started = time.perf_counter()
            try:
                # detected as displayed (non-square pixels made square), masked as stored
                display = display_size(frame.width, frame.height, self._sample_aspect)
                w, h = fit_size(*display, self._max_side)
                # its own scaler: the frame's cached one is the engine's (render_frame), and
                # two threads in one SwsContext crash the process
                rgb = self._scaler.reformat(frame, w, h, "rgb24", interpolation="AREA")
                image: Image = rgb.to_ndarray()  # type: ignore[assignment]
                results = self._detector.detect([image], [display])
                if len(results) != 1:
                    raise DetectorError(f"the detector returned {len(results)} results for 1")
                found = results[0]
                if display != (frame.width, frame.height):
                    found = found.scaled(frame.width / display[0], frame.height / display[1])
                result = _Result(index, found, None, time.perf_counter() - started)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                result = _Result(index, None, error, time.perf_counter() - started)
            self._inbox.put_result(result)


# ---------------------------------------------------------------------------------------------
# statistics, metrics and the record


class LiveStats:
    """Counters of a live run; read by the summary, the record and the Prometheus exporter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.by_mode = {mode.value: 0 for mode in Mode}
        self.dropped: dict[str, int] = {}
        self.detections = 0
        self.detections_late = 0
        self.detector_errors = 0
        self.reconnects = 0
        self.packets_copied = 0
        self.packets_unmapped = 0
        self.lag_s = 0.0
        self.stride = 0
        self.latencies: deque[float] = deque(maxlen=1 << 16)
        self.strides: deque[int] = deque(maxlen=1 << 12)
        self.detect_s: deque[float] = deque(maxlen=1 << 12)

    def frame(self, mode: Mode, latency: float) -> None:
        with self._lock:
            self.frames_out += 1
            self.by_mode[mode.value] += 1
            self.lag_s = latency
            self.latencies.append(latency)

    def drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @staticmethod
    def _quantile(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            latencies = list(self.latencies)
            strides = list(self.strides)[-300:]
            detect = list(self.detect_s)

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_by_mode": dict(self.by_mode),
            "frames_masked_by_policy": self.by_mode[Mode.POLICY.value],
            "frames_dropped": dict(self.dropped),
            "detections": self.detections,
            "detections_late": self.detections_late,
            "detector_errors": self.detector_errors,
            "reconnects": self.reconnects,
            "packets_copied": self.packets_copied,
            "packets_unmapped": self.packets_unmapped,
            "latency_ms": {
                "p50": ms(self._quantile(latencies, 0.5)),
                "p95": ms(self._quantile(latencies, 0.95)),
                "max": ms(max(latencies) if latencies else None),
            },
            "detect_ms_p50": ms(self._quantile(detect, 0.5)),
            "stride_recent_mean": round(sum(strides) / len(strides), 2) if strides else None,
        }


def _start_metrics(address: str, stats: LiveStats) -> Any:
    """Serve ``stats`` as Prometheus metrics on ``address`` (HOST:PORT). prometheus-client is
    imported here only: the client runs without it unless ``--metrics`` is asked for."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError as exc:
        raise ConfigError(
            f"--metrics needs prometheus-client ({exc}); install veil[server] or "
            "pip install prometheus-client"
        ) from exc
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--metrics {address!r}: expected HOST:PORT")

    class _Collector:
        def collect(self) -> Any:
            s = stats.summary()
            lag = GaugeMetricFamily("veil_live_lag_seconds", "Latency of the last frame sent")
            lag.add_metric([], stats.lag_s)
            yield lag
            stride = GaugeMetricFamily("veil_live_stride", "Frames per detection, recently")
            stride.add_metric([], float(stats.stride))
            yield stride
            quant = GaugeMetricFamily(
                "veil_live_latency_seconds", "Added latency per frame", labels=["quantile"]
            )
            for q in ("p50", "p95"):
                value = s["latency_ms"][q]
                quant.add_metric([q[1:]], (value or 0.0) / 1000)
            yield quant
            frames = CounterMetricFamily(
                "veil_live_frames", "Frames sent, by how they were masked", labels=["mode"]
            )
            for mode, count in s["frames_by_mode"].items():
                frames.add_metric([mode], count)
            yield frames
            policy = CounterMetricFamily(
                "veil_live_frames_masked_by_policy", "Frames masked whole (detector gone)"
            )
            policy.add_metric([], s["frames_masked_by_policy"])
            yield policy
            dropped = CounterMetricFamily(
                "veil_live_frames_dropped", "Frames never sent (never unmasked)", labels=["reason"]
            )
            for reason, count in s["frames_dropped"].items():
                dropped.add_metric([reason], count)
            yield dropped
            for name, value, text in (
                ("veil_live_detector_errors", s["detector_errors"], "Detector calls that failed"),
                ("veil_live_reconnects", s["reconnects"], "Times the source was reconnected"),
                ("veil_live_detections_late", s["detections_late"], "Detections back too late"),
            ):
                counter = CounterMetricFamily(name, text)
                counter.add_metric([], value)
                yield counter

    registry = CollectorRegistry()
    registry.register(_Collector())  # type: ignore[arg-type]
    try:
        started = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics {address}: cannot listen ({exc})") from exc
    return started[0] if isinstance(started, tuple) else None


class _RecordWriter:
    """The detection record as JSON Lines, flushed line by line while frames go out."""

    def __init__(self, path: Path | None) -> None:
        self._fh: TextIO | None = None
        if path is not None:
            try:
                self._fh = path.open("w", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{path}: cannot write the record ({exc})") from exc

    def write(self, document: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(document, separators=(",", ":")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------------------------------
# the engine


@dataclass
class _Pending:
    index: int
    frame: av.VideoFrame
    arrival: float
    deadline: float
    session: int
    submitted: float | None = None
    detected: list[Mask] | None = None
    failed: bool = False


def _whole(frame: av.VideoFrame) -> Mask:
    return whole_frame(frame.width, frame.height)


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


class _Engine:
    def __init__(
        self,
        source: Endpoint,
        sink: Endpoint,
        detector: Detector,
        config: LiveConfig,
        record: _RecordWriter,
        stats: LiveStats,
        stop: threading.Event,
    ) -> None:
        self._source, self._sink_endpoint = source, sink
        self._detector = detector
        self._config = config
        self._record = record
        self._stats = stats
        self._stop = stop
        self._delay = config.delay_s
        self._inbox = _Inbox(max_frames=64, max_packets=4096)
        self._reader = _Reader(source, config, self._inbox, stop)
        self._worker: _Worker | None = None
        self._sink: LiveSink | None = None
        self._associator: Associator | None = None
        self._scores: dict[int, float] = {}
        self._pending: deque[_Pending] = deque()
        self._by_index: dict[int, _Pending] = {}
        self._early: deque[_Packet] = deque(maxlen=4096)
        self._first: _Connected | None = None
        self._video_tb: dict[int, Fraction | None] = {}
        self._maps: dict[int, dict[int, int]] = {}
        self._offsets: dict[int, Fraction] = {}
        self._rate = Fraction(30)
        self._last_out_s = Fraction(0)
        self._last_pts: int | None = None
        self._in_flight: tuple[int, float] | None = None  # (frame index, submitted at)
        self._last_submitted: int | None = None
        self._min_stride = 1
        self._detect_ewma = 0.0
        self._encode_ewma = 0.0
        self._ok_once = False
        # frames whose detection came back (in order: one in flight at a time), and each
        # track's last detected box and velocity (px per frame), for the trust horizon and
        # the velocity-uncertainty growth of predictions
        self._detected: deque[int] = deque(maxlen=1024)
        self._motion: dict[int, tuple[int, Box, tuple[float, float]]] = {}
        # hard cuts seen (frame indices, in order): measured on arrival, cheap (32x32 grey)
        self._shots = CutDetector()
        self._cuts: deque[int] = deque(maxlen=64)
        self._fail_since: float | None = None
        self._failures = 0
        self._last_error = ""
        self._retry_at = 0.0
        self._gone_logged = False
        self._gone_at: float | None = None
        self._ended: str | None = None
        self._started = time.monotonic()

    # ----- the loop

    def run(self) -> str:
        self._reader.start()
        try:
            while self._ended is None and not self._stop.is_set():
                media, results, dropped = self._inbox.take(self._wait_s(time.monotonic()))
                for result in results:
                    self._on_result(result)
                for item in dropped:
                    self._stats.frames_in += 1
                    self._drop(item.index, item.frame, "ingest queue full")
                for thing in media:
                    self._on_media(thing)
                if results and self._pending:  # the detector is free: give it the newest frame
                    self._maybe_submit(self._pending[-1], time.monotonic())
                self._emit_ready(final=False)
            reason = self._ended or "stopped"
            self._stop.set()
            self._inbox.close()
            self._drain()
            return reason
        finally:
            self._stop.set()
            self._inbox.close()
            if self._worker is not None:
                self._worker.stop()

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
            for result in results:
                self._on_result(result)
            for item in dropped:
                self._stats.frames_in += 1
                self._drop(item.index, item.frame, "ingest queue full")
            for thing in media:  # already read: frames are sent masked, packets copied
                if isinstance(thing, _Frame | _Packet | _Release):
                    self._on_media(thing)
            self._emit_ready(final=True)

    # ----- media from the reader

    def _on_media(self, item: _Media) -> None:
        if isinstance(item, _Frame):
            self._on_frame(item)
        elif isinstance(item, _Packet):
            if self._sink is None:
                if len(self._early) == self._early.maxlen:
                    self._stats.drop("packet before first video frame")
                self._early.append(item)
            else:
                self._copy(item)
        elif isinstance(item, _Connected):
            self._on_connected(item)
        elif isinstance(item, _Lost):
            self._stats.reconnects += 1
            logger.warning(
                "%s: lost (%s); reconnecting in %.1f s", self._source, item.reason, item.retry_in_s
            )
            self._record.write(
                {
                    "event": "source_lost",
                    "session": item.session,
                    "reason": item.reason,
                    "retry_in_s": item.retry_in_s,
                }
            )
        elif isinstance(item, _End):
            self._ended = item.reason
        elif isinstance(item, _Release):
            item.container.close()
        elif isinstance(item, _Crashed):
            raise item.error

    def _on_connected(self, item: _Connected) -> None:
        video = item.video
        self._video_tb[item.session] = video.time_base
        rate = video.average_rate or video.guessed_rate or video.base_rate
        streams = [
            {
                "index": video.index,
                "type": "video",
                "codec": video.codec_context.name,
                "time_base": str(video.time_base),
            }
        ]
        streams += [
            {
                "index": s.index,
                "type": s.type,
                "codec": s.codec_context.name if s.codec_context else None,
                "time_base": str(s.time_base),
            }
            for s in item.others
        ]
        self._record.write(
            {
                "event": "source_connected",
                "session": item.session,
                "rate": str(rate) if rate else None,
                "streams": streams,
            }
        )
        if self._first is None:
            self._first = item
            if rate:
                self._rate = Fraction(rate)
            self._maps[item.session] = {s.index: s.index for s in item.others}
            self._offsets[item.session] = Fraction(0)
            return
        # a reconnect: streams are matched to the first session's by type, in order
        mapping: dict[int, int] = {}
        for kind in {s.type for s in item.others}:
            old = [s for s in self._first.others if s.type == kind]
            new = [s for s in item.others if s.type == kind]
            for a, b in zip(old, new, strict=False):
                mapping[b.index] = a.index
            for extra in new[len(old) :]:
                logger.warning(
                    "%s: stream #%d (%s) appeared on reconnect and is not sent",
                    self._source,
                    extra.index,
                    kind,
                )
        self._maps[item.session] = mapping

    def _offset(self, session: int, t: Fraction) -> Fraction:
        """Seconds added to a session's timestamps: 0 for the first; later sessions continue
        one frame after the last thing sent, so the sink sees time only move forward."""
        if session not in self._offsets:
            self._offsets[session] = self._last_out_s + 1 / self._rate - t
            self._record.write(
                {"event": "timeline", "session": session, "offset_s": float(self._offsets[session])}
            )
        return self._offsets[session]

    def _copy(self, item: _Packet) -> None:
        assert self._sink is not None
        packet = item.packet
        out_index = self._maps.get(item.session, {}).get(item.stream)
        if out_index is None or out_index not in self._sink.streams:
            self._stats.packets_unmapped += 1
            return
        tb = packet.time_base
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is not None and tb is not None:
            offset = self._offset(item.session, ts * tb)
            if offset:
                shift = round(offset / tb)
                if packet.pts is not None:
                    packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
            self._last_out_s = max(self._last_out_s, (ts * tb) + offset)
        self._sink.copy(packet, out_index)
        self._stats.packets_copied += 1

    def _on_frame(self, item: _Frame) -> None:
        self._stats.frames_in += 1
        if self._sink is None:
            self._open(item)
        if self._shots.is_cut(item.frame):
            self._cuts.append(item.index)
        now = time.monotonic()
        pending = _Pending(
            index=item.index,
            frame=item.frame,
            arrival=item.arrival,
            deadline=item.arrival + self._delay - self._encode_ewma,
            session=item.session,
        )
        self._pending.append(pending)
        self._by_index[item.index] = pending
        self._maybe_submit(pending, now)

    def _open(self, item: _Frame) -> None:
        assert self._first is not None
        first = self._first
        self._sink = LiveSink(
            self._sink_endpoint,
            video=first.video,
            first=item.frame,
            copied=first.others,
            encoder=self._config.encoder,
            rate=self._rate,
            max_interleave_s=max(1.0, 2 * self._config.max_lag),
        )
        tracker = self._config.tracker
        gap = min(300, max(tracker.max_gap, round(self._rate * Fraction(self._config.track_s))))
        self._associator = Associator(
            self._live_tracker(gap),
            self._detector.info.members,
            (item.frame.width, item.frame.height),
        )
        rotation = float(item.frame.rotation or 0)
        self._worker = _Worker(
            Upright(self._detector, rotation), self._inbox, sample_aspect(first.video)
        )
        self._worker.start()
        self._record.write(
            {
                "event": "sink_opened",
                "sink": str(self._sink_endpoint),
                "format": self._sink.container.format.name,
                "encoder": self._config.encoder.to_json(self._sink.codec),
                "tracker": self._associator_config_json(gap),
            }
        )
        while self._early:
            self._copy(self._early.popleft())

    def _live_tracker(self, gap: int) -> TrackerConfig:
        # following lost faces and second looks are offline passes (frames held, the
        # detector's answers in order): live mode runs neither, and its record says so
        return replace(
            self._config.tracker,
            max_gap=gap,
            growth_per_frame=self._config.growth_per_frame,
            follow_span=0,
            recheck=0,
        )

    def _associator_config_json(self, gap: int) -> dict[str, Any]:
        return self._live_tracker(gap).to_json()

    # ----- detection

    def _maybe_submit(self, pending: _Pending, now: float) -> None:
        if self._worker is None or self._in_flight is not None or now < self._retry_at:
            return
        last = self._last_submitted
        if pending.submitted is not None or pending.detected is not None:
            return
        cut = self._cut_before(pending.index)
        fresh_cut = cut is not None and (last is None or last < cut)
        if last is not None and pending.index - last < self._min_stride and not fresh_cut:
            return
        if last is not None:
            self._stats.stride = pending.index - last
            self._stats.strides.append(pending.index - last)
        self._worker.submit(pending.index, pending.frame)
        pending.submitted = now
        self._in_flight = (pending.index, now)
        self._last_submitted = pending.index

    def _on_result(self, result: _Result) -> None:
        now = time.monotonic()
        self._in_flight = None
        pending = self._by_index.get(result.index)
        if result.detections is None:
            self._stats.detector_errors += 1
            self._failures += 1
            self._last_error = result.error or "unknown error"
            self._retry_at = now + backoff(
                self._failures + 1, initial=0.1, multiplier=2.0, ceiling=5.0
            )
            if self._fail_since is None:
                self._fail_since = now
                logger.error("detector failed: %s", self._last_error)
                self._record.write(
                    {"event": "detector_error", "frame": result.index, "error": self._last_error}
                )
            if pending is not None:
                pending.failed = True
            return
        if self._fail_since is not None or self._gone_logged:
            down = now - min(self._fail_since or now, self._gone_at or now)
            logger.warning("detector is back after %.1f s", down)
            self._record.write(
                {"event": "detector_back", "frame": result.index, "down_s": round(down, 3)}
            )
            self._gone_logged = False
            self._gone_at = None
        self._fail_since = None
        self._failures = 0
        self._ok_once = True
        if not self._detected or result.index > self._detected[-1]:
            self._detected.append(result.index)
        self._stats.detections += 1
        self._stats.detect_s.append(result.seconds)
        alpha = 0.2 if self._detect_ewma else 1.0
        self._detect_ewma += alpha * (result.seconds - self._detect_ewma)
        assert self._associator is not None
        masks = self._associator.release(
            result.index, self._associator.assign(result.index, result.detections)
        )
        for mask in masks:
            self._scores[mask.track] = mask.score
            self._track_motion(result.index, mask)
        if pending is not None:
            pending.detected = masks
        else:
            self._stats.detections_late += 1

    def _gone_for(self, now: float) -> float | None:
        """How long the detector has been gone: failing, or silent past its usual time."""
        if self._fail_since is not None:
            return now - self._fail_since
        if self._in_flight is not None:
            silent_after = self._in_flight[1] + max(self._delay, 3 * self._detect_ewma)
            if now > silent_after:
                return now - silent_after
        return None

    # ----- sending frames

    def _ready(self, pending: _Pending, now: float) -> bool:
        if pending.detected is not None or pending.failed or now >= pending.deadline:
            return True
        if pending.submitted is not None:
            return False  # its own detection is on the way
        # wait for the next detection if it should be back before this frame's deadline: a
        # face it finds is then masked in this frame too (predicted back: the lead-in)
        expected = self._next_result_at(now)
        return expected is None or expected > pending.deadline

    def _next_result_at(self, now: float) -> float | None:
        """When the next detection should be back (None: not to be counted on)."""
        if not self._ok_once or self._fail_since is not None or self._worker is None:
            return None
        if self._in_flight is not None:
            due = self._in_flight[1] + self._detect_ewma
            return due if due >= now else None
        return max(now, self._retry_at) + float(1 / self._rate) + self._detect_ewma

    def _emit_ready(self, *, final: bool) -> None:
        while self._pending:
            now = time.monotonic()
            head = self._pending[0]
            if not self._ready(head, now):
                return
            self._pending.popleft()
            del self._by_index[head.index]
            if now - head.arrival > self._config.max_lag and not final:
                self._drop(head.index, head.frame, "lag")
                continue
            self._send(head, now)

    def _masks(self, pending: _Pending, now: float) -> tuple[Mode, list[Mask], str | None]:
        gone = self._gone_for(now)
        assert self._associator is not None
        untrusted = self._untrusted(pending.index)
        if pending.detected is not None and untrusted is None:
            present = {m.track for m in pending.detected}
            return (
                Mode.DETECTED,
                sorted(
                    set(pending.detected)
                    | set(self._predicted(pending.index, 0.0, exclude=present))
                ),
                None,
            )
        if not self._ok_once:
            return Mode.POLICY, [_whole(pending.frame)], "no detection yet"
        if gone is not None and gone > self._delay:
            if not self._gone_logged:
                self._gone_logged = True
                self._gone_at = now - gone
                logger.error(
                    "detector gone for %.1f s (%s): masking whole frames",
                    gone,
                    self._last_error or "no answer",
                )
                self._record.write(
                    {
                        "event": "detector_gone",
                        "frame": pending.index,
                        "gone_s": round(gone, 3),
                        "error": self._last_error or "no answer",
                    }
                )
            reason = f"detector unavailable for {gone:.2f} s ({self._last_error or 'no answer'})"
            return Mode.POLICY, [_whole(pending.frame)], reason
        cut = self._cut_before(pending.index)
        if cut is not None and (not self._detected or self._detected[-1] < cut):
            return Mode.POLICY, [_whole(pending.frame)], f"cut at frame {cut}, not detected since"
        if untrusted is not None:
            return Mode.POLICY, [_whole(pending.frame)], untrusted
        if pending.submitted is not None or pending.failed or gone is not None:
            return Mode.LATE, self._predicted(pending.index, self._config.late_margin), None
        return Mode.TRACKED, self._predicted(pending.index, 0.0), None

    def _cut_before(self, index: int) -> int | None:
        """The last hard cut at or before frame ``index`` (None: none seen)."""
        return next((cut for cut in reversed(self._cuts) if cut <= index), None)

    def _untrusted(self, index: int) -> str | None:
        """Why frame ``index`` may not be masked from its detection or predictions (None: it
        may). The detections that came back around it must be at most the trust horizon
        apart: its own and the one before (a face the detector misses in one is then still
        in the other one's track predictions), the two it lies between, or, for
        a frame after the newest one, that one and the one before it, the frame itself being
        within the extrapolation horizon of the newest."""
        trust, after = self._config.trust_frames(self._rate)
        done = self._detected
        k = bisect.bisect_left(done, index)
        own = k < len(done) and done[k] == index
        before = done[k - 1] if k > 0 else None
        later = done[k + 1 if own else k] if (k + 1 if own else k) < len(done) else None
        if own:
            # confirmed by the one before: a face leaving the frame (ever more cut by its
            # edge) or ever smaller is missed late, not early; the later one, if back, adds
            # its tracks (carried back) too
            if before is not None and index - before <= trust:
                return None
            gap = None if before is None else index - before
            return f"untrusted: the detection before its own {gap} frames before (trust {trust})"
        if later is not None:
            if before is not None and later - before <= trust:
                return None
            gap = None if before is None else later - before
            return f"untrusted: between detections {gap} frames apart (trust {trust})"
        if before is None:
            return "untrusted: no detection before it"
        gap = before - done[k - 2] if k > 1 else None
        if index - before <= after and gap is not None and gap <= trust:
            return None
        return (
            f"untrusted: {index - before} frames after the newest detection (extrapolate "
            f"{after}), {gap} frames after the one before (trust {trust})"
        )

    def _track_motion(self, index: int, mask: Mask) -> None:
        last = self._motion.get(mask.track)
        velocity = (0.0, 0.0)
        if last is not None and index > last[0]:
            (ox, oy), (nx, ny) = centre(last[1]), centre(mask.box)
            velocity = ((nx - ox) / (index - last[0]), (ny - oy) / (index - last[0]))
        self._motion[mask.track] = (index, mask.box, velocity)
        if len(self._motion) > 256:  # tracks long gone
            horizon = index - 2 * max(1, round(self._rate * Fraction(self._config.track_s)))
            self._motion = {t: m for t, m in self._motion.items() if m[0] >= horizon}

    def _predicted(
        self,
        index: int,
        grow: float,
        exclude: set[int] | frozenset[int] = frozenset(),
    ) -> list[Mask]:
        """Track predictions at ``index``: constant velocity, grown with staleness by the
        tracker (``growth_per_frame``), by ``grow``, and by the velocity's uncertainty: each
        side moves out by ``velocity_uncertainty`` x the track's speed (the scene's median
        track speed if faster) x the frames since it was detected. A track with no velocity of
        its own (seen once, or not moving) may stand still or move with the scene (a face
        coming in at the frame's edge as the camera pans), so its sides move out by the
        scene's whole speed."""
        assert self._associator is not None
        speeds = sorted(math.hypot(*m[2]) for m in self._motion.values() if m[2] != (0.0, 0.0))
        scene = speeds[len(speeds) // 2] if speeds else 0.0
        masks = []
        for track, box in self._associator.predict(index, grow=grow):
            if track in exclude:
                continue
            motion = self._motion.get(track)
            if motion is not None:
                speed = max(math.hypot(*motion[2]), scene)
                share = 1.0 if motion[2] == (0.0, 0.0) else self._config.velocity_uncertainty
                pad = max(share, self._config.velocity_uncertainty) * speed * abs(index - motion[0])
                box = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
            score = self._scores.get(track, 0.0)
            masks.append(Mask(track=track, origin=Origin.EXTRAPOLATED, box=box, score=score))
        return masks

    def _out_pts(self, pending: _Pending) -> int:
        assert self._sink is not None
        tb = pending.frame.time_base or self._video_tb.get(pending.session) or Fraction(1, 90000)
        if pending.frame.pts is None:
            t = self._last_out_s + 1 / self._rate
        else:
            t = pending.frame.pts * tb + self._offset(pending.session, pending.frame.pts * tb)
        pts = round(t / self._sink.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        self._last_out_s = max(self._last_out_s, pts * self._sink.time_base)
        return pts

    def _send(self, pending: _Pending, now: float) -> None:
        assert self._sink is not None
        mode, masks, reason = self._masks(pending, now)
        outage = mode is Mode.POLICY and (reason or "").startswith("detector unavailable")
        if outage and self._config.on_outage is OutagePolicy.STOP:
            # an outage only: a frame beyond the trust horizon is masked whole, not stopped on
            self._ended = self._ended or "stopped: " + (reason or "detector gone")
        started = time.perf_counter()
        if mode is Mode.POLICY:
            frame = _masked_whole(pending.frame, self._config.encoder.pix_fmt)
        else:
            frame = render_frame(
                pending.frame,
                [m.box for m in masks],
                self._config.style,
                pix_fmt=self._config.encoder.pix_fmt,
            )
        frame.pts = self._out_pts(pending)
        frame.time_base = self._sink.time_base
        self._sink.encode(frame)
        spent = time.perf_counter() - started
        if self._stats.frames_out:  # the first frame also starts the encoder: not typical
            # capped: a stalled machine must not make every frame leave at once
            spent = min(spent, self._delay / 2)
            alpha = 0.1 if self._encode_ewma else 1.0
            self._encode_ewma += alpha * (spent - self._encode_ewma)
        latency = time.monotonic() - pending.arrival
        self._stats.frame(mode, latency)
        self._adapt(latency)
        line: dict[str, Any] = {
            "frame": pending.index,
            "pts": pending.frame.pts,
            "out_pts": frame.pts,
            "session": pending.session,
            "mode": mode.value,
            "latency_ms": round(latency * 1000, 1),
            "stride": self._stats.stride,
            "masks": [m.to_json() for m in masks],
        }
        if reason:
            line["policy"] = reason
        self._record.write(line)
        if self._ended and self._ended.startswith("stopped: "):
            self._stop.set()

    def _adapt(self, latency: float) -> None:
        """Detect less often when frames leave late because the CPU is short (detection and
        encoding share it), and more often again when there is slack."""
        if latency > 1.5 * self._delay:
            # never sparser than the trust horizon (frames would be masked whole)
            cap = self._config.trust_frames(self._rate)[0]
            self._min_stride = min(self._min_stride + 1, cap)
        elif latency < 0.7 * self._delay and self._min_stride > 1:
            self._min_stride -= 1

    def _drop(self, index: int, frame: av.VideoFrame, reason: str) -> None:
        self._stats.drop(reason)
        self._record.write({"frame": index, "pts": frame.pts, "dropped": reason})

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


def run_live(
    source: str,
    sink: str,
    *,
    detector: Detector,
    config: LiveConfig | None = None,
    record: Path | None = None,
    metrics: str | None = None,
    stop: threading.Event | None = None,
    detector_json: dict[str, Any] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Anonymise ``source`` to ``sink`` until the source ends or ``stop`` is set.

    The record (JSON Lines) is flushed and the sink finalised however the run ends. Returns
    the summary (also the record's last line). Raises ``DetectorError`` when the detector is
    gone and ``config.on_outage`` is ``stop`` (after finishing the output).
    """
    config = config or LiveConfig()
    stop = stop or threading.Event()
    single_threaded_opencv()
    source_ep = source_endpoint(source, read_timeout_s=config.read_timeout_s)
    sink_ep = sink_endpoint(sink)
    stats = LiveStats()
    writer = _RecordWriter(record)
    server = _start_metrics(metrics, stats) if metrics else None
    writer.write(
        {
            "schema": RECORD_SCHEMA,
            "veil_version": __version__,
            "source": redact(source),
            "sink": redact(sink),
            "live": config.to_json(),
            "detector": detector_json or detector.info.to_json(),
            "style": config.style.to_json(),
            "weak_style_settings": config.style.weak_settings,
        }
    )
    engine = _Engine(source_ep, sink_ep, detector, config, writer, stats, stop)
    reason = "error"
    error: BaseException | None = None
    try:
        if on_ready is not None:
            on_ready()
        reason = engine.run()
    except BaseException as exc:
        error = exc
        reason = f"error: {exc}"
        raise
    finally:
        try:
            engine.close()
        except Exception as exc:
            if error is None:
                raise
            logger.error("finishing the sink failed too: %s", exc)
        finally:
            summary = stats.summary() | {"ended": reason}
            writer.write({"summary": summary})
            writer.close()
            if server is not None:
                server.shutdown()
    logger.info("live run ended (%s): %s", reason, summary)
    if reason.startswith("stopped: ") and config.on_outage is OutagePolicy.STOP:
        raise DetectorError(f"{reason} (--on-outage stop); the output so far is all masked")
    return summary
