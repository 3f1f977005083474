"""The batched engine: the same semantics as ``reference``, a batch of events at a time.

A batch goes through three passes, each owning disjoint state, so running them one after the
other over the whole batch is the same as interleaving them event by event:

1. page allocator (``page_alloc_batch``): allocations and frees, in windows; an event a window
   cannot batch is handed to the reference's scalar verb and the next window starts after it.
2. persistent kmaps (``highmem_batch``): between two wraps of the pkmap scan the pool is a set of
   vector operations; the wrap itself and sleeping go through the scalar ``highmem`` verbs. Each
   op is given the pfn its handle held at that moment (a forward fill over the batch).
3. counting: kernel entries, kmap_atomic, PTE edits, I/O and copies are counted with masks; the
   time series (lowmem free, kernel-mapped pages) are prefix sums of per-event deltas from
   passes 1 and 2.

On a virtually indexed machine pass 2 is ``parisc_batch`` instead (kmap_kernel's colour pools,
the flushes and the cache), after the counts of pass 3 that do not depend on the machine.
"""

from __future__ import annotations

import numpy as np

from core import events as E
from core import parisc_batch, reference
from core.errors import StreamError
from core.highmem_batch import kmap_ops
from core.kernel import H_FAILED, H_FREE, Kernel
from core.mem_map import PG_mapped
from core.page_alloc_batch import HandleRuns, Outcome, Window, apply_window, handle_runs
from core.policy import ZONE_HIGHMEM
from core.vec import merge_order

MIN_WINDOW, MAX_WINDOW = 256, 1 << 16
USES_PFN = E.NEEDS_HANDLE & ~E.IS_ALLOC
USES_PFN[E.K_FREE] = False  # events that act on the page a handle holds (kmap, io, ...)
IS_SRC = E.IS_ALLOC.copy()
IS_SRC[E.K_FREE] = True  # allocs and frees: pass 1's events


class Columns:
    """One batch's columns as contiguous arrays (structured-array fields are strided views)."""

    def __init__(self, batch: np.ndarray) -> None:
        self.n = batch.size
        self.kind = batch["kind"].astype(np.intp)  # an index into the kind tables: intp indexes fastest
        self.handle = batch["handle"].astype(np.int64)
        # order and addr in their own types (uint8, uint32): their gathers move an eighth and a
        # half of int64's bytes, and the allocator widens the orders it works on
        self.order = np.ascontiguousarray(batch["order"])
        self.addr = np.ascontiguousarray(batch["addr"])
        self.src = np.flatnonzero(IS_SRC[self.kind])  # alloc/free positions, in time order
        # allocs and frees by (handle, time): the windows' handle links and the uses' lookups
        self.src_handle = self.handle[self.src]
        self.src_key = self.src_handle * self.n + self.src
        # (ties in time order: by src_key). A batch's allocs and frees come in a few hundred to a
        # thousand ascending runs of handles (one, early on), which numpy's stable argsort, a
        # timsort, merges: 5 ms per 2 M events where stable_order's sort of packed keys takes 17
        # (pa8700, pa8800 and x86-pae-64g streams alike)
        self.src_by_key = merge_order(self.src_handle)
        self.key_runs = handle_runs(self.src_handle[self.src_by_key])  # (the pass's window and the uses' lookups)
        self.use = np.flatnonzero(USES_PFN[self.kind])  # positions of events that use a page
        self.use_kind, self.use_handle = self.kind[self.use], self.handle[self.use]


