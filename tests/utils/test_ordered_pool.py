"""uscl.utils.ordered_pool: results in input order, bounded, and a dying worker found and reported."""

from __future__ import annotations

import os
import time

import pytest

from uscl.utils.ordered_pool import available_cores, ordered_map


def slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.02 * (x % 3))  # finish out of order
    return x * x, os.getpid()


def dies_on_seven(x: int) -> int:
    if x == 7:
        os._exit(3)  # as if the system killed the worker (OOM)
    return -x


def raises_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


def test_in_order_in_workers_with_a_bounded_window():
    done = []
    fed = []

    def items():
        for i in range(12):
            fed.append(i)
            # never more than the window (2 x 2) ahead of what was handed out
            assert len(fed) - len(out) <= 4 + 1
            yield i

    out = []
    for item, (sq, pid) in ordered_map(slow_square, items(), 2, on_done=lambda i, r: done.append(i)):
        out.append((item, sq))
        assert pid != os.getpid()
    assert out == [(i, i * i) for i in range(12)]
    assert sorted(done) == list(range(12))


def test_one_worker_runs_in_process():
    assert [r for _, r in ordered_map(lambda x: (x, os.getpid()), [1, 2], 1)] == [(1, os.getpid()), (2, os.getpid())]


def test_a_dying_worker_is_found_and_the_run_goes_on():
    crashed = []

    def report(item, exc):
        crashed.append(item)
        return None

    results = list(ordered_map(dies_on_seven, range(10), 2, crashed=report))
    assert results == [(i, None if i == 7 else -i) for i in range(10)]
    assert crashed == [7]


def test_an_exception_of_fn_is_raised_in_order():
    got = []
    with pytest.raises(ValueError, match="two"):
        for _, r in ordered_map(raises_on_two, range(5), 2):
            got.append(r)
    assert got == [0, 1]


def test_available_cores():
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
