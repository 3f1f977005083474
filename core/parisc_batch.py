"""The parisc passes of the batched engine: ``core.parisc``'s state over a batch at once.

Models what ``core.parisc`` models (arch/parisc of 2.6.11 and the paper's kernel): this module
keeps the bookkeeping, ``parisc_cache_batch`` the flush verbs. After the allocator pass has given
every alloc and free its pfn, a batch's page events are sorted frame-major (pfn, then time). Per
frame, the state of ``PariscState`` is read off the frame's earlier events without a loop: user
colour and allocation mapping as a forward fill of its last alloc or free, the kmap count as a
prefix sum. The requests to kmap_kernel's two colour pools are then served in time order
(``kmap_kernel.serve``); ``parisc_cache_batch.issue`` lays out each event's cache operations as
the scalar verbs issue them and plays them against the cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core import events as E
from core import kmap_kernel as pools
from core.cache_queries import Runs
from core.errors import StreamError
from core.kmap_kernel import ColourPool
from core.parisc import KMAP_COUNT_MAX, kmap_overflow, tlb_entries
from core.parisc_cache_batch import issue
from core.vec import merge_order, ranges, stable_order

if TYPE_CHECKING:
    from core.fast import AllocResult, Columns
    from core.kernel import Kernel
    from core.policy import Policy

COLOUR = np.int32  # the type of the timeline's colours, -1 for none


class Timeline:
    """A batch's page events, frame-major, and the state each ran in."""

    def __init__(self, k: Kernel, cols: Columns, event_pfn: np.ndarray, out: AllocResult) -> None:
        vi, colours = k.vi, k.vi.colours
        self.pos = _frame_major(event_pfn)
        self.pfn = pfn = event_pfn[self.pos]
        self.kind = kind = cols.kind[self.pos]
        self._cols, self._out = cols, out
        self.is_alloc = E.IS_ALLOC[kind]
        self.is_free = kind == E.K_FREE
        addr = cols.addr[self.pos]
        user_mapped = (kind == E.K_ALLOC_ANON) | ((kind == E.K_ALLOC_PAGECACHE) & (addr != 0))
        # colours as int32 from here on (the cache grid's type): compares and selects over them
        # move half the bytes of int64's (colours is a power of two)
        self.u_set = np.where(user_mapped, (addr & (colours - 1)).astype(COLOUR), -1)
        mapped = np.zeros(cols.n, dtype=bool)  # per batch position: allocations __alloc_pages mapped
        mapped[cols.src] = out.mapped
        self.mapped = mapped[self.pos]
        self.runs = Runs(pfn)  # each frame's events
        self.sets = self.is_alloc | self.is_free  # the events that set a frame's user colour
        self.setter = self.runs.prev(self.sets)
        had = self.setter >= 0
        prev = np.maximum(self.setter, 0)
        # per-frame state from before the batch is read once per frame and spread over its events
        # (random reads of per-frame arrays cost more than anything done with them)
        frames, length = pfn[self.runs.ends], self.runs.length
        # an alloc or free sets both (u_set is -1 for a free); else they come from before the batch
        self.u = np.where(had, self.u_set[prev], np.repeat(vi.user_colour[frames], length))
        # allocation mappings: none while the offset map gives every page its kernel address
        if k.policy.offset_maps_lowmem:
            self.amapped = np.zeros(pfn.size, dtype=bool)
            return
        # each frame's kernel colour and kmap count before the batch
        self.kc0 = np.repeat(vi.kernel_colour[frames].astype(COLOUR), length)
        self.kcount0 = np.repeat(vi.kmap_count[frames].astype(np.int32), length)  # (int16: overflows in KmapCounts)
        carried_amapped = (self.kc0 >= 0) & (self.kcount0 == 0)
        alloc_mapped = self.is_alloc & self.mapped
        self.amapped = (had & alloc_mapped[prev]) | (~had & carried_amapped)

    def flag(self, i: np.ndarray) -> np.ndarray:
        """The flag (the order field) of the events ``i``."""
        return self._cols.order[self.pos[i]]

    def block_order(self, i: np.ndarray) -> np.ndarray:
        """The order of the block allocated or freed by the alloc and free events ``i``: read
        through a per-position table of the allocs' and frees' orders. (The colour pool asks for
        about half of them; a scatter of them all and a gather cost a quarter of the binary
        searches among them that they replace.)"""
        table = np.empty(self._cols.n, dtype=self._out.order.dtype)
        table[self._cols.src] = self._out.order
        return table[self.pos[i]]

    def in_time(self, mark: np.ndarray) -> np.ndarray:
        """The indices of the marked events, in time order: a sort of the few marked ones (the
        colour pools' requests) costs less than ordering the whole timeline by time."""
        i = np.flatnonzero(mark)
        return i[stable_order(self.pos[i])]


