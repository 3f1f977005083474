"""core.vec's sort against NumPy's lexsort: ties in index order, for any integer keys."""

from __future__ import annotations

import numpy as np
import pytest

from core.vec import run_first, run_last, stable_order


def lexsort(key: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(key.size), key))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 70000])
@pytest.mark.parametrize("span", [3, 1 << 16, 1 << 20, 1 << 40, 1 << 62])
def test_stable_order_is_lexsort(n, span):
    """Radix (narrow keys), packed np.sort (wide keys) and the argsort fallback (too wide to share
    an int64 with the index) all give lexsort's order; few distinct keys make ties common."""
    rng = np.random.default_rng(n + span)
    key = rng.integers(-span, span, n)
    assert (stable_order(key) == lexsort(key)).all()
    ties = rng.choice(np.array([-span, 0, span - 1]), n)
    assert (stable_order(ties) == lexsort(ties)).all()


@pytest.mark.parametrize("key", [
    np.array([2**62, -2**62]),  # spans 2**63: the subtraction must not overflow
    np.array([2**63, 0], dtype=np.uint64),
    np.array([2**63 + 1, 2**63], dtype=np.uint64),
    np.array([-2**31, 2**31 - 1, 0, -2**31], dtype=np.int32),  # the span does not fit the key's own type
    np.array([3, 1, 2, 1], dtype=np.uint8),
], ids=["int64 span 2**63", "uint64 wide", "uint64 high", "int32 span", "uint8"])
def test_stable_order_edge_types(key):
    assert (stable_order(key) == lexsort(key)).all()


def test_runs():
    key = np.array([4, 4, 1, 7, 7, 7])
    assert run_first(key).tolist() == [0, 2, 3]
    assert run_last(key).tolist() == [1, 2, 5]
    assert run_first(key[:0]).size == run_last(key[:0]).size == 0


@pytest.mark.parametrize("n", [0, 1, 5, 1000, 70000])
def test_frame_major_orders_page_events_by_frame_then_time(n):
    from core.parisc_batch import _frame_major

    rng = np.random.default_rng(n)
    pfn = np.where(rng.random(n) < 0.8, rng.integers(0, 50 + n // 4, n), -1)
    at = np.flatnonzero(pfn >= 0)
    assert (_frame_major(pfn) == at[lexsort(pfn[at])]).all()


def test_ranges_lays_the_ranges_end_to_end():
    from core.vec import ranges

    assert ranges(np.array([5, 0, 9]), np.array([2, 0, 3])).tolist() == [5, 6, 9, 10, 11]
    assert ranges(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).size == 0