class AllocResult:
    """Per alloc/free results of pass 1, aligned with ``Columns.src``.

    pfn       allocs: pfn or H_FAILED; frees: H_FREE
    mapped    allocs: mapped into the kernel window
    zone      the zone pages came from or went to (-1: none)
    d_free    its free pages gained (+) or taken (-)
    d_window  unmapped: window pages taken (+) or given back
    freed     frees: the pfn given back, else -1
    order     the order of the block allocated or freed
    """

    pfn: np.ndarray
    mapped: np.ndarray
    zone: np.ndarray
    d_free: np.ndarray
    d_window: np.ndarray
    freed: np.ndarray
    order: np.ndarray
    FILL = {"pfn": H_FREE, "mapped": False, "zone": -1, "d_free": 0, "d_window": 0, "freed": -1, "order": 0}

    def __init__(self, m: int, whole: dict[str, np.ndarray] | None = None) -> None:
        """m results to fill in; or, with ``whole``, a batch's whose allocs and frees all went in one
        window (the usual case): that window's arrays (_window_results), taken as they are where filling
        arrays and copying into them costs 9 ms per 2 M events (pa8700 stock); zeros for any missing."""
        for name, fill in self.FILL.items():
            if whole is not None and name in whole:
                setattr(self, name, whole[name])
            else:
                setattr(self, name, np.full(m, fill, dtype=bool if name == "mapped" else np.int64))


def _window_results(k: Kernel, is_alloc: np.ndarray, res: Outcome) -> dict[str, np.ndarray]:
    """A window's AllocResult fields, in AllocResult's types (d_window only when the window moves)."""
    live = res.zone >= 0
    pages = np.left_shift(1, res.order)
    signed = np.where(is_alloc, -pages, pages)
    got = {
        "pfn": np.where(is_alloc, res.pfn, H_FREE).astype(np.int64, copy=False),
        "freed": np.where(~is_alloc & (res.pfn >= 0), res.pfn, -1).astype(np.int64, copy=False),
        "order": res.order.astype(np.int64, copy=False),
        "mapped": res.mapped & (is_alloc | (res.pfn >= 0)),
        "zone": res.zone.astype(np.int64, copy=False),
        "d_free": np.where(live, signed, 0).astype(np.int64, copy=False),
    }
    if k.policy.map_on_alloc:
        got["d_window"] = np.where(live & res.mapped, -signed, 0).astype(np.int64, copy=False)
    return got


def _record_window(out: AllocResult, at: slice, got: dict[str, np.ndarray]) -> None:
    for name, values in got.items():
        getattr(out, name)[at] = values


def _scalar_alloc_event(k: Kernel, kind: int, handle: int, order: int, i: int, out: AllocResult) -> None:
    """One alloc/free through the reference verbs, its result read off the state."""
    before = int(k.handle_pfn[handle])
    used = k.window_used
    if E.IS_ALLOC[kind]:
        reference.do_alloc(k, handle, order, int(E.GFP_OF_KIND[kind]))
        pfn = int(k.handle_pfn[handle])
        out.pfn[i] = pfn
        if pfn >= 0:
            out.zone[i] = k.mm.zone_of(pfn).index
            out.order[i] = int(k.mm.page_order[pfn])
            out.d_free[i] = -(1 << out.order[i])
            out.mapped[i] = bool(k.mm.page_flags[pfn] & PG_mapped)
    else:
        order = int(k.mm.page_order[before]) if before >= 0 else 0
        mapped = before >= 0 and bool(k.mm.page_flags[before] & PG_mapped)
        reference.do_free(k, handle)
        if before >= 0:
            out.zone[i] = k.mm.zone_of(before).index
            out.d_free[i] = 1 << order
            out.freed[i], out.order[i], out.mapped[i] = before, order, mapped
    out.d_window[i] = k.window_used - used