def _frame_major(event_pfn: np.ndarray) -> np.ndarray:
    """The batch positions of the events with a frame (pfn >= 0), by frame, each frame's in time
    order: ``merge_order`` of their pfns. A batch's pfns come in long ascending runs (the
    allocator hands out neighbouring frames, and a page's events follow it), which its timsort
    merges rather than sorts: 24-27 ms per 2 M events where one sort of (pfn << bits) | position
    took 43-45 (pa8700 and pa8800 stock; 46-53 against 65-67 unmapped). The events with no frame
    (-1) are selected first: a quarter of some batches."""
    at = np.flatnonzero(event_pfn >= 0)
    return at[merge_order(event_pfn[at])]


KMAP_PAIR = np.zeros(E.NKINDS, dtype=bool)  # the kinds that move a page's kmap count
KMAP_PAIR[[E.K_KMAP, E.K_KUNMAP]] = True


class KmapCounts:
    """kmap counts before each event and their changes; the first kmaps and last kunmaps of
    pages with no other mapping. Only the frames with a counted kmap or kunmap in the batch (a few
    per cent of its events) are followed through it: every other frame keeps its count from
    before the batch, and asks the kmap pool for no persistent mapping (GET or PUT; transient
    mappings, PEEKs, are any frame's with no translation)."""

    def __init__(self, t: Timeline, cols: Columns) -> None:
        n = t.pfn.size
        counted = KMAP_PAIR[t.kind] & ~t.amapped
        self.s = s = _runs_of(t, np.flatnonzero(counted))  # those frames' events, all of them
        self.sub = Runs(t.pfn[s])
        counted = counted[s]
        delta = np.where(counted, np.where(t.kind[s] == E.K_KMAP, 1, -1), 0)
        before = t.kcount0[s] + self.sub.exclusive_sum(delta)
        self.count = t.kcount0.copy()
        self.count[s] = before
        self.delta = np.zeros(n, dtype=np.int64)
        self.delta[s] = delta
        self.first, self.last = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self.first[s] = counted & (delta > 0) & (before == 0)
        self.last[s] = counted & (delta < 0) & (before == 1)
        bad = np.concatenate([s[(delta < 0) & (before == 0)], np.flatnonzero(t.is_free & (self.count > 0)),
                              s[(delta > 0) & (before >= KMAP_COUNT_MAX)]])
        if bad.size:
            i = bad[np.argmin(t.pos[bad])]
            if self.delta[i] > 0:
                raise StreamError(kmap_overflow(int(t.pfn[i])))
            if t.is_free[i]:
                raise StreamError(f"free of handle {int(cols.handle[t.pos[i]])} while it is kmapped")
            raise StreamError(f"kunmap of handle {int(cols.handle[t.pos[i]])}, which is not kmapped")

    def first_before(self) -> np.ndarray:
        """Each event's frame's last first kmap before it in the batch (-1: none)."""
        out = np.full(self.count.size, -1, dtype=np.int64)
        local = self.sub.prev(self.first[self.s])
        out[self.s] = np.where(local >= 0, self.s[local], -1)
        return out


