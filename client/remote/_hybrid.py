"""Hybrid mode (``--detector grpc[s]://host:port``): the ``RemoteDetector``.

Decoding, tracking, rendering and remuxing stay here; only frames already scaled to the
detector's input (``fit_size``) cross the wire (``veil.wire``), as lossless PNG or RAW by
default (JPEG on request, and the record says so), over one ``DetectStream`` per detector. A
dropped stream is reopened and the frames without a result are sent again, from the last
acknowledged one; a server that stays unreachable past the retry budget is
:class:`~veil.remote.ServerLost`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc

from veil import __version__
from veil.core import ConfigError, Detections, DetectorInfo, Image, fit_size
from veil.job import DetectorSettings
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import (
    DetectorQuery,
    Encoding,
    frame_message,
    params_message,
    read_model_info,
    read_result,
)

from ._channel import (
    RETRYABLE,
    ChannelOptions,
    RemoteError,
    ServerLost,
    call_unary,
    describe,
    open_channel,
    translate,
)

__all__ = ["RemoteDetector"]

logger = logging.getLogger(__name__)


class _StreamEnded(Exception):
    """The server ended a DetectStream early without a status (treated as a drop)."""


class _Stream:
    """One open ``DetectStream`` call: a queue feeds its requests, a thread drains responses."""

    def __init__(self, stub: Any, params: pb.DetectorParams, options: ChannelOptions) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses: queue.Queue[Any] = queue.Queue()
        self._requests.put(pb.DetectStreamRequest(start=pb.StreamStart(detector=params)))
        self._call = stub.DetectStream(
            iter(self._requests.get, None),
            timeout=options.stream_timeout_s,
            metadata=options.metadata,
        )
        self._reader = threading.Thread(target=self._read, name="veil-stream-read", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
            self._responses.put(_StreamEnded("the server ended the stream"))
        except grpc.RpcError as exc:
            self._responses.put(exc)

    def send(self, frame: pb.Frame) -> None:
        self._requests.put(pb.DetectStreamRequest(frame=frame))

    def receive(self, timeout: float) -> Any:
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no result within {timeout:g} s") from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._requests.put(None)
        self._reader.join(timeout=2.0)
        if self._reader.is_alive():
            self._call.cancel()


class RemoteDetector:
    """A ``veil.Detector`` whose model runs on a veil server (hybrid mode).

    The record's detector block names the server's model, weights, backend and provider and
    the thresholds asked for, exactly as the same model in process would, plus a separate
    ``transport`` entry (mode, encoding, lossless). Frames travel over one ``DetectStream``
    per detector (one video), at most the server's window unanswered.
    """

    def __init__(
        self, url: str, settings: DetectorSettings, options: ChannelOptions | None = None
    ) -> None:
        if settings.flip or settings.tiles != 1:
            # the server's detector runs neither: asked for, they would silently not run
            raise ConfigError(
                "hybrid mode runs the server's detector without the mirror pass (flip) or "
                "tiles; run them on-prem or as a cloud job (--remote)"
            )
        self._options = options or ChannelOptions()
        self._channel, self._target = open_channel(url, self._options)
        self._stub = pb_grpc.DetectionServiceStub(self._channel)
        self._params = params_message(DetectorQuery.for_settings(settings))
        self._stream: _Stream | None = None
        self._window = 1
        self._next_index = 0
        self._lock = threading.Lock()
        try:
            model = call_unary(
                self._stub.GetModelInfo,
                pb.GetModelInfoRequest(detector=self._params),
                self._options,
                "model info",
                self._target,
            )
        except BaseException:
            self._channel.close()
            raise
        transport: dict[str, Any] = {
            "mode": "hybrid",
            "encoding": self._options.encoding.value,
            "lossless": self._options.encoding.lossless,
        }
        if self._options.encoding is Encoding.JPEG:
            transport["jpeg_quality"] = self._options.jpeg_quality
        served = read_model_info(model)
        self._info = replace(served.info, transport=transport)
        if served.veil_version != __version__:
            logger.warning("server runs veil %s, this client %s", served.veil_version, __version__)

    @property
    def info(self) -> DetectorInfo:
        return self._info

    def _open(self) -> _Stream:
        stream = _Stream(self._stub, self._params, self._options)
        try:
            first = stream.receive(self._options.timeout_s)
        except BaseException:
            stream.close()
            raise
        if first.WhichOneof("kind") != "started":
            stream.close()
            raise RemoteError(f"{self._target}: the stream did not start with StreamStarted")
        self._window = max(1, first.started.window)
        return stream

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        if len(images) != len(display_sizes):
            raise ValueError(f"{len(images)} images but {len(display_sizes)} display sizes")
        max_side = self._info.max_side
        frames = []
        for image, (width, height) in zip(images, display_sizes, strict=True):
            if (image.shape[1], image.shape[0]) != fit_size(width, height, max_side):
                raise ValueError(
                    f"image {image.shape[1]}x{image.shape[0]} is not fit_size({width}, "
                    f"{height}, {max_side})"
                )
            frames.append(
                frame_message(
                    image,
                    (width, height),
                    index=0,  # numbered under the lock, in the order the stream sends them
                    encoding=self._options.encoding,
                    jpeg_quality=self._options.jpeg_quality,
                )
            )
        with self._lock:
            for frame in frames:
                frame.index = self._next_index
                self._next_index += 1
            try:
                return self._exchange(deque(frames))
            except BaseException:
                self._drop()  # its pending results no longer match any caller
                raise

    def _exchange(self, pending: deque[pb.Frame]) -> list[Detections]:
        results: list[Detections] = []
        sent = 0  # of ``pending`` (from the left), on the current stream
        failures = 0
        while pending:
            opening = self._stream is None
            try:
                if self._stream is None:
                    self._stream = self._open()
                    sent = 0
                while sent < len(pending) and sent < self._window:
                    self._stream.send(pending[sent])
                    sent += 1
                response = self._stream.receive(self._options.frame_timeout_s)
            except (grpc.RpcError, _StreamEnded) as exc:
                self._drop()
                failures += 1
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNAVAILABLE
                busy = opening and code is grpc.StatusCode.RESOURCE_EXHAUSTED
                if busy and failures < self._options.retry.attempts:
                    # the server refused a new stream (its queue room is reserved by others):
                    # nothing was sent yet, so waiting for a stream to end is safe
                    logger.warning(
                        "%s has no room for another stream (%s); retrying (%d/%d)",
                        self._target,
                        describe(exc),
                        failures,
                        self._options.retry.attempts - 1,
                    )
                    time.sleep(self._options.retry.backoff(failures))
                    continue
                if code in RETRYABLE and failures < self._options.retry.attempts:
                    logger.warning(
                        "detection stream to %s dropped (%s); resuming from frame %d (%d/%d)",
                        self._target,
                        describe(exc),
                        pending[0].index,
                        failures,
                        self._options.retry.attempts - 1,
                    )
                    time.sleep(self._options.retry.backoff(failures))
                    continue
                if code in RETRYABLE:
                    raise ServerLost(
                        f"detection at {self._target}: the server stayed unreachable after "
                        f"{failures} attempts ({describe(exc)})",
                        "UNAVAILABLE",
                    ) from exc
                if isinstance(exc, grpc.RpcError):
                    raise translate(exc, "detection", self._target) from exc
                raise RemoteError(f"detection at {self._target}: {exc}", "UNAVAILABLE") from exc
            except TimeoutError as exc:
                raise RemoteError(
                    f"detection at {self._target}: {exc}", "DEADLINE_EXCEEDED"
                ) from exc
            result = response.result
            if response.WhichOneof("kind") != "result" or result.index != pending[0].index:
                raise RemoteError(
                    f"detection at {self._target}: expected the result of frame "
                    f"{pending[0].index}, got {response.WhichOneof('kind')} {result.index}"
                )
            results.append(read_result(result))
            pending.popleft()
            sent -= 1
            failures = 0
        return results

    def close(self) -> None:
        with self._lock:
            self._drop()
        self._channel.close()

    def __enter__(self) -> RemoteDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
