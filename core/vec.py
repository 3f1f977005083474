"""Small vector idioms shared by the batched passes."""

from __future__ import annotations

import numpy as np


def stable_order(key: np.ndarray) -> np.ndarray:
    """argsort of ``key`` with ties kept in index order (np.lexsort((arange, key))): a radix sort
    when the keys span less than 2**16, else one quicksort of key * n + index; both several times
    faster than lexsort or a stable argsort of int64."""
    n = key.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    k = key - key.min()
    if int(k.max()) < 1 << 16:  # numpy's stable sort of 16-bit integers is a radix sort: O(n)
        return np.argsort(k.astype(np.uint16), kind="stable")
    return np.argsort(k.astype(np.int64) * n + np.arange(n, dtype=np.int64))


def run_first(key: np.ndarray) -> np.ndarray:
    """Indices of the first element of each run of equal values in ``key`` (grouped into runs)."""
    return np.flatnonzero(np.append(True, key[1:] != key[:-1])) if key.size else np.zeros(0, dtype=np.int64)


def run_last(key: np.ndarray) -> np.ndarray:
    """Indices of the last element of each run of equal values in ``key`` (grouped into runs)."""
    return np.flatnonzero(np.append(key[1:] != key[:-1], True)) if key.size else np.zeros(0, dtype=np.int64)