def _runs_of(t: Timeline, i: np.ndarray) -> np.ndarray:
    """Every timeline index of the frames of the events ``i`` (ascending), ascending."""
    start = t.runs.start[i]
    start = start[np.append(True, start[1:] != start[:-1])] if i.size else start
    return ranges(start, t.runs.ends[np.searchsorted(t.runs.ends, start)] - start + 1)  # (ends rise)


class Requests:
    """Requests to one colour pool, one per event of ``event`` (timeline indices in time order),
    each field given for those events only."""

    def __init__(self, n: int, event: np.ndarray, op: np.ndarray, want: np.ndarray, pages: np.ndarray,
                 link_event: np.ndarray, carried: np.ndarray, pos: np.ndarray) -> None:
        self.n, self.event = n, event
        self.op, self.want, self.pages, self.carried, self.pos = op, want, pages, carried, pos
        req_of = np.full(n, -1, dtype=np.int64)
        req_of[event] = np.arange(event.size)
        self.link = np.where(link_event >= 0, req_of[np.maximum(link_event, 0)], -1)

    def serve(self, pool: ColourPool) -> np.ndarray:
        """The colour of every timeline event's request (-1 where it made none)."""
        out = np.full(self.n, -1, dtype=COLOUR)
        if self.event.size:
            out[self.event] = pools.serve(pool, self.op, self.want, self.pages, self.link, self.carried, self.pos)
        return out


class Colours:
    """Per timeline event: kernel translation before it, and the pool colours it was given."""

    def __init__(self, k: Kernel, t: Timeline, cols: Columns) -> None:
        p, vi, n = k.policy, k.vi, t.pfn.size
        colours = vi.colours
        self.eq = (t.pfn & (colours - 1)).astype(COLOUR)
        self.offset = p.offset_maps_lowmem
        self.defer = p.defer_dcache_flush and not p.offset_maps_lowmem
        if p.offset_maps_lowmem:  # no pools, no kmap counts: every page has its kernel address
            self.first, self.last = np.zeros(n, bool), np.zeros(n, bool)
            self.kernel = self.eq
            self.transient = np.zeros(n, dtype=bool)
            return
        self.counts = counts = KmapCounts(t, cols)
        self.count, self.delta, self.first, self.last = counts.count, counts.delta, counts.first, counts.last
        # core.parisc.kmap_want: the user's colour (congruent), else the equivalent one when kunmaps
        # leave the lines (defer_dcache_flush), else any
        colourless = self.eq if p.defer_dcache_flush else -1
        want_user = np.where(t.u >= 0, t.u if p.congruent_kmap else -1, colourless)
        self._alloc_pool(k, t)
        no_translation = ~t.amapped & (self.count == 0)
        self.transient = no_translation & _transient_kinds(p)[t.kind]
        first_before = counts.first_before()
        carried = np.where(t.kcount0 > 0, t.kc0, -1)
        ev = t.in_time(self.first | self.last | self.transient)
        first, last = self.first[ev], self.last[ev]
        self.kmap = Requests(n, ev, np.where(first, pools.GET, np.where(last, pools.PUT, pools.PEEK)), want_user[ev],
                             np.ones(ev.size, dtype=np.int64), np.where(last, first_before[ev], -1), carried[ev],
                             t.pos[ev]).serve(vi.kmaps)
        kmap_before = carried.copy()  # (first kmaps are only in the followed frames)
        fb = first_before[counts.s]
        kmap_before[counts.s] = np.where(fb >= 0, self.kmap[np.maximum(fb, 0)], carried[counts.s])
        alloc_before = np.where(t.setter >= 0, self.alloc[np.maximum(t.setter, 0)], t.kc0)
        self.kernel = np.where(t.amapped, alloc_before, np.where(self.count > 0, kmap_before, -1))
        self.alloc_before = alloc_before
        self.kmap_before = kmap_before

    def after(self, t: Timeline, i: np.ndarray, kmapped: np.ndarray) -> np.ndarray:
        """kernel_colour after the events ``i`` (what PariscState keeps: the allocation mapping,
        else ``kmapped``, the kmap mapping after each, -1 for none)."""
        is_alloc, is_free = t.is_alloc[i], t.is_free[i]
        alloc_after = np.where(is_alloc, self.alloc[i], np.where(is_free, -1, self.alloc_before[i]))
        amapped_after = (is_alloc & t.mapped[i]) | (~is_alloc & ~is_free & t.amapped[i])  # (bools: np.where costs more)
        return np.where(amapped_after, alloc_after, kmapped)

    def _alloc_pool(self, k: Kernel, t: Timeline) -> None:
        """Allocations mapped by __alloc_pages get a colour; frees of mapped blocks give it back."""
        vi, p = k.vi, k.policy
        get = t.is_alloc & t.mapped
        ev = t.in_time(get | (t.is_free & t.amapped))
        get, kind = get[ev], t.kind[ev]
        equivalent = p.equivalent_kernel & ((kind == E.K_ALLOC_STACK) | (kind == E.K_ALLOC_PGTABLE))
        setter = t.setter[ev]
        want = np.where(equivalent, self.eq[ev], -1)
        self.alloc = Requests(t.pfn.size, ev, np.where(get, pools.GET, pools.PUT), want,
                              np.left_shift(1, t.block_order(ev)), np.where(~get & (setter >= 0), setter, -1),
                              t.kc0[ev], t.pos[ev]).serve(vi.allocs)


