"""Talking to a veil server: the hybrid-mode ``RemoteDetector`` and the cloud-mode job client.

Hybrid (``--detector grpc[s]://host:port``): decoding, tracking, rendering and remuxing stay
here; only frames already scaled to the detector's input (``fit_size``) cross the wire, as
lossless PNG or RAW by default (JPEG on request, and the record says so). Cloud
(``--remote grpc[s]://host:port``): the file goes up, the server runs the same pipeline, the
anonymised file, record and manifest come back.

Every RPC has a deadline (:class:`ChannelOptions`); UNAVAILABLE is retried with exponential
backoff; a dropped ``DetectStream`` is reopened and the frames without a result are sent
again, from the last acknowledged one. Every gRPC error becomes a :class:`RemoteError` in
:func:`_translate`, the one place that knows status codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import grpc
import numpy as np

from veil import __version__
from veil.core import (
    ConfigError,
    Detections,
    DetectorError,
    DetectorInfo,
    DetectorLost,
    Image,
    OutputError,
    backoff,
    fit_size,
)
from veil.job import DetectorSettings
from veil.mask import Style
from veil.media import EncoderSettings, partial_path
from veil.track import TrackerConfig

__all__ = [
    "ChannelOptions",
    "Encoding",
    "RemoteDetector",
    "RemoteError",
    "RemoteJobResult",
    "RetryPolicy",
    "ServerLost",
    "frame_message",
    "open_channel",
    "parse_url",
    "read_token",
    "run_remote_job",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


def _pb() -> Any:
    from veil.v1 import detection_pb2

    return detection_pb2


def _stub(channel: grpc.Channel) -> Any:
    from veil.v1 import detection_pb2_grpc

    return detection_pb2_grpc.DetectionServiceStub(channel)


class RemoteError(DetectorError):
    """A call to a veil server failed; ``code`` is the gRPC status code's name."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class ServerLost(RemoteError, DetectorLost):
    """The server stayed unreachable for the whole retry budget: a file job stops (exit 6,
    nothing written) instead of masking the rest of the video whole by policy."""


def _describe(exc: BaseException) -> str:
    """One line for a log: the status code and details, not the call object's repr."""
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def _translate(exc: grpc.RpcError, what: str, target: str) -> RemoteError:
    """The one place a gRPC error becomes a veil error."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    name = code.name if code is not None else "UNKNOWN"
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    hint = {
        "UNAVAILABLE": " (is the server running and reachable, and does TLS match?)",
        "UNAUTHENTICATED": " (check --token-file)",
        "DEADLINE_EXCEEDED": " (the server is too slow or overloaded)",
    }.get(name, "")
    return RemoteError(f"{what} at {target}: {name}: {details}{hint}", name)


class Encoding(StrEnum):
    """How frames travel in hybrid mode. RAW and PNG are lossless; JPEG is not."""

    RAW = "raw"
    PNG = "png"
    JPEG = "jpeg"

    @property
    def lossless(self) -> bool:
        return self is not Encoding.JPEG


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retries of UNAVAILABLE: ``attempts`` tries in all, sleeping ``initial_backoff_s``,
    then ``multiplier`` times more each time, at most ``max_backoff_s``. The default budget
    (about 16 s of backoff) outlasts a server restart (model load and warm-up)."""

    attempts: int = 8
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts {self.attempts} is below 1")

    def backoff(self, failures: int) -> float:
        return backoff(
            failures,
            initial=self.initial_backoff_s,
            multiplier=self.multiplier,
            ceiling=self.max_backoff_s,
        )


@dataclass(frozen=True, kw_only=True)
class ChannelOptions:
    """How a client reaches a veil server.

    - ``tls_ca``: CA bundle (PEM) that signed the server's certificate (``grpcs://``; ``None``:
      the system roots); ``tls_cert`` + ``tls_key``: this client's certificate for mutual TLS.
    - ``token``: bearer token sent with every call (see :func:`read_token`).
    - ``timeout_s``: deadline of a unary call; ``frame_timeout_s``: longest wait for one
      frame's result on a stream; ``stream_timeout_s``: deadline of a whole ``DetectStream``
      (one video); ``job_timeout_s``: deadline of a cloud job, upload to last byte back.
    - ``encoding`` and ``jpeg_quality``: how frames travel (hybrid mode).
    - ``max_message_bytes``: the largest message sent or received.
    """

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    frame_timeout_s: float = 30.0
    stream_timeout_s: float = 6 * 3600.0
    job_timeout_s: float = 6 * 3600.0
    encoding: Encoding = Encoding.PNG
    jpeg_quality: int = 90
    max_message_bytes: int = 16 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoding", Encoding(self.encoding))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together (mutual TLS)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality {self.jpeg_quality} must be between 1 and 100")
        for name in ("timeout_s", "frame_timeout_s", "stream_timeout_s", "job_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (first non-comment line), else ``$VEIL_TOKEN``, else None."""
    if path is None:
        return os.environ.get("VEIL_TOKEN") or None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc.strerror or exc}") from exc
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            return text.split()[0]
    raise ConfigError(f"token file {path} holds no token")


