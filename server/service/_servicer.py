"""The ``veil.v1.DetectionService`` servicer: validation at the boundary, then the batcher.

Each RPC method runs inside :func:`_answering`, which turns every exception into an explicit
status code through :func:`~veil.server.service._status.status_of` (the one translation); nothing
escapes as UNKNOWN. Frames are decoded in memory and never written or logged; a cloud job's
file lives in a temporary directory that is removed when the call ends, however it ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import queue
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import grpc
import numpy as np

from veil import __version__
from veil._api import DetectionConfig, anonymize, default_record_path, detect
from veil.core import Detections, Detector, DetectorInfo, Image, fit_size
from veil.job import Preset
from veil.mask import Style
from veil.media import EncoderSettings
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc

from ._auth import TokenStore, client_name
from ._batcher import Batcher, Reservation, detector_key
from ._metrics import Metrics
from ._status import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidRequest,
    Overloaded,
    ServiceError,
    Unavailable,
    status_of,
)

__all__ = ["SERVICE_NAME", "DetectionServicer", "Limits"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DetectionService"].full_name
_CHUNK = 1 << 20
_POLL_S = 0.25
_MAX_DISPLAY_SIDE = 1 << 16
_DEFAULT_MAX_SIDE = 640
_MIN_STREAM_WINDOW = 4
"""The smallest window a stream is granted when the queue has less room than the configured
window (a hybrid client sends a batch of 4 frames at a time by default)."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request, stream or client may ask of the server.

    ``max_image_side``: largest width or height of a frame sent (and of ``max_side``);
    ``max_frames_per_request``: frames in one ``Detect``; ``window``: frames a stream may have
    unanswered; ``max_streams_per_client``: open ``DetectStream`` calls per client (token
    name, else certificate name, else peer host); ``max_jobs``: cloud jobs at a time;
    ``max_job_bytes``: largest file a job may upload; ``default_deadline_s``: the deadline of
    a call that comes without one.
    """

    max_image_side: int = 4096
    max_frames_per_request: int = 64
    window: int = 32
    max_streams_per_client: int = 16
    max_jobs: int = 2
    max_job_bytes: int = 4 << 30
    default_deadline_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("max_image_side", "max_frames_per_request", "window", "max_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"limit {name} must be at least 1")
        if self.max_streams_per_client < 1 or self.max_job_bytes < 1:
            raise ValueError("limits must be positive")
        if self.default_deadline_s <= 0:
            raise ValueError("default_deadline_s must be positive")


class _JobCancelled(BaseException):
    """Raised inside a cloud job's detector when its client went away. A BaseException so
    the pipeline's fail-closed handler (which masks frames whose detection failed) does not
    take it for a detector error: the job stops and writes nothing."""


_T = TypeVar("_T")


def _answering(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a servicer method; any exception becomes an explicit status via ``status_of``."""
    name = method.__name__

    def fail(exc: BaseException, context: grpc.ServicerContext) -> None:
        code, message = status_of(exc, name)
        if isinstance(exc, ServiceError | ValueError) and code is not grpc.StatusCode.INTERNAL:
            logger.info("%s: %s: %s", name, code.name, message)
        context.abort(code, message)

    if name in ("DetectStream", "RunJob"):

        @functools.wraps(method)
        def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                fail(exc, context)

        return streaming

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            fail(exc, context)

    return unary


class _Slots:
    """Counted slots per key (streams per client, jobs), refused when full."""

    def __init__(self, limit: int, what: str) -> None:
        self._limit = limit
        self._what = what
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str = "") -> Iterator[None]:
        with self._lock:
            used = self._used.get(key, 0)
            if used >= self._limit:
                raise Overloaded(f"{self._what}: {used} of {self._limit} in use; retry later")
            self._used[key] = used + 1
        try:
            yield
        finally:
            with self._lock:
                self._used[key] -= 1
                if not self._used[key]:
                    del self._used[key]


