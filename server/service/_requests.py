"""What one call may ask of the server, and how it is held to it.

:class:`Limits` bound a request, a stream, a client and the cloud jobs; :class:`Slots` count
the streams and jobs held; every call runs to a deadline (its own, else
``Limits.default_deadline_s``) and stops waiting when its client goes away (:func:`wait`).
A call that breaks them raises the service's own errors (``_status``), each with its explicit
status code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from ._status import Cancelled, DeadlineExceeded, InvalidRequest, Overloaded

__all__ = [
    "MAX_NAME_BYTES",
    "POLL_S",
    "Limits",
    "Slots",
    "call_deadline",
    "file_name",
    "first_message",
    "wait",
]

POLL_S = 0.25
"""How often a waiting call looks whether its client went away or its deadline passed."""

#: The longest job file name taken, in UTF-8 bytes: file systems stop at 255, and veil adds
#: suffixes of its own (``.veil.json``, ``.manifest.json``, the partial files' names).
MAX_NAME_BYTES = 200

_T = TypeVar("_T")


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


class Slots:
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


def call_deadline(context: grpc.ServicerContext, limits: Limits) -> float:
    """The call's deadline on ``time.monotonic``'s clock."""
    remaining = context.time_remaining()
    if remaining is None:
        remaining = limits.default_deadline_s
    return time.monotonic() + remaining


def wait(future: Future[_T], context: grpc.ServicerContext, deadline: float) -> _T:
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
            return future.result(timeout=min(remaining, POLL_S))
        except FutureTimeout:
            continue
        except CancelledError:
            raise Cancelled("the frame was cancelled") from None


def first_message(requests: Iterator[Any], kind: str, method: str) -> Any:
    """A stream's first request, which must be ``kind`` (its ``oneof``)."""
    try:
        first = next(requests)
    except StopIteration:
        raise InvalidRequest(f"{method}: the stream ended before its {kind} message") from None
    if first.WhichOneof("kind") != kind:
        raise InvalidRequest(f"{method}: the first message must be {kind}")
    return first


def file_name(name: str, what: str) -> str:
    """``name`` when it is a plain file name the server can write, else InvalidRequest."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or "\0" in name:
        raise InvalidRequest(f"{what} {name!r} must be a plain file name (no directories)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidRequest(
            f"{what} is {len(name.encode())} bytes long; at most {MAX_NAME_BYTES} are taken"
        )
    return name
