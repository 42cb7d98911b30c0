"""The helper threads a job's stages run in: the decoder running ahead of the job
(:class:`Ahead`), and work handed to a pool and taken back in the order given
(:class:`InOrder`: detection batches, frames to draw masks on).

Both are bounded by counts, never by timing, so what the job does is a function of its input
alone; and both surface a helper's exception in the calling thread, where it stops the job
(never a helper dead in silence and the job waiting for it forever).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

K = TypeVar("K")
R = TypeVar("R")


class Ahead:
    """Runs an iterator in a thread, at most ``depth`` items ahead of the consumer.

    Items come out in the iterator's order; an exception in the thread is raised in the
    consumer at the point it happened (never a silently dead thread and a consumer waiting
    forever). ``close`` stops the thread and waits for it, so whatever the iterator reads
    (a container) can be closed safely afterwards: also when Ctrl-C or SIGTERM cut the
    thread's start short (``Thread.start`` raised, the thread ran on, and the job closed the
    container it was demuxing: a segfault).
    """

    _DONE = object()

    def __init__(self, items: Iterable[Any], *, depth: int, name: str) -> None:
        self._items = items
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # The thread sets ``_begun`` and then looks at ``_stop``; ``close`` sets ``_stop`` and
        # then looks at ``_begun``: a thread that begins after ``close`` looked stops before
        # reading anything, and one that began is joined (it began: it can be).
        self._begun = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        self._begun.set()
        if self._stop.is_set():
            return
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
        except BaseException as exc:
            self._put((None, exc))
            return
        self._put((self._DONE, None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item, exc = self._queue.get()
            if exc is not None:
                raise exc
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._begun.is_set():
            self._thread.join()


class InOrder(Generic[K, R]):
    """Calls run by a pool of ``workers`` threads, taken back in the order they were
    submitted, each with the ``key`` it was submitted with.

    :meth:`ready` hands back the calls beyond the latest ``depth`` (waiting for each): a
    count, never a timing, decides when a result is taken. :meth:`drain` hands back the rest.
    The caller takes each result from its future, so it decides what a failed call means.

    Every worker thread starts in the constructor, before any call is queued: a pool
    starting its threads on first use let an interrupt (Ctrl-C, SIGTERM) inside one's
    ``Thread.start`` leave a queued call running on a thread :meth:`close` does not know,
    after the job closed what the call uses (the decode thread's twin of this crashed,
    ``Ahead``).
    """

    def __init__(self, *, workers: int, depth: int, name: str) -> None:
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._pending: deque[tuple[K, Future[R]]] = deque()
        # each worker holds at the barrier, so the next submit finds none idle and starts one
        started = threading.Barrier(workers + 1)
        try:
            for _ in range(workers):
                self._pool.submit(started.wait)
            started.wait()
        except BaseException:
            started.abort()
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise

    def submit(self, key: K, call: Callable[..., R], *args: Any, **kwargs: Any) -> None:
        self._pending.append((key, self._pool.submit(call, *args, **kwargs)))

    def ready(self) -> Iterator[tuple[K, Future[R]]]:
        while len(self._pending) > self._depth:
            yield self._pending.popleft()

    def drain(self) -> Iterator[tuple[K, Future[R]]]:
        while self._pending:
            yield self._pending.popleft()

    def close(self) -> None:
        """Stop the pool: calls not started are cancelled, running ones waited for."""
        self._pool.shutdown(wait=True, cancel_futures=True)
