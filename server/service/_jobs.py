"""Cloud jobs (``RunJob``): the client's file and settings in, the anonymised file, record
and manifest out.

The job is checked before a byte is received (:class:`CloudJob`); the upload goes into a
temporary directory that is removed when the call ends, however it ends; the pipeline runs
the client's own code (``veil.anonymize``/``veil.detect``) with detection through the shared
batcher (:class:`BatchedDetector`), so a cloud job's record and bytes equal on-prem's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from veil import anonymize, default_record_path, detect
from veil.core import Detections, DetectorInfo, Image
from veil.job import manifest_path
from veil.media import probe
from veil.v1 import detection_pb2 as pb
from veil.wire import read_job_start

from ._batcher import Batcher, DetectorKey
from ._requests import Limits, file_name, wait
from ._status import Cancelled, InvalidRequest, Overloaded

__all__ = ["BatchedDetector", "CloudJob"]

_CHUNK = 1 << 20


class _JobCancelled(BaseException):
    """Raised inside a cloud job's detector when its client went away. A BaseException so
    the pipeline's fail-closed handler (which masks frames whose detection failed) does not
    take it for a detector error: the job stops and writes nothing."""


class BatchedDetector:
    """A ``veil.Detector`` over the shared batcher, for cloud jobs run on the server.
    ``batcher`` is asked anew for every batch: a server that starts draining refuses the
    rest of the job (UNAVAILABLE)."""

    def __init__(
        self,
        batcher: Callable[[], Batcher],
        *,
        key: DetectorKey,
        info: DetectorInfo,
        deadline: float,
        context: grpc.ServicerContext,
    ) -> None:
        self._batcher = batcher
        self._key = key
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
        batcher = self._batcher()
        while True:  # a job waits for room in the queue rather than mask frames by policy
            try:
                futures = batcher.submit(self._key, images, display_sizes, deadline=self._deadline)
                break
            except Overloaded:
                if time.monotonic() >= self._deadline or not self._context.is_active():
                    raise
                time.sleep(0.05)
        try:
            found = [wait(f, self._context, self._deadline) for f in futures]
        except Cancelled:
            raise _JobCancelled from None
        self.frames_done += len(found)
        return found

    def close(self) -> None:
        pass


class CloudJob:
    """One ``RunJob``, its ``JobStart`` checked: plain file names, an output video or a
    record asked for, an upload within ``max_job_bytes``, valid settings."""

    def __init__(self, start: pb.JobStart, limits: Limits) -> None:
        self.input_name = file_name(start.input_name, "input_name")
        self.output_name = (
            file_name(start.output_name, "output_name") if start.output_name else None
        )
        if self.output_name is None and not start.write_record:
            raise InvalidRequest("RunJob: asks for neither an output video nor a record")
        if start.input_size > limits.max_job_bytes:
            raise Overloaded(
                f"RunJob: input of {start.input_size} bytes is over this server's limit of "
                f"{limits.max_job_bytes}"
            )
        self.input_size = start.input_size
        self.write_record = start.write_record
        self.drop_streams = list(start.drop_streams)
        self.config, self.style, self.encoder = read_job_start(start)

    def run(
        self, requests: Iterator[pb.JobRequest], detector: BatchedDetector
    ) -> Iterator[pb.JobResponse]:
        """Receive the upload, run the pipeline (progress while it runs), send the files."""
        with tempfile.TemporaryDirectory(prefix="veil-job-") as tmp:
            work = Path(tmp)
            source = work / "in" / self.input_name
            source.parent.mkdir()
            (work / "out").mkdir()
            self._receive(requests, source)
            frames_total = 0
            with contextlib.suppress(Exception):
                frames_total = probe(source).frames
            yield pb.JobResponse(
                progress=pb.JobProgress(
                    stage=pb.JobProgress.STAGE_RECEIVED, frames_total=frames_total
                )
            )
            output = None if self.output_name is None else work / "out" / self.output_name
            record = default_record_path(work / "out" / (self.output_name or self.input_name))
            yield from self._pipeline(source, output, record, detector, frames_total)
            yield pb.JobResponse(
                progress=pb.JobProgress(
                    stage=pb.JobProgress.STAGE_SENDING,
                    frames_done=detector.frames_done,
                    frames_total=frames_total,
                )
            )
            yield from _send(output, record)

    def _receive(self, requests: Iterator[pb.JobRequest], path: Path) -> None:
        size = self.input_size
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

    def _pipeline(
        self,
        source: Path,
        output: Path | None,
        record: Path,
        detector: BatchedDetector,
        frames_total: int,
    ) -> Iterator[pb.JobResponse]:
        """Run the job in a thread; progress every half second while frames are detected."""
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def run() -> None:
            try:
                if output is None:
                    detect(
                        source,
                        record,
                        config=self.config,
                        detector=detector,
                        drop_streams=self.drop_streams,
                    )
                else:
                    anonymize(
                        source,
                        output,
                        record=record,
                        write_record=self.write_record,
                        config=self.config,
                        detector=detector,
                        drop_streams=self.drop_streams,
                        style=self.style,
                        encoder=self.encoder,
                    )
                events.put(("done", None))
            except BaseException as exc:
                events.put(("error", exc))

        threading.Thread(target=run, name="veil-job", daemon=True).start()
        reported = -1
        while True:
            try:
                kind, value = events.get(timeout=0.5)
            except queue.Empty:
                if detector.frames_done != reported:
                    reported = detector.frames_done
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
            return


def _send(output: Path | None, record: Path) -> Iterator[pb.JobResponse]:
    """The output, record and manifest in chunks, then ``JobDone`` with their sha256."""
    digests: dict[int, str] = {}
    kinds = pb.FileChunk
    files = [(kinds.KIND_OUTPUT, output), (kinds.KIND_RECORD, record)]
    if output is not None:
        files.append((kinds.KIND_MANIFEST, manifest_path(output)))
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
