"""The page allocator over a window of events at once: the fast engine's pass over alloc/free.

Semantics are exactly those of ``page_alloc`` applied event by event; the reference engine is the
oracle. What makes a window tractable in NumPy:

- A zone's hot list is a stack, and a window's order-0 traffic on it is a sequence of pushes
  (frees) and pops (allocations). With depth d measured from the window's start, the pop that
  starts at depth L takes "level" L, and each level's events alternate pop/push, so every pop is
  matched by a stable sort on (level, time) to the last push at its level, or else to the level's
  initial occupant: the pre-existing hot-list page for L >= 1, or for L <= 0 the (-L)-th page of
  the buddy blocks that refills hand over (a refill puts a whole block on the empty list, lowest
  page on top, so those pages come out in address order).
- Refills and order >= 1 requests are the only events that touch the buddy lists. How much each
  zone must refill before a given moment follows from the running minimum of its pop levels, so
  the buddy-touching events of a window are replayed in time order with the scalar verbs: few
  events, exact order.
- Which page a pop returns may be a page freed earlier in the window that was itself popped
  earlier; these chains are resolved by pointer jumping (O(log n) vector steps).
- A zone that runs out sends requests down their zonelists (``page_alloc_route``): misses are the
  new minima of the zone's free-page walk below zero.

Whatever the window cannot do without reasoning about time step by step (a drain for an order >= 1
request, a request that finds some pages but too few, the unmapped window filling) ends the window
at that event; the caller commits the prefix and hands that event to the scalar verbs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.errors import InvariantError, StreamError
from core.kernel import H_FAILED, H_FREE, Kernel
from core.mem_map import PG_alloc, PG_buddy, PG_mapped, PG_pcp
from core.page_alloc import free_one_page, rmqueue, smallest_block
from core.page_alloc_route import reflect, route
from core.vec import run_last, stable_order


@dataclass
class Window:
    """The alloc/free events of one window, in time order (indices into the batch in ``pos``)."""

    pos: np.ndarray  # int64 positions in the batch
    handle: np.ndarray  # int64
    order: np.ndarray  # the events' order field (alloc order); apply_window widens it and fills in frees
    gfp: np.ndarray  # intp: the GFP class, 0 for frees
    by_handle: np.ndarray  # the window's events in handle-major, time-minor order
    # by_handle's runs of one handle (None: apply_window finds them). The fast engine passes the
    # batch's when the window is the whole batch: found once for the links, the commit and the uses'
    # lookups, where each gathering the handles in that order costs 1.4 ms per 2 M events
    runs: HandleRuns | None = None


@dataclass
class HandleRuns:
    """Events in handle-major, time-minor order, as runs of one handle each."""

    handle: np.ndarray  # each event's handle, in that order
    last: np.ndarray  # the index (in that order) of each run's last event
    last_handle: np.ndarray  # each run's handle, ascending


def handle_runs(sorted_handle: np.ndarray) -> HandleRuns:
    last = run_last(sorted_handle)
    return HandleRuns(sorted_handle, last, sorted_handle[last])


@dataclass
class Outcome:
    """What the window did, per event (aligned with Window), for the later passes."""

    done: int  # events of the window applied; the event at ``done`` (if any) goes scalar
    pfn: np.ndarray  # allocs: the pfn; frees: the pfn freed or H_FAILED for a no-op
    zone: np.ndarray  # zone index the pages came from / went to (-1 for no-op frees)
    mapped: np.ndarray  # bool: the block is (was) mapped into the kernel window
    order: np.ndarray  # order of the block allocated or freed


def _prev_same_handle(by_handle: np.ndarray, runs: HandleRuns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each event, the index of the previous event on the same handle, or -1; and the events
    that have one with those previous events (index arrays)."""
    prev = np.full(by_handle.size, -1, dtype=np.int64)
    h = runs.handle
    same = np.flatnonzero(h[1:] == h[:-1])
    after, before = by_handle[same + 1], by_handle[same]
    prev[after] = before
    return prev, after, before