def parse_url(url: str) -> tuple[str, bool]:
    """``grpc://host:port`` or ``grpcs://host:port`` as (gRPC target, use TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("grpc", "grpcs") or not parts.hostname or parts.port is None:
        raise ConfigError(f"server URL {url!r} must read grpc://HOST:PORT or grpcs://HOST:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"server URL {url!r} has a path or query; give only HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", parts.scheme == "grpcs"


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc


def open_channel(url: str, options: ChannelOptions) -> tuple[grpc.Channel, str]:
    """A channel to ``url`` (see :func:`parse_url`) and its target, for messages."""
    target, secure = parse_url(url)
    channel_args = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if not secure:
        if options.tls_ca or options.tls_cert:
            raise ConfigError(f"{url}: TLS files given for a plain grpc:// URL; use grpcs://")
        return grpc.insecure_channel(target, options=channel_args), target
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(options.tls_ca),
        private_key=_read(options.tls_key),
        certificate_chain=_read(options.tls_cert),
    )
    return grpc.secure_channel(target, credentials, options=channel_args), target


def frame_message(
    image: Image,
    display_size: tuple[int, int],
    *,
    index: int,
    encoding: Encoding = Encoding.PNG,
    jpeg_quality: int = 90,
) -> Any:
    """A ``veil.v1.Frame`` carrying ``image`` (RGB uint8, already scaled)."""
    pb = _pb()
    height, width = image.shape[:2]
    if encoding is Encoding.RAW:
        data, kind = np.ascontiguousarray(image, np.uint8).tobytes(), pb.IMAGE_ENCODING_RAW
    else:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if encoding is Encoding.PNG:
            ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            kind = pb.IMAGE_ENCODING_PNG
        else:
            ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            kind = pb.IMAGE_ENCODING_JPEG
        if not ok:
            raise DetectorError(f"cannot encode a {width}x{height} frame as {encoding.value}")
        data = buffer.tobytes()
    return pb.Frame(
        index=index,
        encoding=kind,
        data=data,
        width=width,
        height=height,
        display_width=display_size[0],
        display_height=display_size[1],
    )


def detections_from(result: Any) -> Detections:
    """``Detections`` from a ``veil.v1.FrameResult`` (float32 on the wire, as in process)."""
    faces = result.faces
    if not faces:
        return Detections.empty()
    boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in faces], np.float32)
    scores = np.array([f.score for f in faces], np.float32)
    landmarks = None
    if all(len(f.landmarks) == 10 for f in faces):
        landmarks = np.array([list(f.landmarks) for f in faces], np.float32).reshape(-1, 5, 2)
    sources = None
    if any(f.sources for f in faces):  # a fused detector names its members for every face
        sources = np.array([f.sources for f in faces], np.uint32)
    return Detections(boxes, scores, landmarks, sources)


def _params(settings: DetectorSettings) -> Any:
    # The model runs at the track threshold when there is one, as in process (open_detector).
    return _pb().DetectorParams(
        model=settings.model,
        max_side=settings.max_side,
        score_threshold=settings.model_threshold,
        nms_threshold=settings.nms_threshold,
    )


def _unary(
    call: Callable[..., Any], request: Any, options: ChannelOptions, what: str, target: str
) -> Any:
    failures = 0
    while True:
        try:
            return call(request, timeout=options.timeout_s, metadata=options.metadata)
        except grpc.RpcError as exc:
            failures += 1
            if exc.code() in _RETRYABLE and failures < options.retry.attempts:  # type: ignore[attr-defined]
                logger.warning("%s at %s unavailable; retrying (%d)", what, target, failures)
                time.sleep(options.retry.backoff(failures))
                continue
            raise _translate(exc, what, target) from exc


class _StreamEnded(Exception):
    """The server ended a DetectStream early without a status (treated as a drop)."""


class _Stream:
    """One open ``DetectStream`` call: a queue feeds its requests, a thread drains responses."""

    def __init__(self, stub: Any, params: Any, options: ChannelOptions) -> None:
        pb = _pb()
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

    def send(self, frame: Any) -> None:
        self._requests.put(_pb().DetectStreamRequest(frame=frame))

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
        self._url = url
        self._channel, self._target = open_channel(url, self._options)
        self._stub = _stub(self._channel)
        self._params = _params(settings)
        self._stream: _Stream | None = None
        self._window = 1
        self._next_index = 0
        self._lock = threading.Lock()
        try:
            model = _unary(
                self._stub.GetModelInfo,
                _pb().GetModelInfoRequest(detector=self._params),
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
        self._info = _info_from(model, transport)
        if model.veil_version != __version__:
            logger.warning("server runs veil %s, this client %s", model.veil_version, __version__)

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

    def _exchange(self, pending: deque[Any]) -> list[Detections]:
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
                        _describe(exc),
                        failures,
                        self._options.retry.attempts - 1,
                    )
                    time.sleep(self._options.retry.backoff(failures))
                    continue
                if code in _RETRYABLE and failures < self._options.retry.attempts:
                    logger.warning(
                        "detection stream to %s dropped (%s); resuming from frame %d (%d/%d)",
                        self._target,
                        _describe(exc),
                        pending[0].index,
                        failures,
                        self._options.retry.attempts - 1,
                    )
                    time.sleep(self._options.retry.backoff(failures))
                    continue
                if code in _RETRYABLE:
                    raise ServerLost(
                        f"detection at {self._target}: the server stayed unreachable after "
                        f"{failures} attempts ({_describe(exc)})",
                        "UNAVAILABLE",
                    ) from exc
                if isinstance(exc, grpc.RpcError):
                    raise _translate(exc, "detection", self._target) from exc
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
            results.append(detections_from(result))
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


def _info_from(model: Any, transport: dict[str, Any] | None) -> DetectorInfo:
    return DetectorInfo(
        model=model.model,
        weights_sha256=model.weights_sha256,
        backend=model.backend,
        execution_provider=model.execution_provider,
        max_side=model.max_side,
        score_threshold=model.score_threshold,
        nms_threshold=model.nms_threshold,
        options=json.loads(model.options_json or "{}"),
        transport=transport,
        license=model.license,
    )


# -- cloud mode -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RemoteJobResult:
    output: Path | None
    record: Path | None
    manifest: Path | None
    output_sha256: str
    record_sha256: str
    summary: dict[str, Any]


def job_start(
    *,
    input_name: str,
    input_size: int,
    output_name: str,
    write_record: bool,
    preset: str,
    detector: DetectorSettings,
    tracker: TrackerConfig,
    style: Style,
    encoder: EncoderSettings,
    drop_streams: Sequence[int] = (),
) -> Any:
    """The ``veil.v1.JobStart`` for these settings (all given explicitly); ``drop_streams``
    are the input's other picture streams, left out of the output (``--drop-stream``)."""
    pb = _pb()
    return pb.JobStart(
        input_name=input_name,
        input_size=input_size,
        output_name=output_name,
        write_record=write_record,
        preset=preset,
        detector=pb.DetectorSettings(
            model=detector.model,
            max_side=detector.max_side,
            score_threshold=detector.score_threshold,
            nms_threshold=detector.nms_threshold,
            batch_size=detector.batch_size,
            track_threshold=detector.track_threshold,
            stride=detector.stride,
            flip=detector.flip,
            tiles=detector.tiles,
            low_light=detector.low_light,
        ),
        tracker=pb.TrackerSettings(
            set=True,
            max_gap=tracker.max_gap,
            lead_in=tracker.lead_in,
            lead_out=tracker.lead_out,
            match_iou=tracker.match_iou,
            growth_per_frame=tracker.growth_per_frame,
            confirm_hits=tracker.confirm_hits,
            steady_span=tracker.steady_span,
            follow_span=tracker.follow_span,
            recheck=tracker.recheck,
        ),
        style=pb.StyleSettings(
            set=True,
            effect=style.effect.value,
            shape=style.shape.value,
            margin=style.margin,
            feather=style.feather,
            blur_strength=style.blur_strength,
            pixel_blocks=style.pixel_blocks,
            color=list(style.color),
        ),
        encoder=pb.EncoderOptions(
            set=True,
            codec=encoder.codec or "",
            preset=encoder.preset,
            crf=encoder.crf,
            pix_fmt=encoder.pix_fmt or "",
            threads=encoder.threads,
        ),
        drop_streams=list(drop_streams),
    )


