"""Persistent kmaps over many events at once: the fast engine's pass over kmap/kunmap.

Between two wraps of the round-robin scan nothing frees a slot: kunmap only drops counts (to 1 at
the lowest, "stale in some TLB"), and only flush_all_zero_pkmaps at the wrap makes slots free
again. So from the current cursor to the end of the pool, new mappings take the free slots in
index order, a page once mapped keeps its slot, and everything up to the new mapping that finds
no free slot left is a set of vector operations: first kmap of each page that has no slot is a
new mapping, counts change by bincount. That mapping (the wrap, the flush, perhaps a sleep) and
everything while callers sleep go through the scalar verbs of ``highmem``.
"""

from __future__ import annotations

import numpy as np

from core.cache_queries import Runs
from core.errors import StreamError
from core.highmem import Pkmap, kmap_high, kunmap_high
from core.vec import run_first, stable_order


def _segment(pk: Pkmap, is_kmap: np.ndarray, pfn: np.ndarray) -> np.ndarray:
    """Apply ops up to the first new mapping that finds no free slot before the wrap; return, for
    each op applied, whether it installed a new mapping."""
    free = np.flatnonzero(pk.pkmap_count[pk.last_pkmap_nr + 1:] == 0) + pk.last_pkmap_nr + 1
    htable = pk.page_address_htable
    slot = htable.lookup(pfn)
    cand = np.flatnonzero(is_kmap & (slot < 0))
    # each page's first such kmap: the first of its run in a stable sort by page (np.unique's
    # return_index is the same sort and more)
    by_page = cand[stable_order(pfn[cand])]
    new_at = np.sort(by_page[run_first(pfn[by_page])])  # ops that install a new mapping, in time order
    stop = int(new_at[free.size]) if new_at.size > free.size else pfn.size
    new_at = new_at[: free.size]
    n = stop
    if n == 0:
        return np.zeros(0, dtype=bool)
    pfn, is_kmap, slot = pfn[:n], is_kmap[:n], slot[:n]
    slots_new = free[: new_at.size]
    pk.pkmap_page[slots_new] = pfn[new_at]
    pk.pkmap_count[slots_new] = 1
    late = np.flatnonzero(slot < 0)  # ops on the pages just mapped (or on none: a bad kunmap)
    if new_at.size:
        htable.add_many(pfn[new_at], slots_new)
        slot[late] = htable.lookup(pfn[late])
    if np.any(slot < 0):
        i = int(np.flatnonzero(slot < 0)[0])
        raise StreamError(f"kunmap of page {int(pfn[i])}, which is not kmapped")
    _check_counts(pk, slot, is_kmap)
    np.add.at(pk.pkmap_count, slot, np.where(is_kmap, 1, -1).astype(np.int32))
    pk.mapped += new_at.size
    pk.new_mappings += new_at.size
    if new_at.size:
        pk.last_pkmap_nr = int(slots_new[-1])
    is_new = np.zeros(n, dtype=bool)
    is_new[new_at] = True
    return is_new


def _check_counts(pk: Pkmap, slot: np.ndarray, is_kmap: np.ndarray) -> None:
    """A kunmap must find its slot with users (count >= 2): running counts per slot stay >= 1."""
    srt = stable_order(slot)
    s, d = slot[srt], np.where(is_kmap[srt], 1, -1)
    level = pk.pkmap_count[s] + Runs(s).exclusive_sum(d) + d  # each slot's count after each op
    if np.any(level < 1):
        raise StreamError(f"kunmap of pkmap slot {int(s[np.flatnonzero(level < 1)[0]])}, which has no users")


def kmap_ops(pk: Pkmap, is_kmap: np.ndarray, handle: np.ndarray, pfn: np.ndarray) -> np.ndarray:
    """Apply kmap (True) / kunmap (False) ops in order; returns ``pk.mapped`` after each op."""
    n = pfn.size
    mapped_after = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        if not pk.waiters:
            before = pk.mapped
            is_new = _segment(pk, is_kmap[i:], pfn[i:])
            if is_new.size:
                mapped_after[i:i + is_new.size] = before + np.cumsum(is_new)
                i += is_new.size
                continue
        if is_kmap[i]:
            kmap_high(pk, int(handle[i]), int(pfn[i]))
        else:
            kunmap_high(pk, int(handle[i]), int(pfn[i]))
        mapped_after[i] = pk.mapped
        i += 1
    return mapped_after
