"""The ``veil.v1.DetectionService`` servicer: validation at the boundary, then the batcher.

Each RPC method runs inside :func:`_answering`, which turns every exception into an explicit
status code through :func:`~veil.server.service._status.status_of` (the one translation); nothing
escapes as UNKNOWN. What the messages carry is read and written by ``veil.wire``, the mapping
the clients use too; what a call may ask is in ``_requests``, cloud jobs in ``_jobs``. Frames
are decoded in memory and never written or logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc

from veil.core import Detector, DetectorInfo, Image
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import (
    DetectorQuery,
    ServedModel,
    WireError,
    model_info_message,
    read_frame,
    read_params,
    result_message,
)

from ._auth import TokenStore, client_name
from ._batcher import Batcher, Reservation, detector_key
from ._jobs import BatchedDetector, CloudJob
from ._metrics import Metrics
from ._requests import POLL_S, Limits, Slots, call_deadline, first_message, wait
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

__all__ = ["SERVICE_NAME", "DetectionServicer"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DetectionService"].full_name
_MIN_STREAM_WINDOW = 4
"""The smallest window a stream is granted when the queue has less room than the configured
window (a hybrid client sends a batch of 4 frames at a time by default)."""


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
        self._streams = Slots(limits.max_streams_per_client, "streams for this client")
        self._jobs = Slots(limits.max_jobs, "cloud jobs")

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

    def _resolve(self, query: DetectorQuery) -> tuple[Detector, DetectorInfo]:
        """The served detector a query asks for, its values checked against the limits."""
        batcher = self.batcher()
        model = query.model or batcher.model
        if model != batcher.model:
            raise FailedPrecondition(f"this server serves model {batcher.model!r}, not {model!r}")
        if not 32 <= query.max_side <= self._limits.max_image_side:
            raise InvalidRequest(
                f"max_side {query.max_side} must be between 32 and {self._limits.max_image_side}"
            )
        for name in ("score_threshold", "nms_threshold"):
            value = getattr(query, name)
            if value is not None and not 0 < value < 1:
                raise InvalidRequest(f"{name} {value} must be in (0, 1)")
        detector = batcher.detector(query.score_threshold, query.nms_threshold, query.max_side)
        return detector, detector.info

    def _model_info(self, info: DetectorInfo) -> pb.ModelInfo:
        assert self._batcher is not None
        return model_info_message(
            ServedModel(
                info=info,
                max_batch=self._batcher.config.max_batch,
                max_image_side=self._limits.max_image_side,
            )
        )

    def _decode(self, frame: pb.Frame, info: DetectorInfo) -> tuple[Image, tuple[int, int]]:
        """``read_frame`` for ``info``'s detector; a frame refused is counted as rejected."""
        try:
            return read_frame(
                frame, max_side=info.max_side, max_image_side=self._limits.max_image_side
            )
        except WireError:
            if self._metrics is not None:
                self._metrics.frames.labels(info.backend, info.model, "rejected").inc()
            raise

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
        _, info = self._resolve(read_params(request.detector))
        return self._model_info(info)

    @_answering
    def Detect(self, request: pb.DetectRequest, context: grpc.ServicerContext) -> pb.DetectResponse:
        _detector, info = self._resolve(read_params(request.detector))
        frames = request.frames
        if not frames:
            raise InvalidRequest("Detect: no frames")
        if len(frames) > self._limits.max_frames_per_request:
            raise InvalidRequest(
                f"Detect: {len(frames)} frames, at most {self._limits.max_frames_per_request} "
                "per request (use DetectStream for video)"
            )
        decoded = [self._decode(f, info) for f in frames]
        deadline = call_deadline(context, self._limits)
        futures = self.batcher().submit(
            detector_key(info),
            [image for image, _ in decoded],
            [size for _, size in decoded],
            deadline=deadline,
        )
        results = [wait(future, context, deadline) for future in futures]
        return pb.DetectResponse(
            results=[result_message(f.index, d) for f, d in zip(frames, results, strict=True)]
        )

    @_answering
    def DetectStream(
        self, request_iterator: Iterator[pb.DetectStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DetectStreamResponse]:
        first = first_message(request_iterator, "start", "DetectStream")
        _, info = self._resolve(read_params(first.start.detector))
        batcher = self.batcher()
        key = detector_key(info)
        deadline = call_deadline(context, self._limits)
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
                    image, size = self._decode(frame, info)
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
                    item = pending.get(timeout=POLL_S)
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
                detections = wait(future, context, deadline)
                window.release()  # before the result leaves, so the client may send at once
                yield pb.DetectStreamResponse(result=result_message(index, detections))

    @_answering
    def RunJob(
        self, request_iterator: Iterator[pb.JobRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.JobResponse]:
        first = first_message(request_iterator, "start", "RunJob")
        self.batcher()
        job = CloudJob(first.start, self._limits)
        # the detector the same settings run in process, as a hybrid client asks for it
        detector, info = self._resolve(DetectorQuery.for_settings(job.config.detector))
        batched = BatchedDetector(
            self.batcher,
            key=detector_key(detector.info),
            info=replace(info, transport={"mode": "cloud"}),
            deadline=call_deadline(context, self._limits),
            context=context,
        )
        with self._jobs.hold(), self._gauge("active_jobs"):
            yield from job.run(request_iterator, batched)
