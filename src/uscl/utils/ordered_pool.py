"""A function over items in worker processes, the results handed back in input order.

>>> for item, result in ordered_map(work, items, workers=4, on_done=tick):
...     use(item, result)          # in the order of ``items``, whatever order they finished in

* The workers are started with ``forkserver`` where there is one, else
  ``spawn``: never a bare ``fork`` of a parent that may hold threads (torch).
  ``preload`` names modules the fork server imports once, so each worker
  starts in milliseconds with them loaded.
* At most ``window`` items (default 2 × workers) are in flight: results that
  finish early wait (small) until the ones before them are handed out, so
  memory and the backlog stay bounded however many items there are.
* ``on_done(item, result)`` is called in the parent as soon as an item
  finishes (completion order): progress bars, or saving what must survive a
  kill as early as possible.
* A worker that dies (killed by the system, out of memory, a crash in a C
  library) breaks the whole pool, and with it every item in flight. Those
  items are run again one at a time, each in a fresh one-worker pool, so the
  one that kills its worker is found: its result is ``crashed(item, error)``
  (default: the error is raised), and the run goes on in a new pool. Where
  no worker can run anything at all (a script without the
  ``if __name__ == "__main__":`` guard), :class:`WorkersCannotStart` is raised.
* ``workers <= 1`` runs ``fn`` in this process, one item after the other (no
  pool): the same results, and exceptions raised as they come.

``fn`` must be picklable (a module-level function) and should turn its own
exceptions into results: an exception raised by ``fn`` in a worker is
re-raised here, as in-process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def starting_worker() -> bool:
    """True while this process is a worker importing its parent's main script (a script without the
    ``if __name__ == "__main__":`` guard runs its top-level code again there)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def pool_context(preload: Sequence[str] = ()):
    """forkserver (with ``preload`` imported once by the server) where available, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the run; workers leave their
    # current item to be cancelled instead of each printing a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("USCL_NO_PROGRESS", "1")
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()


def _exit_with_parent(sentinel) -> None:
    """A parent killed outright (kill -9 of it alone) leaves no one to stop the workers: they stop here,
    mid-item (what they were writing is a temp file a later run removes)."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _new_pool(workers: int, preload: Sequence[str]) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(preload), initializer=_init_worker)


def _done_future(result) -> Future:
    fut: Future = Future()
    fut.set_result(result)
    return fut


class WorkersCannotStart(RuntimeError):
    """Worker processes die before running anything (not one item's fault)."""


_CANNOT_START: list[str] = []  # set once workers were seen dying as they start: later pools would too


def workers_cannot_start() -> bool:
    """Whether workers of this process were seen dying as they start (its script lacks the main guard)."""
    return bool(_CANNOT_START)


def _probe() -> bool:
    return True


def _workers_start(preload: Sequence[str]) -> bool:
    """Whether a fresh worker runs anything at all: a script that starts a pool without
    ``if __name__ == "__main__":`` kills every worker while it re-imports the script."""
    pool = _new_pool(1, preload)
    try:
        return pool.submit(_probe).result()
    except BrokenProcessPool:
        return False
    finally:
        pool.shutdown(wait=True)


def _isolated(fn: Callable[[T], R], item: T, preload: Sequence[str],
              crashed: Callable[[T, BaseException], R] | None) -> R:
    """``fn(item)`` alone in a fresh one-worker pool: the item whose worker died, found."""
    pool = _new_pool(1, preload)
    try:
        return pool.submit(fn, item).result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True)
        if not _workers_start(preload):
            _CANNOT_START.append("yes")
            raise WorkersCannotStart(
                "worker processes die as they start (see their error above). A script that runs this "
                "must keep its top-level code under `if __name__ == \"__main__\":` (the workers import the "
                "script), or use one worker") from exc
        if crashed is None:
            raise
        return crashed(item, exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    *,
    window: int | None = None,
    on_done: Callable[[T, R], None] | None = None,
    crashed: Callable[[T, BaseException], R] | None = None,
    preload: Sequence[str] = (),
) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) for every item, in input order; see the module docstring."""
    if workers <= 1:
        for item in items:
            result = fn(item)
            if on_done is not None:
                on_done(item, result)
            yield item, result
        return
    yield from _parallel(fn, iter(items), workers, window or 2 * workers, on_done, crashed, preload)


def _parallel(fn, items: Iterator, workers: int, window: int, on_done, crashed, preload) -> Iterator:
    pending: dict[int, tuple[object, Future]] = {}  # input position → (item, future), in flight or waiting
    reported: set[int] = set()  # positions whose on_done has run
    head = submitted = 0
    exhausted = False
    pool = _new_pool(workers, preload)
    finished = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                item = next(items, _END)
                if item is _END:
                    exhausted = True
                    break
                pending[submitted] = (item, pool.submit(fn, item))
                submitted += 1
            if not pending:
                finished = True
                return
            while not pending[head][1].done():
                wait([f for i, (_, f) in pending.items() if i not in reported], return_when=FIRST_COMPLETED)
                _report(pending, reported, on_done)
            if isinstance(pending[head][1].exception(), BrokenProcessPool):
                pool = _after_break(pool, fn, pending, reported, workers, crashed, preload)
            _report(pending, reported, on_done)
            while head in pending and pending[head][1].done():
                item, fut = pending.pop(head)
                reported.discard(head)
                head += 1
                yield item, fut.result()
    finally:  # done: the workers exit before this returns; stopped early: they are not waited for
        pool.shutdown(wait=finished, cancel_futures=True)


def _after_break(pool, fn, pending: dict, reported: set[int], workers: int, crashed, preload):
    """A worker died: rerun each item that broke with it alone (finding the culprit), resubmit the
    rest to a new pool; returns that pool."""
    pool.shutdown(wait=True)  # a broken pool fails every future it still holds
    for i, (item, fut) in sorted(pending.items()):
        if i not in reported and fut.done() and not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool):
            pending[i] = (item, _done_future(_isolated(fn, item, preload, crashed)))
    pool = _new_pool(workers, preload)
    for i, (item, fut) in sorted(pending.items()):
        if fut.cancelled() or not fut.done():
            pending[i] = (item, pool.submit(fn, item))
    return pool


def _report(pending: dict, reported: set[int], on_done) -> None:
    """on_done for every finished item not yet reported (a broken one waits for its rerun)."""
    for i, (item, fut) in sorted(pending.items()):
        if i in reported or not fut.done():
            continue
        if isinstance(fut.exception(), BrokenProcessPool):
            continue
        reported.add(i)
        if on_done is not None and fut.exception() is None:
            on_done(item, fut.result())


_END = object()
