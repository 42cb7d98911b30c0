"""Cloud mode (``--remote grpc[s]://host:port``): :func:`run_remote_job`.

The file goes up with its settings (``veil.wire.job_start``), the server runs the same
pipeline, and the anonymised file, record and manifest come back, each checked against the
sha256 the server sent and renamed into place only when all of them arrived: all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from veil.core import OutputError
from veil.job import manifest_path
from veil.media import partial_path
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc

from ._channel import RETRYABLE, ChannelOptions, RemoteError, open_channel, translate

__all__ = ["RemoteJobResult", "run_remote_job"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class RemoteJobResult:
    output: Path | None
    record: Path | None
    manifest: Path | None
    output_sha256: str
    record_sha256: str
    summary: dict[str, Any]


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
    start: pb.JobStart,
    options: ChannelOptions | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> RemoteJobResult:
    """Run a cloud job: upload ``input`` with ``start`` (see ``veil.wire.job_start``), write
    the output video to ``output`` (with its manifest beside it) and the record to
    ``record``, all or nothing. UNAVAILABLE before any answer is retried from the start."""
    options = options or ChannelOptions()
    kinds = pb.FileChunk
    manifest = None if output is None else manifest_path(output)
    targets: dict[int, Path | None] = {
        kinds.KIND_OUTPUT: output,
        kinds.KIND_RECORD: record,
        kinds.KIND_MANIFEST: manifest,
    }
    channel, target = open_channel(url, options)
    stub = pb_grpc.DetectionServiceStub(channel)

    def requests() -> Iterator[pb.JobRequest]:
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
                _verify(receiving, done)
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
                if not answered and exc.code() in RETRYABLE and failures < options.retry.attempts:  # type: ignore[attr-defined]
                    logger.warning("job at %s unavailable; retrying (%d)", target, failures)
                    time.sleep(options.retry.backoff(failures))
                    continue
                raise translate(exc, "job", target) from exc
            except BaseException:
                receiving.abort()
                raise
    finally:
        channel.close()


def _verify(receiving: _Receiving, done: pb.JobDone) -> None:
    kinds = pb.FileChunk
    expected: dict[int, str] = {
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