def _transient_kinds(p: Policy) -> np.ndarray:
    """The kinds that touch a page through the kernel (a kmap_atomic when it has no translation):
    copies, PTE updates and COW, and I/O when the kernel's index is what the transfer uses (a
    table: one gather where tests of the kind take a pass each)."""
    kinds = np.zeros(E.NKINDS, dtype=bool)
    kinds[[E.K_COPY, E.K_PTE_UPDATE, E.K_COW]] = True
    kinds[E.K_IO] = not p.user_coherence_index
    return kinds


def _user_mapped(cols: Columns, at: np.ndarray) -> np.ndarray:
    """Which of the allocations at positions ``at`` give the block a user address."""
    kind = cols.kind[at]
    return (kind == E.K_ALLOC_ANON) | ((kind == E.K_ALLOC_PAGECACHE) & (cols.addr[at] != 0))


INERT = np.zeros(E.NKINDS, dtype=bool)  # the kinds inert() leaves out whatever the event
INERT[E.K_KMAP_ATOMIC] = True
INERT_OFFSET = INERT.copy()  # ... and while the offset map gives every page its kernel address
INERT_OFFSET[[E.K_KMAP, E.K_KUNMAP]] = True


def inert(k: Kernel, cols: Columns, out: AllocResult) -> np.ndarray:
    """Events that change no parisc state and issue no cache operation, left out of the timeline:
    kmap_atomic (it only counts here) and allocations that neither map the block for the kernel
    nor give it a user address (the frame was free, so its state before and after is the same).
    While the offset map gives every page its kernel address, kmap and kunmap are inert too, and
    so is the free of a block with no user address (its frame stays as it was: no user colour)."""
    kind = cols.kind
    idle = (INERT_OFFSET if k.policy.offset_maps_lowmem else INERT)[kind]  # (a table: one pass)
    is_alloc = np.flatnonzero(E.IS_ALLOC[kind[cols.src]])  # (index arrays: masks here follow no pattern)
    alloc = cols.src[is_alloc]
    idle[alloc] = ~_user_mapped(cols, alloc) & ~out.mapped[is_alloc]
    if k.policy.offset_maps_lowmem:
        idle[cols.src[_frees_of_kernel_blocks(k, cols, out)]] = True
    return idle