def _image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG declares, read before decoding (no decompression bomb)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 4 <= len(data):
            if data[at] != 0xFF:
                return None
            marker = data[at + 1]
            length = int.from_bytes(data[at + 2 : at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if at + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                return int(width), int(height)
            at += 2 + length
    return None


def _decode(frame: pb.Frame, *, max_side: int, limit: int) -> tuple[Image, tuple[int, int]]:
    """The RGB image a ``Frame`` carries and its display size, or :class:`InvalidRequest`."""
    where = f"frame {frame.index}"
    width, height = frame.width, frame.height
    display = (frame.display_width, frame.display_height)
    if not (0 < width <= limit and 0 < height <= limit):
        raise InvalidRequest(f"{where}: image {width}x{height} is outside 1..{limit} pixels a side")
    if not (0 < display[0] <= _MAX_DISPLAY_SIDE and 0 < display[1] <= _MAX_DISPLAY_SIDE):
        raise InvalidRequest(f"{where}: display size {display[0]}x{display[1]} is not valid")
    expected = fit_size(display[0], display[1], max_side)
    if (width, height) != expected:
        raise InvalidRequest(
            f"{where}: a {display[0]}x{display[1]} frame must be sent scaled to "
            f"{expected[0]}x{expected[1]} (fit_size with max_side {max_side}), not {width}x{height}"
        )
    data = frame.data
    if frame.encoding == pb.IMAGE_ENCODING_RAW:
        if len(data) != width * height * 3:
            raise InvalidRequest(
                f"{where}: RAW data has {len(data)} bytes, {width}x{height}x3 = "
                f"{width * height * 3} expected"
            )
        return np.frombuffer(data, np.uint8).reshape(height, width, 3), display
    if frame.encoding not in (pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG):
        raise InvalidRequest(f"{where}: encoding must be RAW, PNG or JPEG")
    kind = pb.ImageEncoding.Name(frame.encoding).removeprefix("IMAGE_ENCODING_")
    if _image_header_size(data) != (width, height):
        raise InvalidRequest(f"{where}: the data is not a {width}x{height} {kind} image")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (height, width, 3):
        raise InvalidRequest(f"{where}: the {kind} data does not decode to {width}x{height} RGB")
    return np.ascontiguousarray(bgr[:, :, ::-1]), display


def _result(index: int, detections: Detections) -> pb.FrameResult:
    faces = []
    for i in range(len(detections)):
        x0, y0, x1, y1 = (float(v) for v in detections.boxes[i])
        landmarks = [] if detections.landmarks is None else detections.landmarks[i].ravel().tolist()
        sources = 0 if detections.sources is None else int(detections.sources[i])
        faces.append(
            pb.Face(
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                score=float(detections.scores[i]),
                landmarks=landmarks,
                sources=sources,
            )
        )
    return pb.FrameResult(index=index, faces=faces)


#: The longest job file name taken, in UTF-8 bytes: file systems stop at 255, and veil adds
#: suffixes of its own (``.veil.json``, ``.manifest.json``, the partial files' names).
MAX_NAME_BYTES = 200


def _file_name(name: str, what: str) -> str:
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or "\0" in name:
        raise InvalidRequest(f"{what} {name!r} must be a plain file name (no directories)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidRequest(
            f"{what} is {len(name.encode())} bytes long; at most {MAX_NAME_BYTES} are taken"
        )
    return name


def _job_settings(start: pb.JobStart) -> tuple[DetectionConfig, Style, EncoderSettings]:
    """The job's settings from a ``JobStart``; invalid values raise ``ConfigError``."""
    try:
        preset = Preset(start.preset or Preset.BALANCED.value)
    except ValueError:
        raise InvalidRequest(f"unknown preset {start.preset!r}") from None
    d = start.detector
    detector = {
        "model": d.model or None,
        "max_side": d.max_side or None,
        "score_threshold": d.score_threshold or None,
        "nms_threshold": d.nms_threshold or None,
        "batch_size": d.batch_size or None,
        "stride": d.stride or None,
        "tiles": d.tiles or None,
        "flip": d.flip,
    }
    tracker: dict[str, Any] = {}
    if start.tracker.set:
        t = start.tracker
        tracker = {
            "max_gap": t.max_gap,
            "lead_in": t.lead_in,
            "lead_out": t.lead_out,
            "match_iou": t.match_iou,
            "growth_per_frame": t.growth_per_frame,
            "confirm_hits": t.confirm_hits,
            "steady_span": t.steady_span,
            "follow_span": t.follow_span,
            "recheck": t.recheck,
        }
    config = DetectionConfig.from_preset(preset, detector=detector, tracker=tracker)
    if d.model:  # the client's detector settings, all given: its track threshold or none
        track = d.track_threshold if d.HasField("track_threshold") else None
        config = DetectionConfig(
            preset=preset,
            detector=replace(config.detector, track_threshold=track, low_light=d.low_light),
            tracker=config.tracker,
        )
    style = Style()
    if start.style.set:
        s = start.style
        style = Style.from_json(
            {
                "effect": s.effect,
                "shape": s.shape,
                "margin": s.margin,
                "feather": s.feather,
                "blur_strength": s.blur_strength,
                "pixel_blocks": s.pixel_blocks,
                "color": tuple(s.color),
            }
        )
    encoder = EncoderSettings()
    if start.encoder.set:
        e = start.encoder
        encoder = EncoderSettings(
            codec=e.codec or None,
            preset=e.preset,
            crf=e.crf,
            pix_fmt=e.pix_fmt or None,
            threads=e.threads,
        )
    return config, style, encoder


class _BatchedDetector:
    """A ``veil.Detector`` over the shared batcher, for cloud jobs run on the server."""

    def __init__(
        self,
        servicer: DetectionServicer,
        *,
        detector: Detector,
        info: DetectorInfo,
        deadline: float,
        context: grpc.ServicerContext,
    ) -> None:
        self._servicer = servicer
        self._key = detector_key(detector.info)
        self._info = info
        self._deadline = deadline
        self._context = context
        self.frames_done = 0

    @property
    def info(self) -> DetectorInfo:
        return self._info

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        if not self._context.is_active():
            raise _JobCancelled
        batcher = self._servicer.batcher()
        while True:  # a job waits for room in the queue rather than mask frames by policy
            try:
                futures = batcher.submit(self._key, images, display_sizes, deadline=self._deadline)
                break
            except Overloaded:
                if time.monotonic() >= self._deadline or not self._context.is_active():
                    raise
                time.sleep(0.05)
        try:
            found = [self._servicer.wait(f, self._context, self._deadline) for f in futures]
        except Cancelled:
            raise _JobCancelled from None
        self.frames_done += len(found)
        return found

    def close(self) -> None:
        pass


class DetectionServicer(pb_grpc.DetectionServiceServicer):
    """Answers ``veil.v1.DetectionService``; see the proto for the contract."""

    def __init__(
        self, *, limits: Limits, metrics: Metrics | None, tokens: TokenStore | None
    ) -> None:
        self._limits = limits
        self._metrics = metrics
        self._tokens = tokens
        self._batcher: Batcher | None = None
        self._draining = False
        self._backend_ready = True
        self._streams = _Slots(limits.max_streams_per_client, "streams for this client")
        self._jobs = _Slots(limits.max_jobs, "cloud jobs")

    # -- state ---------------------------------------------------------------------------

    def set_ready(self, batcher: Batcher) -> None:
        self._batcher = batcher

    def drain(self) -> None:
        self._draining = True

    def set_backend_ready(self, ready: bool) -> None:
        """The health watchdog's verdict: while not ready, calls get UNAVAILABLE (retried)."""
        self._backend_ready = ready

    def batcher(self) -> Batcher:
        if self._draining:
            raise Unavailable("the server is shutting down; use another replica")
        if self._batcher is None:
            raise Unavailable("the model is still loading; retry shortly")
        if not self._backend_ready:
            raise Unavailable("the inference backend is not ready; retry shortly")
        return self._batcher

    # -- helpers -------------------------------------------------------------------------

    def _deadline(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self._limits.default_deadline_s
        return time.monotonic() + remaining

    def wait(self, future: Future[_T], context: grpc.ServicerContext, deadline: float) -> _T:
        """``future``'s result, or DeadlineExceeded/Cancelled (and the future cancelled)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                future.cancel()
                raise DeadlineExceeded("the deadline passed before the frame was detected")
            if not context.is_active():
                future.cancel()
                raise Cancelled("the client went away")
            try:
                return future.result(timeout=min(remaining, _POLL_S))
            except FutureTimeout:
                continue
            except CancelledError:
                raise Cancelled("the frame was cancelled") from None

    def _resolve(self, params: pb.DetectorParams) -> tuple[Detector, DetectorInfo]:
        batcher = self.batcher()
        model = params.model or batcher.model
        if model != batcher.model:
            raise FailedPrecondition(f"this server serves model {batcher.model!r}, not {model!r}")
        max_side = params.max_side or _DEFAULT_MAX_SIDE
        if not 32 <= max_side <= self._limits.max_image_side:
            raise InvalidRequest(
                f"max_side {max_side} must be between 32 and {self._limits.max_image_side}"
            )
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(params, name)
            if value and not 0 < value < 1:
                raise InvalidRequest(f"{name} {value} must be in (0, 1)")
        detector = batcher.detector(
            params.score_threshold or None, params.nms_threshold or None, max_side
        )
        return detector, detector.info

    def _model_info(self, info: DetectorInfo) -> pb.ModelInfo:
        assert self._batcher is not None
        return pb.ModelInfo(
            model=info.model,
            weights_sha256=info.weights_sha256,
            backend=info.backend,
            execution_provider=info.execution_provider,
            max_side=info.max_side,
            score_threshold=info.score_threshold,
            nms_threshold=info.nms_threshold,
            options_json=json.dumps(info.options, sort_keys=True),
            license=info.license,
            max_batch=self._batcher.config.max_batch,
            max_image_side=self._limits.max_image_side,
            veil_version=__version__,
        )

    def _decode(self, frame: pb.Frame, max_side: int, model: str, backend: str) -> Any:
        try:
            return _decode(frame, max_side=max_side, limit=self._limits.max_image_side)
        except InvalidRequest:
            if self._metrics is not None:
                self._metrics.frames.labels(backend, model, "rejected").inc()
            raise

    @staticmethod
    def _first(requests: Iterator[Any], kind: str, method: str) -> Any:
        try:
            first = next(requests)
        except StopIteration:
            raise InvalidRequest(f"{method}: the stream ended before its {kind} message") from None
        if first.WhichOneof("kind") != kind:
            raise InvalidRequest(f"{method}: the first message must be {kind}")
        return first

    @contextlib.contextmanager
    def _reservation(self, batcher: Batcher) -> Iterator[Reservation]:
        """Queue room for a stream's whole window, held while it runs: the window granted is
        the configured one, or less when less is free (the client is told, StreamStarted), but
        never under :data:`_MIN_STREAM_WINDOW`; else the stream is refused before its first
        frame (RESOURCE_EXHAUSTED), never cut later."""
        window = self._limits.window
        try:
            reservation = batcher.reserve(window, least=min(window, _MIN_STREAM_WINDOW))
        except Overloaded as exc:
            raise Overloaded(f"DetectStream: {exc}") from None
        try:
            yield reservation
        finally:
            batcher.release(reservation)

    @contextlib.contextmanager
    def _gauge(self, name: str) -> Iterator[None]:
        gauge = None if self._metrics is None else getattr(self._metrics, name)
        if gauge is not None:
            gauge.inc()
        try:
            yield
        finally:
            if gauge is not None:
                gauge.dec()

    # -- RPCs ----------------------------------------------------------------------------

    @_answering
    def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        _, info = self._resolve(request.detector)
        return self._model_info(info)

    @_answering
    def Detect(self, request: pb.DetectRequest, context: grpc.ServicerContext) -> pb.DetectResponse:
        _detector, info = self._resolve(request.detector)
        frames = request.frames
        if not frames:
            raise InvalidRequest("Detect: no frames")
        if len(frames) > self._limits.max_frames_per_request:
            raise InvalidRequest(
                f"Detect: {len(frames)} frames, at most {self._limits.max_frames_per_request} "
                "per request (use DetectStream for video)"
            )
        decoded = [self._decode(f, info.max_side, info.model, info.backend) for f in frames]
        deadline = self._deadline(context)
        futures = self.batcher().submit(
            detector_key(info),
            [image for image, _ in decoded],
            [size for _, size in decoded],
            deadline=deadline,
        )
        results = [self.wait(future, context, deadline) for future in futures]
        return pb.DetectResponse(
            results=[_result(f.index, d) for f, d in zip(frames, results, strict=True)]
        )

    @_answering
    def DetectStream(
        self, request_iterator: Iterator[pb.DetectStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DetectStreamResponse]:
        first = self._first(request_iterator, "start", "DetectStream")
        _, info = self._resolve(first.start.detector)
        batcher = self.batcher()
        key = detector_key(info)
        deadline = self._deadline(context)
        pending: queue.Queue[Any] = queue.Queue()
        end = object()

        def read(reservation: Reservation, window: threading.Semaphore) -> None:
            last = -1
            try:
                for request in request_iterator:
                    if request.WhichOneof("kind") != "frame":
                        raise InvalidRequest("DetectStream: only frames may follow the start")
                    frame = request.frame
                    if frame.index <= last:
                        raise InvalidRequest(
                            f"DetectStream: frame index {frame.index} after {last}; "
                            "indices must increase"
                        )
                    last = frame.index
                    if not window.acquire(blocking=False):
                        raise Overloaded(
                            f"DetectStream: more than {reservation.frames} frames unanswered; "
                            "wait for results before sending more"
                        )
                    image, size = self._decode(frame, info.max_side, info.model, info.backend)
                    [future] = batcher.submit(
                        key, [image], [size], deadline=deadline, reservation=reservation
                    )
                    pending.put((frame.index, future))
                pending.put(end)
            except Exception as exc:
                pending.put(exc)

        with (
            self._streams.hold(client_name(self._tokens, context)),
            self._reservation(batcher) as reservation,
            self._gauge("active_streams"),
        ):
            window = threading.Semaphore(reservation.frames)
            yield pb.DetectStreamResponse(
                started=pb.StreamStarted(model=self._model_info(info), window=reservation.frames)
            )
            threading.Thread(
                target=read, args=(reservation, window), name="veil-stream-read", daemon=True
            ).start()
            while True:
                try:
                    item = pending.get(timeout=_POLL_S)
                except queue.Empty:
                    if not context.is_active():
                        raise Cancelled("the client went away") from None
                    if time.monotonic() >= deadline:
                        raise DeadlineExceeded("the stream's deadline passed") from None
                    continue
                if item is end:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, grpc.RpcError) or not context.is_active():
                        raise Cancelled("the client went away")
                    raise item
                index, future = item
                detections = self.wait(future, context, deadline)
                window.release()  # before the result leaves, so the client may send at once
                yield pb.DetectStreamResponse(result=_result(index, detections))

    @_answering
    def RunJob(
        self, request_iterator: Iterator[pb.JobRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.JobResponse]:
        first = self._first(request_iterator, "start", "RunJob")
        start = first.start
        self.batcher()
        input_name = _file_name(start.input_name, "input_name")
        output_name = _file_name(start.output_name, "output_name") if start.output_name else None
        if output_name is None and not start.write_record:
            raise InvalidRequest("RunJob: asks for neither an output video nor a record")
        if start.input_size > self._limits.max_job_bytes:
            raise Overloaded(
                f"RunJob: input of {start.input_size} bytes is over this server's limit of "
                f"{self._limits.max_job_bytes}"
            )
        config, style, encoder = _job_settings(start)
        detector, info = self._resolve(
            pb.DetectorParams(
                model=config.detector.model,
                max_side=config.detector.max_side,
                score_threshold=config.detector.model_threshold,  # as open_detector does
                nms_threshold=config.detector.nms_threshold,
            )
        )
        deadline = self._deadline(context)
        with (
            self._jobs.hold(),
            self._gauge("active_jobs"),
            tempfile.TemporaryDirectory(prefix="veil-job-") as tmp,
        ):
            work = Path(tmp)
            source = work / "in" / input_name
            source.parent.mkdir()
            (work / "out").mkdir()
            self._receive(request_iterator, source, start.input_size)
            frames_total = 0
            with contextlib.suppress(Exception):
                from veil.media import probe

                frames_total = probe(source).frames
            yield pb.JobResponse(
                progress=pb.JobProgress(
                    stage=pb.JobProgress.STAGE_RECEIVED, frames_total=frames_total
                )
            )
            batched = _BatchedDetector(
                self,
                detector=detector,
                info=replace(info, transport={"mode": "cloud"}),
                deadline=deadline,
                context=context,
            )
            output = None if output_name is None else work / "out" / output_name
            record = default_record_path(work / "out" / (output_name or input_name))
            events: queue.Queue[tuple[str, Any]] = queue.Queue()

            def run() -> None:
                try:
                    drop = list(start.drop_streams)
                    if output is None:
                        detect(source, record, config=config, detector=batched, drop_streams=drop)
                    else:
                        anonymize(
                            source,
                            output,
                            record=record,
                            write_record=start.write_record,
                            config=config,
                            detector=batched,
                            drop_streams=drop,
                            style=style,
                            encoder=encoder,
                        )
                    events.put(("done", None))
                except BaseException as exc:
                    events.put(("error", exc))

            worker = threading.Thread(target=run, name="veil-job", daemon=True)
            worker.start()
            reported = -1
            while True:
                try:
                    kind, value = events.get(timeout=0.5)
                except queue.Empty:
                    if batched.frames_done != reported:
                        reported = batched.frames_done
                        yield pb.JobResponse(
                            progress=pb.JobProgress(
                                stage=pb.JobProgress.STAGE_RUNNING,
                                frames_done=reported,
                                frames_total=frames_total,
                            )
                        )
                    continue
                if kind == "error":
                    if isinstance(value, _JobCancelled):
                        raise Cancelled("the client went away; the job stopped")
                    raise value
                break
            yield pb.JobResponse(
                progress=pb.JobProgress(
                    stage=pb.JobProgress.STAGE_SENDING,
                    frames_done=batched.frames_done,
                    frames_total=frames_total,
                )
            )
            digests: dict[int, str] = {}
            kinds = pb.FileChunk
            files = [(kinds.KIND_OUTPUT, output), (kinds.KIND_RECORD, record)]
            if output is not None:
                files.append(
                    (kinds.KIND_MANIFEST, output.with_name(output.name + ".manifest.json"))
                )
            for kind, path in files:
                if path is None or not path.exists():
                    continue
                digest = hashlib.sha256()
                with path.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        yield pb.JobResponse(file=pb.FileChunk(kind=kind, data=chunk))
                digests[kind] = digest.hexdigest()
            summary = {}
            if record.exists():
                summary = json.loads(record.read_bytes()).get("summary", {})
            yield pb.JobResponse(
                done=pb.JobDone(
                    output_sha256=digests.get(kinds.KIND_OUTPUT, ""),
                    record_sha256=digests.get(kinds.KIND_RECORD, ""),
                    manifest_sha256=digests.get(kinds.KIND_MANIFEST, ""),
                    summary_json=json.dumps(summary, sort_keys=True),
                )
            )

    def _receive(self, requests: Iterator[pb.JobRequest], path: Path, size: int) -> None:
        received = 0
        with path.open("wb") as fh:
            for request in requests:
                if request.WhichOneof("kind") != "chunk":
                    raise InvalidRequest("RunJob: only file chunks may follow the start")
                received += len(request.chunk)
                if received > size:
                    raise InvalidRequest(f"RunJob: more than the announced {size} bytes arrived")
                fh.write(request.chunk)
        if received != size:
            raise InvalidRequest(f"RunJob: the upload is truncated: {received} of {size} bytes")
