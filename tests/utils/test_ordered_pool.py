"""uscl.utils.ordered_pool: results in input order whatever the workers; errors and dead workers per item."""

import os

import pytest

from uscl.utils.ordered_pool import WorkerDied, ordered_map


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is bad")
    if x == 5:
        os._exit(9)  # the worker dies, as when the kernel kills it for memory
    return x * x


@pytest.mark.parametrize("workers", [0, 2])
def test_order_and_errors_are_per_item(workers):
    items = [1, 2, 3, 4, 6, 7, 8]
    out = list(ordered_map(square_or_fail, items, workers, window=3))
    assert [i for i, _, _ in out] == items
    assert [r for _, r, e in out if e is None] == [1, 4, 16, 36, 49, 64]
    (item, _, err), = [o for o in out if o[2] is not None]
    assert item == 3 and isinstance(err, ValueError) and str(err) == "three is bad"


def test_a_dead_worker_fails_only_its_item():
    items = [1, 2, 4, 5, 6, 7, 8, 9]
    out = list(ordered_map(square_or_fail, items, 2, window=4))
    assert [i for i, _, _ in out] == items
    died = [(i, e) for i, _, e in out if e is not None]
    assert [i for i, _ in died] == [5] and isinstance(died[0][1], WorkerDied)
    assert {i: r for i, r, e in out if e is None} == {i: i * i for i in items if i != 5}
