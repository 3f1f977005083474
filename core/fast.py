"""The batched engine: the same semantics as ``reference``, a batch of events at a time.

A batch goes through three passes, each owning disjoint state, so running them one after the
other over the whole batch is the same as interleaving them event by event:

1. page allocator (``page_alloc_batch``): allocations and frees, in windows; an event a window
   cannot batch is handed to the reference's scalar verb and the next window starts after it.
2. persistent kmaps: kmap/kunmap are a few percent of a stream and inherently sequential (the
   round-robin scan, sleeping), so they run through the scalar ``highmem`` verbs, each given the
   pfn its handle held at that moment (found by a forward fill over the batch).
3. counting: kernel entries, kmap_atomic, PTE edits, I/O and copies are counted with masks; the
   time series (lowmem free, kernel-mapped pages) are prefix sums of per-event deltas from
   passes 1 and 2.
"""

from __future__ import annotations

import numpy as np

from core import events as E
from core import reference
from core.errors import StreamError
from core.highmem import kmap_high, kunmap_high
from core.kernel import H_FAILED, H_FREE, Kernel
from core.mem_map import PG_mapped
from core.page_alloc_batch import Outcome, Window, apply_window
from core.policy import ZONE_HIGHMEM

MIN_WINDOW, MAX_WINDOW = 256, 1 << 16


class AllocResult:
    """Per-event results of pass 1, indexed by position in the batch."""

    def __init__(self, n: int) -> None:
        self.pfn = np.full(n, H_FREE, dtype=np.int64)  # allocs: pfn or H_FAILED; frees: H_FREE
        self.mapped = np.zeros(n, dtype=bool)  # allocs: mapped into the kernel window
        self.d_zone = np.zeros((3, n), dtype=np.int64)  # free pages gained (+) or taken (-) per zone
        self.d_window = np.zeros(n, dtype=np.int64)  # unmapped: window pages taken (+) or given back


def _record_window(k: Kernel, out: AllocResult, at: np.ndarray, is_alloc: np.ndarray, res: Outcome) -> None:
    live = res.zone >= 0
    pages = np.left_shift(1, res.order)
    signed = np.where(is_alloc, -pages, pages)
    out.pfn[at] = np.where(is_alloc, res.pfn, H_FREE)
    out.mapped[at] = res.mapped & is_alloc
    zi = np.flatnonzero(live)
    out.d_zone[res.zone[zi], at[zi]] = signed[zi]
    if k.policy.map_on_alloc:
        out.d_window[at] = np.where(live & res.mapped, -signed, 0)


def _scalar_alloc_event(k: Kernel, e: np.void, i: int, out: AllocResult) -> None:
    """One alloc/free through the reference verbs, its per-event result read off the state."""
    h = int(e["handle"])
    before = int(k.handle_pfn[h])
    used = k.window_used
    if E.IS_ALLOC[e["kind"]]:
        reference.do_alloc(k, h, int(e["order"]), int(E.GFP_OF_KIND[e["kind"]]))
        pfn = int(k.handle_pfn[h])
        out.pfn[i] = pfn
        if pfn >= 0:
            out.d_zone[k.mm.zone_of(pfn).index, i] = -(1 << int(k.mm.page_order[pfn]))
            out.mapped[i] = bool(k.mm.page_flags[pfn] & PG_mapped)
    else:
        order = int(k.mm.page_order[before]) if before >= 0 else 0
        reference.do_free(k, h)
        if before >= 0:
            out.d_zone[k.mm.zone_of(before).index, i] = 1 << order
    out.d_window[i] = k.window_used - used


