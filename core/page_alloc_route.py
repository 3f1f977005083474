"""Zone fallback inside a batched window (__alloc_pages' zonelist walk, mm/page_alloc.c 2.6.11).

Used by ``page_alloc_batch``: given a window's requests, each assumed to go to the first zone of
its zonelist, find the ones a zone cannot serve, send them on down their zonelists, and report
the ones no zone serves. Exact against the event-by-event allocator; see ``route``.
"""

from __future__ import annotations

import numpy as np

from core.kernel import Kernel
from core.mem_map import Zone


def _zone_order(k: Kernel) -> list[int] | None:
    """Zones in an order every zonelist respects (each falls back only to later zones), or None
    if the zonelists disagree (unmapped's kernel list runs Normal -> HighMem, the user list
    HighMem -> Normal)."""
    before = {z: set() for z in range(len(k.mm.zones))}
    for zl in k.zonelist.values():
        for i, z in enumerate(zl):
            before[z].update(zl[:i])
    order: list[int] = []
    while len(order) < len(before):
        ready = [z for z in before if z not in order and before[z] <= set(order)]
        if not ready:
            return None
        order.append(min(ready))
    return order


def route(k: Kernel, gfp: np.ndarray, is_alloc: np.ndarray, order: np.ndarray, zone_of: np.ndarray,
           src: np.ndarray, noop: np.ndarray, cut: int) -> tuple[np.ndarray, int]:
    """Send the order-0 allocations a zone cannot serve down their zonelists; return the ones no
    zone serves (failed) and the cut. ``zone_of`` is updated in place.

    A zone's free pages (hot list plus buddy lists) move by -1 per order-0 allocation it serves,
    +1 per order-0 free, and +-2**order per larger free or allocation. An order-0 request finds
    the zone empty exactly at the new minima of that walk below zero (a walk reflected at the
    empty zone); it goes on to the next zone of its zonelist, in time order, which is processed
    after it. A free of a page the zone did not serve pushes nothing there, which can only cause
    later misses, so each zone's miss set is iterated to its fixed point (at the fixed point every
    request's fate follows from the events before it, as in the event-by-event kernel). A larger
    request is routed the same way when it meets an empty zone; one that finds some pages but
    fewer than it needs ends the window, as does one the buddy lists cannot serve (a drain)."""
    zones = _zone_order(k)
    no_failures = np.zeros(is_alloc.size, dtype=bool)
    if zones is None or k.policy.map_on_alloc:  # (unmapped checks its window before any zone)
        return no_failures, cut
    asks = np.flatnonzero(is_alloc[:cut] & ~noop[:cut])
    if all(z.free_pages >= d for z, d in zip(k.mm.zones, _demand(k, asks, order, zone_of).tolist(), strict=True)):
        return no_failures, cut  # no zone can run out, whatever the order of events (the common case)
    r = _Routing(k, gfp, is_alloc, order, zone_of, src, noop, cut)
    for zi in zones:
        missed = r.misses(k.mm.zones[zi])
        if missed is not None:
            r.send_on(zi, missed)
    return r.failed, r.cut