def _frees_of_kernel_blocks(k: Kernel, cols: Columns, out: AllocResult) -> np.ndarray:
    """The frees (indices into ``cols.src``) of blocks with no user colour: allocated in the batch
    without a user address, or held since before it by a frame with none."""
    by = cols.src_by_key  # allocs and frees by (handle, time): a free's alloc is the one before it
    handle = cols.src_handle[by]
    same = np.flatnonzero(handle[1:] == handle[:-1])
    alloc_of = np.full(cols.src.size, -1, dtype=np.int64)
    alloc_of[by[same + 1]] = by[same]
    free = np.flatnonzero(cols.kind[cols.src] == E.K_FREE)
    free = free[out.freed[free] >= 0]  # (a free of a failed allocation is no event here at all)
    a = alloc_of[free]
    in_batch = a >= 0
    user = np.zeros(free.size, dtype=bool)
    user[in_batch] = _user_mapped(cols, cols.src[a[in_batch]])
    user[~in_batch] = k.vi.user_colour[out.freed[free[~in_batch]]] >= 0
    return free[~user]


def run(k: Kernel, cols: Columns, event_pfn: np.ndarray, out: AllocResult) -> tuple[np.ndarray, np.ndarray]:
    """The parisc passes of one batch; returns the kmap pool's change points for the time series
    (event positions, pages mapped after each)."""
    vi, p, cnt = k.vi, k.policy, k.c
    t = Timeline(k, cols, event_pfn, out)
    c = Colours(k, t, cols)
    issue(k, cols, t, c)
    transients = int(np.count_nonzero(c.transient))
    cnt.kmap_atomic_maps += transients
    cnt.tlb_flush_local += transients + int(np.count_nonzero(c.last))
    # the blocks __alloc_pages mapped: every one is a timeline event (none is inert), so they are
    # read off the allocator's results, in time order, with no lookup
    mapped_blocks = out.order[np.flatnonzero(out.mapped & E.IS_ALLOC[cols.kind[cols.src]])]
    cnt.tlb_entries_used += int(np.sum(tlb_entries(mapped_blocks, p.variable_pages)))
    _store(k, t, c)
    change = c.first | c.last
    at = stable_order(t.pos[change])
    delta = np.where(c.first, 1, -1)[change][at]
    return t.pos[change][at], vi.kmaps.pages - int(delta.sum()) + np.cumsum(delta)


def _store(k: Kernel, t: Timeline, c: Colours) -> None:
    """Each touched frame's state after its last event of the batch. Only frames with an alloc or
    a free in the batch change their user colour and allocation mapping, and only the frames
    ``KmapCounts`` follows change their kmap count and kmap mapping: the rest are left as they
    were (writes to scattered frames cost more than anything computed for them)."""
    vi = k.vi
    if not t.pfn.size:
        return
    end = t.runs.ends
    sets = t.sets[end]
    keep = np.flatnonzero((t.setter[end] >= 0) | sets)  # runs with an alloc or a free
    end, sets = end[keep], sets[keep]
    frames = t.pfn[end]
    vi.user_colour[frames] = np.where(sets, t.u_set[end], t.u[end])  # (-1 for a free)
    if k.policy.offset_maps_lowmem:
        return
    # a frame KmapCounts does not follow keeps the kmap mapping it came with (kmap_before)
    vi.kernel_colour[frames] = c.after(t, end, c.kmap_before[end])
    end = c.counts.s[c.counts.sub.ends]  # the last events of the followed frames
    frames = t.pfn[end]
    count = c.count[end] + c.delta[end]
    kmapped = np.where(c.first[end], c.kmap[end], c.kmap_before[end])
    vi.kernel_colour[frames] = c.after(t, end, np.where(count > 0, kmapped, -1))
    vi.kmap_count[frames] = count