def _link(k: Kernel, w: Window) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate handle use and link each free to its in-window allocation (src) or table pfn.
    Also returns the first allocation that follows another on the same handle with no free
    between: legal only if the first one failed, which the scalar path decides."""
    is_alloc = w.gfp > 0
    prev, after, before = _prev_same_handle(w.by_handle, w.runs)
    has_prev = prev >= 0
    table = k.handle_pfn[w.handle]
    prev_alloc = np.zeros_like(has_prev)
    prev_alloc[after] = is_alloc[before]  # (index arrays: a mask here follows no pattern)
    bad_alloc = is_alloc & ~has_prev & (table >= 0)
    bad_free = ~is_alloc & ((has_prev & ~prev_alloc) | (~has_prev & (table == H_FREE)))
    if bad_alloc.any() or bad_free.any():
        i = int(np.flatnonzero(bad_alloc | bad_free)[0])
        what = "allocation into handle {}, which already holds a page" if is_alloc[i] else \
            "free of handle {}, which holds no page"
        raise StreamError(what.format(int(w.handle[i])))
    again = np.flatnonzero(is_alloc & has_prev & prev_alloc)
    src = np.where(~is_alloc & has_prev, prev, -1)
    return src, table, int(again[0]) if again.size else w.pos.size


def _walk(is_pop: np.ndarray, s0: int) -> np.ndarray:
    """Absolute hot-list level of each op: a pop takes the level it starts at, a push the level it
    ends at. Levels 1..s0 hold the pre-existing pages, levels <= 0 the pages refills bring."""
    # every op is one or the other: steps of -1 and +1 as bytes, summed into int64
    level = np.cumsum(1 - 2 * is_pop.view(np.int8), dtype=np.int64)
    level += s0
    level += is_pop
    return level


class _Zone:
    """One zone's order-0 traffic in the window."""

    def __init__(self, k: Kernel, idx: int, ops_idx: np.ndarray, is_pop: np.ndarray) -> None:
        self.idx = idx
        self.zone = k.mm.zones[idx]
        self.s0 = self.zone.pcp_top
        self.ops_idx = ops_idx  # window indices of this zone's pops and pushes, in time order
        self.is_pop = is_pop
        self.level = _walk(is_pop, self.s0)
        self.pop_idx = np.compress(is_pop, ops_idx)
        pop_levels = np.compress(is_pop, self.level)
        self.neg_runmin = -np.minimum.accumulate(pop_levels) if pop_levels.size else pop_levels
        self.supplied = 0  # pages the refills so far put on the list (levels 0, -1, ... -(supplied-1))
        # pages on the buddy lists, kept up to date through the window's buddy pass (a sum over the
        # free lists at every order >= 1 event costs more than the rest of the pass)
        self.buddy = sum(len(a) << o for o, a in enumerate(self.zone.free_area))
        self.blocks: list[tuple[int, int]] = []

    def supply(self) -> np.ndarray:
        if not self.blocks:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([np.arange(p, p + (1 << o), dtype=np.int64) for p, o in self.blocks])


def _refill_block(k: Kernel, zone_idx: int) -> tuple[int, int]:
    """pcp_refill's choice: the smallest free buddy block, taken off the buddy lists whole."""
    zone = k.mm.zones[zone_idx]
    order = smallest_block(zone)
    if order < 0:
        raise InvariantError(f"{zone.name}: refill from empty buddy lists")  # _refill_until checks
    pfn, _ = zone.free_area[order].popitem()
    k.mm.page_flags[pfn] &= 0xFF ^ PG_buddy
    k.mm.page_order[pfn] = -1
    return pfn, order


def _buddy_pass(k: Kernel, w: Window, zones: dict[int, _Zone], hi: np.ndarray, order_of: np.ndarray,
                zone_of: np.ndarray, src: np.ndarray, pfn: np.ndarray, mapped: np.ndarray) -> int:
    """Replay the buddy-touching events in time order; return the cut. Between two order >= 1
    events the buddy lists change only by refills, and each zone's refills follow from its own
    pops, so a segment's refills are taken zone by zone, then the order >= 1 event runs."""
    mm = k.mm
    for h in range(hi.size + 1):
        t_end = int(hi[h]) if h < hi.size else w.pos.size
        cut = _refill_until(k, zones, t_end)
        if cut < t_end or h == hi.size:
            return cut
        e = t_end
        order = int(order_of[e])
        z = zones.get(int(zone_of[e]))  # (a zone with no order-0 traffic needs no buddy count)
        if w.gfp[e]:
            got = rmqueue(mm, mm.zones[int(zone_of[e])], order)
            if got < 0:
                return e  # needs a drain or another zone
            if z is not None:
                z.buddy -= 1 << order
            mm.page_flags[got] |= PG_alloc | (PG_mapped if mapped[e] else 0)
            mm.page_order[got] = order
            pfn[e] = got
        else:
            p = int(pfn[src[e]]) if src[e] >= 0 else int(pfn[e])
            pfn[e] = p
            mm.page_flags[p] &= 0xFF ^ (PG_alloc | PG_mapped)
            mm.page_order[p] = -1
            free_one_page(mm, mm.zones[int(zone_of[e])], p, order)
            if z is not None:
                z.buddy += 1 << order
    return w.pos.size