class _Routing:
    """One window's routing state: which zone each request asks now, and what zones must give."""

    def __init__(self, k: Kernel, gfp: np.ndarray, is_alloc: np.ndarray, order: np.ndarray,
                 zone_of: np.ndarray, src: np.ndarray, noop: np.ndarray, cut: int) -> None:
        self.gfp, self.zone_of, self.src, self.cut = gfp, zone_of, src, cut
        self.idx = np.arange(is_alloc.size)
        self.pages = np.left_shift(1, order)
        in_cut = ~noop & (self.idx < cut)
        zero = in_cut & (order == 0)
        self.zero_alloc, self.zero_free = zero & is_alloc, zero & ~is_alloc
        self.hi_pages = np.where(in_cut & (order > 0), np.where(is_alloc, -self.pages, self.pages), 0)
        self.demand = _demand(k, np.flatnonzero(is_alloc & in_cut), order, zone_of)
        self.next_zone = _next_zone_table(k)
        self.linked = np.flatnonzero(src >= 0)
        self.failed = np.zeros(is_alloc.size, dtype=bool)

    def misses(self, zone: Zone) -> np.ndarray | None:
        """The requests ``zone`` cannot serve (a mask), or None if it serves them all."""
        if zone.free_pages >= self.demand[zone.index]:
            return None  # enough for every request the window sends here, rerouted ones included
        here = self.zone_of == zone.index
        wants = self.zero_alloc & here
        hi = np.where(here, self.hi_pages, 0)
        pushes = self.zero_free & here
        if not wants.any() and not (hi < 0).any():
            return None
        if zone.free_pages == 0 and not pushes.any() and not (hi > 0).any():
            return wants | (hi < 0)  # nothing there and nothing coming: every request goes on
        ops = np.flatnonzero(wants | pushes | (hi != 0))
        step = np.where(wants[ops], -1, np.where(pushes[ops], 1, hi[ops]))
        if zone.free_pages + int(np.cumsum(step).min()) >= 0:
            return None  # this zone serves every request in the window
        missed, short = reflect(zone.free_pages, ops, step, wants[ops], wants.size, self.src)
        if short < self.cut:
            self.cut = short
            keep = self.idx < short
            missed &= keep
            self.zero_alloc &= keep
            self.zero_free &= keep
            self.hi_pages[~keep] = 0
        return missed

    def send_on(self, zone: int, missed: np.ndarray) -> None:
        """The missed requests ask the next zone of their zonelists; with none left they fail."""
        at = np.flatnonzero(missed)
        nxt = self.next_zone[self.gfp[at], zone]
        self.zone_of[at] = nxt
        np.add.at(self.demand, nxt[nxt >= 0], self.pages[at[nxt >= 0]])
        self.failed[at[nxt < 0]] = True
        self.hi_pages[at[nxt < 0]] = 0  # a failed request takes nothing anywhere
        self.zone_of[self.linked] = self.zone_of[self.src[self.linked]]  # frees follow their pages


def _demand(k: Kernel, asks: np.ndarray, order: np.ndarray, zone_of: np.ndarray) -> np.ndarray:
    """Pages the allocations ``asks`` ask of each zone."""
    demand = np.bincount(zone_of[asks], minlength=len(k.mm.zones))
    big = asks[order[asks] > 0]
    np.add.at(demand, zone_of[big], np.left_shift(1, order[big]) - 1)
    return demand


def _next_zone_table(k: Kernel) -> np.ndarray:
    """next_zone[gfp, zone]: the zone after ``zone`` in gfp's zonelist, or -1."""
    table = np.full((4, len(k.mm.zones)), -1, dtype=np.int64)
    for gfp, zonelist in k.zonelist.items():
        for a, b in zip(zonelist[:-1], zonelist[1:], strict=True):
            table[gfp, a] = b
    return table


def reflect(free: int, ops: np.ndarray, step: np.ndarray, is_pop: np.ndarray, size: int,
             src: np.ndarray) -> tuple[np.ndarray, int]:
    """The requests a zone with ``free`` pages cannot serve (see route), and the index of the
    first larger request that finds some pages but fewer than it needs (or ``size``). ``ops``
    are the zone's events, ``step`` what each does to its free pages.

    Walk value v, running floor m = min(0, earlier v): a request meets an empty zone when the
    walk makes a new minimum below zero, and the free pages before it are v_prev - m. An order-0
    pop that misses leaves the zone empty, which the reflection expresses exactly; a larger
    request is only that simple when the zone was already empty."""
    o_src = src[ops]
    linked = np.flatnonzero(o_src >= 0)
    big = (step < 0) & ~is_pop
    gives = step > 0
    missed = np.zeros(size, dtype=bool)
    gone = np.zeros(ops.size, dtype=bool)  # frees of pages this zone did not hand out
    while True:
        walk = free + np.cumsum(np.where(gone & gives, 0, step))
        prev = np.concatenate(([free], walk[:-1]))
        floor = np.minimum(np.minimum.accumulate(np.concatenate(([0], walk[:-1]))), 0)
        below = walk < floor
        missed[ops] = below & (is_pop | (big & (prev == floor)))
        now_gone = np.zeros(ops.size, dtype=bool)
        now_gone[linked] = missed[o_src[linked]]
        if np.array_equal(now_gone, gone):  # the walk already reflects every missing push
            short = ops[below & big & (prev > floor)]
            return missed, int(short[0]) if short.size else size
        gone = now_gone