def alloc_pass(k: Kernel, batch: np.ndarray) -> AllocResult:
    """Pass 1: every alloc/free of the batch, in windows that adapt to how often they are cut."""
    out = AllocResult(batch.size)
    kind = batch["kind"]
    pos = np.flatnonzero(E.IS_ALLOC[kind] | (kind == E.K_FREE))
    handle = batch["handle"][pos].astype(np.int64)
    order = batch["order"][pos].astype(np.int64)
    gfp = E.GFP_OF_KIND[kind[pos]]
    i, size = 0, 4096
    while i < pos.size:
        j = min(i + size, pos.size)
        res = apply_window(k, Window(pos[i:j], handle[i:j], order[i:j], gfp[i:j]))
        _record_window(k, out, pos[i:i + res.done], gfp[i:i + res.done] > 0, res)
        i += res.done
        if i < j:  # cut: this event goes through the scalar verbs
            _scalar_alloc_event(k, batch[pos[i]], int(pos[i]), out)
            i += 1
            size = max(MIN_WINDOW, size // 2)
        else:
            size = min(MAX_WINDOW, size * 2)
    return out


def pfn_at_event(k: Kernel, batch: np.ndarray, start: np.ndarray, start_mapped: np.ndarray,
                 out: AllocResult) -> tuple[np.ndarray, np.ndarray]:
    """For every event, the pfn its handle held when it ran (or H_FREE / H_FAILED), and whether that
    block had a kernel address of its own: forward fill of pass 1's results over the batch."""
    n = batch.size
    handle = batch["handle"].astype(np.int64)
    kind = batch["kind"]
    is_src = E.IS_ALLOC[kind] | (kind == E.K_FREE)
    srt = np.lexsort((np.arange(n), handle))
    rank = np.where(is_src[srt], np.arange(n), -1)
    run = np.maximum.accumulate(rank)  # latest source at or before, in handle-major order
    src = srt[np.maximum(run, 0)]
    ok = (run >= 0) & (handle[src] == handle[srt])  # a source of an earlier handle does not count
    pfn = np.empty(n, dtype=np.int64)
    mapped = np.empty(n, dtype=bool)
    pfn[srt] = np.where(ok, out.pfn[src], start[srt])
    mapped[srt] = np.where(ok, out.mapped[src], start_mapped[srt])
    has_address = (pfn >= 0) & ((pfn < k.offset_mapped_end) | mapped)
    return pfn, has_address


def kmap_pass(k: Kernel, batch: np.ndarray, pfn: np.ndarray, has_address: np.ndarray) -> np.ndarray:
    """Pass 2: kmap/kunmap through the scalar verbs; returns pk.mapped after each event."""
    pk, slots = k.pk, k.mm.pkmap_slot
    kind = batch["kind"]
    mapped_after = np.full(batch.size, -1, dtype=np.int64)
    todo = np.flatnonzero(((kind == E.K_KMAP) | (kind == E.K_KUNMAP)) & (pfn >= 0) & ~has_address)
    handle = batch["handle"]
    for i in todo.tolist():
        if kind[i] == E.K_KMAP:
            kmap_high(pk, slots, int(handle[i]), int(pfn[i]))
        else:
            kunmap_high(pk, slots, int(handle[i]), int(pfn[i]))
        mapped_after[i] = pk.mapped
    return mapped_after


def count_pass(k: Kernel, batch: np.ndarray, pfn: np.ndarray, has_address: np.ndarray) -> None:
    """Pass 3: the counts that need no order."""
    c = k.c
    kind = batch["kind"]
    counts = np.bincount(kind, minlength=E.NKINDS)
    uses = E.NEEDS_HANDLE[kind] & ~E.IS_ALLOC[kind] & (kind != E.K_FREE)
    if np.any(uses & (pfn == H_FREE)):
        i = int(np.flatnonzero(uses & (pfn == H_FREE))[0])
        raise StreamError(f"{E.KIND_NAMES[kind[i]]} of handle {int(batch['handle'][i])}, which holds no page")
    c.ops_on_failed += int(np.count_nonzero(uses & (pfn == H_FAILED)))
    entries = int(E.ENTERS_KERNEL[kind].sum())
    c.kernel_entries += entries
    c.tlb_flush_full += entries * k.policy.cr3_reloads_per_entry
    c.forks += int(counts[E.K_FORK])
    c.execs += int(counts[E.K_EXEC])
    c.exits += int(counts[E.K_EXIT])
    c.kmap_calls += int(counts[E.K_KMAP])
    c.kmap_atomic_calls += int(counts[E.K_KMAP_ATOMIC])
    c.pte_updates += int(counts[E.K_PTE_UPDATE])
    c.io_requests += int(counts[E.K_IO])
    c.page_copies += int(counts[E.K_COPY])
    needs_map = (pfn >= 0) & ~has_address
    atomic = int(np.count_nonzero(needs_map & (kind == E.K_KMAP_ATOMIC)))
    pte = int(np.count_nonzero(needs_map & (kind == E.K_PTE_UPDATE)))
    c.kmap_atomic_maps += atomic
    c.pte_kmaps += pte
    c.tlb_flush_local += atomic + pte
    c.events += int(batch.size)


def series_pass(k: Kernel, out: AllocResult, mapped_after: np.ndarray, pk_start: int, window_start: int,
                zone_start: np.ndarray) -> None:
    """Fold the batch's per-event deltas into the run's time series (min, peak, sum)."""
    c = k.c
    free = zone_start[:, None] + np.cumsum(out.d_zone, axis=1)
    window = window_start + np.cumsum(out.d_window)
    if k.policy.map_on_alloc:
        low = k.window_pages - window
    else:
        low = free[0] + free[1]
    has = mapped_after >= 0
    pk_mapped = np.where(has, mapped_after, -1)
    pk_mapped = np.maximum.accumulate(np.where(has, np.arange(has.size), -1))
    pk_series = np.where(pk_mapped >= 0, mapped_after[np.maximum(pk_mapped, 0)], pk_start)
    base = k.offset_mapped_end if k.policy.offset_maps_lowmem else k.permanent_pages
    kmapped = base + window + pk_series
    if low.size:
        c.lowmem_free_min = min(c.lowmem_free_min, int(low.min()))
        c.highmem_free_min = min(c.highmem_free_min, int(free[ZONE_HIGHMEM].min()))
        c.kernel_mapped_peak = max(c.kernel_mapped_peak, int(kmapped.max()))
        c.kernel_mapped_sum += int(kmapped.sum())


def run_batch(k: Kernel, batch: np.ndarray) -> None:
    if batch.size == 0:
        return
    start = k.handle_pfn[np.maximum(batch["handle"], 0)]  # fancy indexing: a copy
    start_mapped = (k.mm.page_flags[np.maximum(start, 0)] & PG_mapped) != 0
    pk_start, window_start = k.pk.mapped, k.window_used
    zone_start = np.array([z.free_pages for z in k.mm.zones], dtype=np.int64)
    out = alloc_pass(k, batch)
    pfn, has_address = pfn_at_event(k, batch, start, start_mapped, out)
    mapped_after = kmap_pass(k, batch, pfn, has_address)
    count_pass(k, batch, pfn, has_address)
    series_pass(k, out, mapped_after, pk_start, window_start, zone_start)
