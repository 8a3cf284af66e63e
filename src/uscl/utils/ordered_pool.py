"""Map a function over items in worker processes, yielding the outcomes in input order.

Why: decoding a file (``uscl predict``) is CPU-bound and independent of every
other file, so N processes decode N files at once while the parent runs the
model; the consumer still sees the inputs in the order it gave them, so
results are the same whatever the number of workers.

Contract:
- ``workers < 1`` calls ``fn`` in this process (no pool, nothing pickled); ``workers = N``
  runs it in N processes.
- At most ``window`` items (default 2 × workers) are in flight, so memory
  holds a bounded number of results however long the input list is.
- An exception raised by ``fn`` is the item's outcome (it is yielded, not
  raised), as it would be in-process.
- A worker that dies (killed, out of memory) breaks the pool: the items in
  flight are then re-run one at a time in a fresh pool, so the item that
  kills its worker alone gets a :class:`WorkerDied` outcome and the others
  their real results.
- Workers start with ``spawn``: the parent may hold torch's threads, and
  fork after threads is unsafe.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """The worker process running this item died (killed by a signal or out of memory)."""


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int,
                window: int | None = None) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """``(item, result, None)`` or ``(item, None, exception)`` per item, in input order."""
    if workers < 1:
        for item in items:
            try:
                yield item, fn(item), None
            except Exception as exc:  # noqa: BLE001 - the item's outcome, as in a worker
                yield item, None, exc
        return
    window = max(1, window or 2 * workers)
    pool = _Pool(workers)
    pending: deque[tuple[T, Future]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            while len(pending) >= window:
                yield from _take_front(fn, pending, pool)
        while pending:
            yield from _take_front(fn, pending, pool)
    finally:
        pool.close()


def _take_front(fn, pending: deque, pool: "_Pool") -> Iterator[tuple]:
    """The outcome of the oldest item; after a broken pool, every item in flight, one at a time."""
    item, fut = pending[0]
    try:
        value = fut.result()
    except BrokenProcessPool:
        items = [it for it, _ in pending]
        pending.clear()
        yield from _isolate(fn, items, pool)
        return
    except Exception as exc:  # noqa: BLE001 - fn's own exception, pickled back
        pending.popleft()
        yield item, None, exc
        return
    pending.popleft()
    yield item, value, None


def _isolate(fn, items: list, pool: "_Pool") -> Iterator[tuple]:
    """Re-run items one at a time in a fresh pool: one that breaks it alone is the one that kills workers."""
    for item in items:
        pool.restart()
        try:
            yield item, pool.submit(fn, item).result(), None
        except BrokenProcessPool:
            yield item, None, WorkerDied("the worker process decoding it died (killed by a signal or out of "
                                         "memory); the other inputs went on")
        except Exception as exc:  # noqa: BLE001
            yield item, None, exc
    pool.restart()


class _Pool:
    """A ProcessPoolExecutor that can be replaced after it breaks."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))

    def submit(self, fn, item) -> Future:
        return self.executor.submit(fn, item)

    def restart(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._new()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
