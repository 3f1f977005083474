"""Small vector idioms shared by the batched passes."""

from __future__ import annotations

import numpy as np


def stable_order(key: np.ndarray) -> np.ndarray:
    """argsort of integer ``key`` with ties kept in index order (np.lexsort((arange, key))): a
    radix sort when the keys span less than 2**16, else one np.sort of (key << bits) | index,
    the index read back from the low bits. Sorting values (vectorized quicksort) rather than
    arguments is two to three times faster than np.argsort of the same keys, stable or not;
    keys too wide to share an int64 with the index fall back to a stable argsort."""
    n = key.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if key.dtype.kind not in "biu":  # the offsets below are integer arithmetic
        return np.argsort(key, kind="stable")
    low, top = int(key.min()), int(key.max())  # (Python ints: no overflow for any integer type)
    bits = max((n - 1).bit_length(), 1)
    if top - low >= 1 << (62 - bits):
        return np.argsort(key, kind="stable")
    if top - low < 1 << 16:  # numpy's stable sort of 16-bit integers is a radix sort: O(n)
        # the offsets in the key's own type (no widening pass): they wrap, if at all, in 16 bits
        # or more, and only their low 16 bits are kept
        small = key if key.dtype.kind in "iu" and key.itemsize >= 2 else key.astype(np.int16)
        return np.argsort((small - small.dtype.type(low)).astype(np.uint16), kind="stable")
    # uint64 keys past 2**63 are subtracted in their own type; the rest widened first (one pass:
    # the subtraction writes its int64 result)
    k = (key - key.min()).astype(np.int64) if key.dtype == np.uint64 else np.subtract(key, low, dtype=np.int64)
    k <<= bits
    k |= np.arange(n, dtype=np.int64)
    k.sort()
    k &= (1 << bits) - 1
    return k


def merge_order(key: np.ndarray) -> np.ndarray:
    """stable_order of a key that is a few sorted runs laid end to end (or nearly sorted): numpy's
    stable argsort of 32- and 64-bit integers is a timsort, which finds the runs and merges them
    in about one pass, where the sort of packed values in stable_order sorts from scratch (three
    to four times slower on the cache pass's keys)."""
    return np.argsort(key, kind="stable")


def run_first(key: np.ndarray) -> np.ndarray:
    """Indices of the first element of each run of equal values in ``key`` (grouped into runs)."""
    return np.flatnonzero(np.append(True, key[1:] != key[:-1])) if key.size else np.zeros(0, dtype=np.int64)


def run_last(key: np.ndarray) -> np.ndarray:
    """Indices of the last element of each run of equal values in ``key`` (grouped into runs)."""
    return np.flatnonzero(np.append(key[1:] != key[:-1], True)) if key.size else np.zeros(0, dtype=np.int64)


def ranges(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The integer ranges [start[i], start[i] + length[i]) laid end to end."""
    before = np.cumsum(length) - length  # elements of the earlier ranges
    return np.arange(int(length.sum()), dtype=np.int64) + np.repeat(start - before, length)