class _Receiving:
    """Files coming back from a job, written beside their final names, renamed at the end."""

    def __init__(self, targets: dict[int, Path | None]) -> None:
        self._targets = targets
        self._partial: dict[int, Path] = {}
        self._files: dict[int, Any] = {}
        self.hashes: dict[int, Any] = {}

    def write(self, kind: int, data: bytes) -> None:
        target = self._targets.get(kind)
        if target is None:
            return
        if kind not in self._files:
            partial = partial_path(target)
            try:
                self._files[kind] = partial.open("wb")
            except OSError as exc:
                raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from exc
            self._partial[kind] = partial
            self.hashes[kind] = hashlib.sha256()
        self._files[kind].write(data)
        self.hashes[kind].update(data)

    def commit(self) -> None:
        for kind, fh in self._files.items():
            fh.close()
            target = self._targets[kind]
            assert target is not None
            os.replace(self._partial[kind], target)
        self._files.clear()

    def abort(self) -> None:
        for kind, fh in self._files.items():
            fh.close()
            self._partial[kind].unlink(missing_ok=True)
        self._files.clear()


def run_remote_job(
    url: str,
    input: Path,
    *,
    output: Path | None,
    record: Path | None,
    start: Any,
    options: ChannelOptions | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> RemoteJobResult:
    """Run a cloud job: upload ``input`` with ``start`` (see :func:`job_start`), write the
    output video to ``output`` (with its manifest beside it) and the record to ``record``,
    all or nothing. UNAVAILABLE before any answer is retried from the start."""
    options = options or ChannelOptions()
    pb = _pb()
    kinds = pb.FileChunk
    manifest = None if output is None else output.with_name(output.name + ".manifest.json")
    targets = {kinds.KIND_OUTPUT: output, kinds.KIND_RECORD: record, kinds.KIND_MANIFEST: manifest}
    channel, target = open_channel(url, options)
    stub = _stub(channel)

    def requests() -> Iterator[Any]:
        yield pb.JobRequest(start=start)
        try:
            with input.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield pb.JobRequest(chunk=chunk)
        except OSError as exc:
            logger.error("%s: cannot read (%s)", input, exc)  # the server then sees a short upload

    failures = 0
    try:
        while True:
            receiving = _Receiving(targets)
            answered = False
            try:
                done = None
                for response in stub.RunJob(
                    requests(), timeout=options.job_timeout_s, metadata=options.metadata
                ):
                    answered = True
                    kind = response.WhichOneof("kind")
                    if kind == "progress" and on_progress is not None:
                        total = response.progress.frames_total or None
                        on_progress(response.progress.frames_done, total)
                    elif kind == "file":
                        receiving.write(response.file.kind, response.file.data)
                    elif kind == "done":
                        done = response.done
                if done is None:
                    raise RemoteError(f"job at {target}: the server ended without a result")
                _verify(receiving, done, kinds)
                receiving.commit()
                return RemoteJobResult(
                    output=output,
                    record=record,
                    manifest=manifest,
                    output_sha256=done.output_sha256,
                    record_sha256=done.record_sha256,
                    summary=json.loads(done.summary_json or "{}"),
                )
            except grpc.RpcError as exc:
                receiving.abort()
                failures += 1
                if not answered and exc.code() in _RETRYABLE and failures < options.retry.attempts:  # type: ignore[attr-defined]
                    logger.warning("job at %s unavailable; retrying (%d)", target, failures)
                    time.sleep(options.retry.backoff(failures))
                    continue
                raise _translate(exc, "job", target) from exc
            except BaseException:
                receiving.abort()
                raise
    finally:
        channel.close()


def _verify(receiving: _Receiving, done: Any, kinds: Any) -> None:
    expected = {
        kinds.KIND_OUTPUT: done.output_sha256,
        kinds.KIND_RECORD: done.record_sha256,
        kinds.KIND_MANIFEST: done.manifest_sha256,
    }
    for kind, digest in receiving.hashes.items():
        if digest.hexdigest() != expected[kind]:
            raise RemoteError(
                f"job: the {kinds.Kind.Name(kind).removeprefix('KIND_').lower()} received does "
                "not match the sha256 the server sent"
            )