def alloc_pass(k: Kernel, cols: Columns) -> AllocResult:
    """Pass 1: every alloc/free of the batch, in windows that adapt to how often they are cut."""
    pos = cols.src
    out = None  # (made at the first window that is not the whole batch)
    handle, order = cols.src_handle, cols.order[pos]
    kind = cols.kind[pos]
    gfp = E.GFP_OF_KIND[kind].astype(np.intp)  # indexes the per-GFP tables
    i, size = 0, MAX_WINDOW
    while i < pos.size:
        j = min(i + size, pos.size)
        by_key = cols.src_by_key
        whole = (i, j) == (0, pos.size)
        by_handle = by_key if whole else by_key[(by_key >= i) & (by_key < j)] - i
        res = apply_window(k, Window(pos[i:j], handle[i:j], order[i:j], gfp[i:j], by_handle,
                                     cols.key_runs if whole else None))
        got = _window_results(k, gfp[i:i + res.done] > 0, res)
        if whole and res.done == pos.size:
            return AllocResult(pos.size, got)
        if out is None:
            out = AllocResult(pos.size)
        _record_window(out, slice(i, i + res.done), got)
        i += res.done
        if i < j:  # cut: this event goes through the scalar verbs
            _scalar_alloc_event(k, int(kind[i]), int(handle[i]), int(order[i]), i, out)
            i += 1
            size = max(MIN_WINDOW, size // 2)
        else:
            size = min(MAX_WINDOW, size * 2)
    return out if out is not None else AllocResult(0)


def pages_at_uses(k: Kernel, cols: Columns, start: np.ndarray, start_mapped: np.ndarray | None,
                  out: AllocResult) -> tuple[np.ndarray, np.ndarray | None]:
    """For each event in ``cols.use``: the pfn its handle held when it ran (or H_FREE / H_FAILED)
    and whether that block had a kernel address of its own. Each use looks up the last alloc or
    free of its handle before it, in the allocs and frees sorted by (handle, time); ``start`` and
    ``start_mapped`` (aligned with ``cols.use``) are what its handle held before the batch
    (``start_mapped`` None: no kernel addresses wanted, and None for them)."""
    n = cols.n
    use = cols.use
    if not cols.src.size:  # no alloc or free in the batch: every page is the one held at the start
        pfn, mapped = start, start_mapped
    else:
        by_key = cols.src_by_key
        # each ends in a sentinel, read at index -1 (no key below the use's): a key below every
        # key, a handle no use has; no clamping of indices and masking of what they read
        keys = np.append(cols.src_key[by_key], np.iinfo(np.int64).min)
        key_handle = np.append(cols.key_runs.handle, -1)
        use_handle = cols.use_handle
        j = _last_key_below(k, cols.key_runs, keys, use_handle * n + use, use_handle)
        got = by_key[j]  # (at -1 some other event's: ok is False there)
        ok = key_handle[j] == use_handle
        pfn = np.where(ok, out.pfn[got], start)
        # (bool logic: np.where on bools costs 5x)
        mapped = None if start_mapped is None else (ok & out.mapped[got]) | (~ok & start_mapped)
    if mapped is None:
        return pfn, None
    has_address = (pfn >= 0) & ((pfn < k.offset_mapped_end) | mapped)
    return pfn, has_address


def _last_key_below(k: Kernel, runs: HandleRuns, keys: np.ndarray, use_key: np.ndarray,
                    use_handle: np.ndarray) -> np.ndarray:
    """For each use, the index of the last of the sorted (handle, time) ``keys`` below its own, or
    -1. A handle has an alloc and a free or two in a batch, so each use starts at its handle's
    last key (found through a per-handle table, not a binary search) and steps back at most twice;
    the few still short of their key take a binary search. ``runs`` are the keys' runs of one
    handle; ``keys`` ends in a sentinel (pages_at_uses), so index -1 reads a key below every use's."""
    # (per call: kept, it would be state). Only the entries read are cleared: a fill of a table
    # the size of the handle space costs more than the rest of the lookup
    table = np.empty(k.handle_pfn.size, dtype=np.int32)
    table[use_handle] = -1
    table[runs.last_handle] = runs.last
    j = table[use_handle].astype(np.int64)  # -1: the handle has no key in the batch
    for _ in range(2):  # a key above the use's: step back (off the handle's keys is below all its keys)
        j -= keys[j] > use_key
    far = np.flatnonzero(keys[j] > use_key)
    j[far] = np.searchsorted(keys[:-1], use_key[far]) - 1
    return j


def kmap_pass(k: Kernel, cols: Columns, pfn: np.ndarray, has_address: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: kmap/kunmap ops; returns their batch positions and pk.mapped after each."""
    kind = cols.use_kind
    todo = np.flatnonzero(((kind == E.K_KMAP) | (kind == E.K_KUNMAP)) & (pfn >= 0) & ~has_address)
    if not todo.size:
        return todo, todo
    mapped_after = kmap_ops(k.pk, kind[todo] == E.K_KMAP, cols.handle[cols.use[todo]], pfn[todo])
    return cols.use[todo], mapped_after


def count_pass(k: Kernel, cols: Columns, pfn: np.ndarray, has_address: np.ndarray | None) -> None:
    """Pass 3: the counts that need no order (``has_address`` None: transient maps are counted
    elsewhere, by parisc_batch)."""
    c = k.c
    counts = np.bincount(cols.kind, minlength=E.NKINDS)
    if np.any(pfn == H_FREE):
        i = int(cols.use[np.flatnonzero(pfn == H_FREE)[0]])
        raise StreamError(f"{E.KIND_NAMES[cols.kind[i]]} of handle {int(cols.handle[i])}, which holds no page")
    c.ops_on_failed += int(np.count_nonzero(pfn == H_FAILED))
    entries = int(counts[E.ENTERS_KERNEL].sum())
    c.kernel_entries += entries
    c.tlb_flush_full += entries * k.policy.cr3_reloads_per_entry
    c.forks += int(counts[E.K_FORK])
    c.execs += int(counts[E.K_EXEC])
    c.exits += int(counts[E.K_EXIT])
    c.interrupts += int(counts[E.K_IRQ])
    c.cow_copies += int(counts[E.K_COW])
    if counts[E.K_FORK]:
        c.fork_ptes += int(cols.addr[cols.kind == E.K_FORK].sum(dtype=np.int64))
    if counts[E.K_RUN]:
        c.user_ns += int(cols.addr[cols.kind == E.K_RUN].sum(dtype=np.int64))
    c.kmap_calls += int(counts[E.K_KMAP])
    c.kmap_atomic_calls += int(counts[E.K_KMAP_ATOMIC])
    c.pte_updates += int(counts[E.K_PTE_UPDATE])
    c.io_requests += int(counts[E.K_IO])
    c.page_copies += int(counts[E.K_COPY])
    c.user_accesses += int(counts[E.K_USER])
    c.events += cols.n
    if has_address is None:
        return
    kind = cols.use_kind
    needs_map = (pfn >= 0) & ~has_address
    atomic = int(np.count_nonzero(needs_map & ((kind == E.K_KMAP_ATOMIC) | (kind == E.K_COW))))
    pte = int(np.count_nonzero(needs_map & (kind == E.K_PTE_UPDATE)))
    c.kmap_atomic_maps += atomic
    c.pte_kmaps += pte
    c.tlb_flush_local += atomic + pte


def _held_sum(at: np.ndarray, after: np.ndarray, before: int, n: int) -> int:
    """Sum over a batch's n events of a value that is ``before`` until position at[0], then
    after[i] from at[i] (inclusive) to at[i+1]."""
    if not at.size:
        return before * n
    return int(np.dot(after, np.diff(np.append(at, n)))) + before * int(at[0])


def _value_at(at: np.ndarray, after: np.ndarray, before: int, when: np.ndarray) -> np.ndarray:
    """The value (as in _held_sum) seen by the events at positions ``when``."""
    i = np.searchsorted(at, when, side="right") - 1
    return np.where(i >= 0, after[np.maximum(i, 0)] if after.size else before, before)


def series_pass(k: Kernel, cols: Columns, out: AllocResult, kmap_at: np.ndarray, mapped_after: np.ndarray,
                start: tuple[int, int, int, int]) -> None:
    """Fold the batch into the run's time series. Lowmem and highmem change only at allocs and
    frees, the pkmap count only at kmaps, so each is followed at its own change points; kernel-
    mapped pages add the two, and their sum over events is the sum of each part's."""
    c = k.c
    low0, high0, window0, pk0 = start
    src = cols.src
    # the window's pages taken so far, at each alloc and free; None while it does not move (stock,
    # 4g4g), when every sum over it is a product
    moved = np.cumsum(out.d_window) if out.d_window.any() else None
    if src.size:
        high = out.zone == ZONE_HIGHMEM
        high_d = np.where(high, out.d_free, 0) if high.any() else None  # (None: no highmem moved)
        if k.policy.map_on_alloc:  # lowmem is the window's free pages: what it took, negated
            low_min = -int(moved.max()) if moved is not None else 0
        else:  # lowmem's is the rest of d_free, which is 0 where no zone moved
            low_min = int(np.cumsum(out.d_free if high_d is None else out.d_free - high_d).min())
        c.lowmem_free_min = min(c.lowmem_free_min, low0 + low_min)
        high_min = int(np.cumsum(high_d).min()) if high_d is not None else 0
        c.highmem_free_min = min(c.highmem_free_min, high0 + high_min)
    base = k.offset_mapped_end if k.policy.offset_maps_lowmem else k.permanent_pages
    peaks = [window0 + pk0]
    if moved is None:  # only the pool moves
        peaks.append(window0 + int(mapped_after.max()) if kmap_at.size else 0)
        window_sum = window0 * cols.n
    else:
        window = window0 + moved
        peaks.append(int((window + _value_at(kmap_at, mapped_after, pk0, src)).max()))
        if kmap_at.size:
            peaks.append(int((mapped_after + _value_at(src, window, window0, kmap_at)).max()))
        window_sum = _held_sum(src, window, window0, cols.n)
    c.kernel_mapped_peak = max(c.kernel_mapped_peak, base + max(peaks))
    c.kernel_mapped_sum += base * cols.n + window_sum + _held_sum(kmap_at, mapped_after, pk0, cols.n)


def run_batch(k: Kernel, batch: np.ndarray) -> None:
    if batch.size == 0:
        return
    cols = Columns(batch)
    start = k.handle_pfn[cols.use_handle]  # what each use's handle held before the batch
    # (on a virtually indexed machine parisc_batch follows kernel addresses: no per-use mapping)
    start_mapped = None if k.vi else (k.mm.page_flags[np.maximum(start, 0)] & PG_mapped) != 0
    zones = k.mm.zones
    series_start = (k.lowmem_free(), zones[ZONE_HIGHMEM].free_pages, k.window_used, k.pk.mapped + k.vi_kmapped())
    out = alloc_pass(k, cols)
    pfn, has_address = pages_at_uses(k, cols, start, start_mapped, out)
    if k.vi:  # virtually indexed: kmaps, flushes and the cache are core.parisc_batch's
        count_pass(k, cols, pfn, None)
        event_pfn = np.full(cols.n, -1, dtype=np.int64)
        event_pfn[cols.use] = pfn
        event_pfn[cols.src] = np.where(out.pfn >= 0, out.pfn, out.freed)
        event_pfn[np.flatnonzero(parisc_batch.inert(k, cols, out))] = -1  # (indices: the mask has no pattern)
        kmap_at, mapped_after = parisc_batch.run(k, cols, event_pfn, out)
        series_pass(k, cols, out, kmap_at, mapped_after, series_start)
        return
    kmap_at, mapped_after = kmap_pass(k, cols, pfn, has_address)
    count_pass(k, cols, pfn, has_address)
    series_pass(k, cols, out, kmap_at, mapped_after, series_start)