def _refill_until(k: Kernel, zones: dict[int, _Zone], t_end: int) -> int:
    """Give every zone the refills its pops before ``t_end`` need; return ``t_end``, or the first
    pop that finds its hot list and buddy lists empty (nothing at or after it is refilled)."""
    cut = t_end
    for z in zones.values():  # first where a zone runs dry, so no refill beyond it is taken
        have = z.supplied + z.buddy  # (a refill moves pages from one to the other)
        if z.neg_runmin.size and int(z.neg_runmin[-1]) >= have:
            cut = min(cut, int(z.pop_idx[np.searchsorted(z.neg_runmin, have, side="left")]))
    for z in zones.values():
        i = int(np.searchsorted(z.pop_idx, cut))  # this zone's pops before the cut
        need = int(z.neg_runmin[i - 1]) + 1 if i else 0  # refill pages for levels 0 .. 1-need
        while z.supplied < need:
            block = _refill_block(k, z.idx)
            z.blocks.append(block)
            z.supplied += 1 << block[1]
            z.buddy -= 1 << block[1]
    return cut


def _match(k: Kernel, z: _Zone, cut: int, ptr: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Point each pop (before ``cut``) at its push, or give it its initial occupant's pfn.

    Returns how many pages at the bottom of the hot list the window left where they were, and the
    rest of the final list bottom to top: the window index of the push for pages pushed in the
    window, -(pfn + 2) for pages that did not move."""
    keep = slice(0, int(np.searchsorted(z.ops_idx, cut)))  # ops_idx rises: the ones before the cut
    ops, level, is_pop = z.ops_idx[keep], z.level[keep], z.is_pop[keep]
    supply = z.supply()
    stack = z.zone.pcp[:z.s0]
    if is_pop.all():
        return _match_pops(z, ops, stack, supply, val)
    srt = stable_order(level)  # by level, ties in time order
    lv, sp, so = level[srt], is_pop[srt], ops[srt]
    first_at_level = np.ones(srt.size, dtype=bool)
    first_at_level[1:] = lv[1:] != lv[:-1]
    pops = np.flatnonzero(sp)
    from_push = ~first_at_level[pops]
    ptr[so[pops[from_push]]] = so[pops[from_push] - 1]
    fresh = pops[first_at_level[pops]]  # first op at its level: takes the level's initial occupant
    fl = lv[fresh]
    val[so[fresh[fl >= 1]]] = stack[fl[fl >= 1] - 1]
    val[so[fresh[fl <= 0]]] = supply[-fl[fl <= 0]]
    # the final list: untouched refill pages, untouched pre-existing pages, last push per level
    lowest = int(lv[pops].min()) if pops.size else z.s0 + 1
    final_depth = z.s0 + int(np.count_nonzero(~is_pop)) - int(np.count_nonzero(is_pop))
    parts = []
    kept = min(lowest - 1, z.s0) if lowest >= 2 else 0  # untouched pre-existing pages stay put
    if supply.size:
        parts.append(-(supply[::-1][: supply.size + lowest - 1] + 2))
    last_at_level = np.ones(srt.size, dtype=bool)
    last_at_level[:-1] = lv[1:] != lv[:-1]
    tops = last_at_level & ~sp
    lo = min(lowest, z.s0 + 1)
    tops &= (lv >= lo) & (lv <= final_depth)
    parts.append(so[tops])  # the sort put them in level order already
    if max(final_depth - lo + 1, 0) != int(np.count_nonzero(tops)):
        raise InvariantError("hot-list levels lost a page")
    return kept, np.concatenate(parts)


def _match_pops(z: _Zone, ops: np.ndarray, stack: np.ndarray, supply: np.ndarray,
                val: np.ndarray) -> tuple[int, np.ndarray]:
    """_match when the window only takes from the hot list: the i-th pop takes level s0 - i."""
    n = ops.size
    val[ops] = np.concatenate([stack[::-1], supply])[:n]  # occupants of levels s0, s0-1, ...
    lowest = z.s0 - n + 1
    kept = max(z.s0 - n, 0)
    rest = supply[::-1][: supply.size + lowest - 1] if supply.size else supply
    return kept, -(rest + 2)


def _resolve(ptr: np.ndarray, val: np.ndarray) -> None:
    """Pointer jumping: every event with ptr >= 0 takes the value at the end of its chain."""
    todo = np.flatnonzero(ptr >= 0)
    while todo.size:
        nxt = ptr[todo]
        done = ptr[nxt] < 0
        val[todo[done]] = val[nxt[done]]
        rest = todo[~done]
        ptr[rest] = ptr[nxt[~done]]  # jump: read before this round's finished chains are cleared
        ptr[todo[done]] = -1
        todo = rest


def _last_per_handle(w: Window, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (< cut) of the last event on each handle, and those handles; ``by_handle`` is the
    window's handle-major order, which restricted to the prefix is the prefix's."""
    if cut == w.pos.size:
        return w.by_handle[w.runs.last], w.runs.last_handle
    keep = w.by_handle < cut
    runs = handle_runs(w.runs.handle[keep])
    return w.by_handle[keep][runs.last], runs.last_handle


def apply_window(k: Kernel, w: Window) -> Outcome:
    """Apply the window's events in order up to the first one it cannot batch (see module doc)."""
    mm = k.mm
    n = w.pos.size
    idx = np.arange(n)
    is_alloc = w.gfp > 0
    if w.runs is None:
        w = dataclasses.replace(w, runs=handle_runs(w.handle[w.by_handle]))
    src, table, again = _link(k, w)
    linked = src >= 0
    from_table = ~is_alloc & ~linked
    noop = from_table & (table == H_FAILED)
    # index arrays, not masks: the masks follow no pattern, and applying one costs several times more
    lk = np.flatnonzero(linked)
    tf = np.flatnonzero(from_table & ~noop)  # frees of blocks held from before the window
    held = table[tf]
    pfn = np.where(from_table, table, -1)
    order = w.order.astype(np.int64)
    order[tf] = mm.page_order[held]
    order[lk] = order[src[lk]]
    mapped = k.maps_on_alloc[w.gfp] & is_alloc
    mapped[tf] = (mm.page_flags[held] & PG_mapped) != 0
    mapped[lk] = mapped[src[lk]]
    zone_of = np.where(is_alloc, k.preferred_zone[w.gfp], -1)
    zone_of[tf] = mm.zone_index(held)
    zone_of[lk] = zone_of[src[lk]]
    failed, cut = route(k, w.gfp, is_alloc, order, zone_of, src, noop, again)
    # unmapped: a kernel allocation the window has no room for fails first (None: room for all)
    full, cut = window_misses(k, is_alloc, mapped, noop, order, src, cut) if k.policy.map_on_alloc else (None, cut)
    if full is not None:
        failed |= full
    if failed.any():
        noop |= linked & failed[np.maximum(src, 0)]  # frees of handles whose allocation failed
        pfn[failed | noop] = H_FAILED
        zone_of[failed | noop] = -1
        mapped[failed] = False
    pages = np.left_shift(1, order)
    if full is not None:  # (with room for every request, failures only give more back)
        d_window = np.where(mapped & ~noop & ~failed, np.where(is_alloc, pages, -pages), 0)
        over = np.flatnonzero(is_alloc & (k.window_used + np.cumsum(d_window) > k.window_pages))
        cut = min(cut, int(over[0])) if over.size else cut
    live = ~noop & ~failed & (idx < cut)
    zero = live & (order == 0)
    zones = {zi: _Zone(k, zi, ops, is_alloc[ops]) for zi in range(len(mm.zones))
             if (ops := np.flatnonzero(zero & (zone_of == zi))).size}
    cut = min(cut, _buddy_pass(k, w, zones, np.flatnonzero(live & (order > 0)), order, zone_of, src, pfn, mapped))
    ptr = np.full(n, -1, dtype=np.int64)
    push_linked = np.flatnonzero(zero[:cut] & linked[:cut])
    ptr[push_linked] = src[push_linked]
    finals = {zi: _match(k, z, cut, ptr, pfn) for zi, z in zones.items()}
    _resolve(ptr, pfn)
    _commit(k, w, cut, _Resolved(is_alloc, noop, failed, order, pages, pfn, mapped, zone_of), finals)
    return Outcome(cut, pfn[:cut], zone_of[:cut], mapped[:cut], order[:cut])


@dataclass
class _Resolved:
    """Per-event facts of a window once handles are linked (aligned with Window)."""

    is_alloc: np.ndarray
    noop: np.ndarray  # frees of handles whose allocation failed: nothing to free
    failed: np.ndarray  # allocations that found no page
    order: np.ndarray
    pages: np.ndarray  # 1 << order
    pfn: np.ndarray
    mapped: np.ndarray
    zone_of: np.ndarray

    def prefix(self, cut: int) -> _Resolved:
        return _Resolved(*(getattr(self, f)[:cut] for f in self.__dataclass_fields__))


def _commit(k: Kernel, w: Window, cut: int, r: _Resolved,
            finals: dict[int, tuple[int, np.ndarray]]) -> None:
    """Write the window's net effect on mem_map, the hot lists, the handle table and the counts."""
    mm, c = k.mm, k.c
    r = r.prefix(cut)
    is_alloc, noop, failed, order, pfn = r.is_alloc, r.noop, r.failed, r.order, r.pfn
    mapped, zone_of = r.mapped, r.zone_of
    # every order-0 page the window moved ends on its zone's hot list or held by a handle (a pop
    # goes to its handle, whose next event, if any, pushes it again), and both are written whole
    # below: no pass clears them all first (3 ms per 2 M events)
    for zi, (kept, slots) in finals.items():
        zone = mm.zones[zi]
        stack = -slots - 2
        stack[slots >= 0] = pfn[slots[slots >= 0]]
        zone.pcp_room(kept + stack.size)[kept: kept + stack.size] = stack
        zone.pcp_top = kept + stack.size
        mm.page_flags[stack] = (mm.page_flags[stack] & (0xFF ^ (PG_alloc | PG_mapped))) | PG_pcp
        mm.page_order[stack] = -1
    last, last_handle = _last_per_handle(w, cut)
    k.handle_pfn[last_handle] = np.where(is_alloc[last], pfn[last], H_FREE)
    held = last[is_alloc[last] & (order[last] == 0) & ~failed[last]]
    got = pfn[held]
    mm.page_flags[got] = ((mm.page_flags[got] & (0xFF ^ (PG_alloc | PG_pcp | PG_mapped))) | PG_alloc
                          | np.where(mapped[held], PG_mapped, 0).astype(np.uint8))
    mm.page_order[got] = 0
    pages = r.pages
    signed = np.where(is_alloc, -pages, pages)
    for zone in mm.zones:  # (a dot per zone: twice as fast as a weighted bincount, which goes through floats)
        zone.free_pages += int(np.dot(signed, zone_of == zone.index))
    mfree = ~is_alloc & ~noop & mapped
    # (count_nonzero, not sum: summing booleans widens them first, several times the cost)
    c.allocs += int(np.count_nonzero(is_alloc))
    c.alloc_failures += int(np.count_nonzero(failed))
    c.frees += int(np.count_nonzero(~is_alloc & ~noop))
    c.ops_on_failed += int(np.count_nonzero(noop))
    mapped_in, mapped_out = int(np.dot(pages, is_alloc & mapped & ~failed)), int(np.dot(pages, mfree))
    c.kernel_map_pages += mapped_in
    c.kernel_unmap_pages += mapped_out
    k.window_used += mapped_in - mapped_out  # the window's pages are the mapped blocks' (noops are frees)
    c.kernel_unmaps += int(np.count_nonzero(mfree))
    c.tlb_flush_local += int(np.count_nonzero(mfree))
    pfn[noop] = H_FAILED


def window_misses(k, is_alloc: np.ndarray, mapped: np.ndarray, noop: np.ndarray, order: np.ndarray,
                  src: np.ndarray, cut: int) -> tuple[np.ndarray | None, int]:
    """unmapped: the kernel allocations that find the kernel window full (do_alloc's check, before
    any zone), and the cut. The window's free pages walk as a zone's do: -2**order per mapped
    allocation, +2**order per free of a mapped block, so the same reflected walk finds the
    order-0 requests that meet it full (``page_alloc_route.reflect``, frees of failed requests
    giving nothing back); a larger request that finds some room but too little ends the window.
    None for no miss: room for every request in the window (the common case)."""
    n = is_alloc.size
    ops = np.flatnonzero(mapped[:cut] & ~noop[:cut])
    if not ops.size:
        return None, cut
    pages = np.left_shift(1, order[ops])
    room = k.window_pages - k.window_used
    if room >= int(pages.sum()):  # room even if nothing were given back: no walk needed
        return None, cut
    step = np.where(is_alloc[ops], -pages, pages)
    if room + int(np.cumsum(step).min()) >= 0:
        return None, cut
    missed, short = reflect(room, ops, step, is_alloc[ops] & (order[ops] == 0), n, src)
    cut = min(cut, short)
    missed[cut:] = False
    return missed, cut
