"""kmap_kernel's colour buckets (the paper, s5.2): kernel mappings on a virtually indexed machine.

A pool is ``slots_per_colour`` rows of ``colours`` page slots (the kernel window's rows are split
between two pools: kmaps, and the mappings __alloc_pages makes). A request names the
colour it wants (congruent with the page's user address, or equivalent with its physical address)
and takes a slot of that colour if one is free. A page with no user address is served by the
global bucket counter: take from bucket ``counter``, then move the counter past it. When the wanted
colour has no free slot that is the paper's BUG_ON: counted as a congruence exhaustion, and the
request falls back to the counter's next bucket with room, i.e. a slot that is *not* congruent.

``used[c]`` is the bucket's occupancy in pages. Which slot of a bucket a page takes does not change
any count zonesim reports, so only occupancy is kept. A block of 2**order pages takes consecutive
colours from its head's; only the head's bucket is checked for room (a simplification that matters
only when the window is nearly full). When no bucket has room at all the request takes the
counter's bucket anyway (over-committed), still counted as an exhaustion.
"""

from __future__ import annotations

import numpy as np

from core.vec import ranges, stable_order


class ColourPool:
    """One pool of kernel-window slots, bucketed by colour."""

    def __init__(self, colours: int, slots_per_colour: int) -> None:
        self.colours = colours
        self.cap = slots_per_colour
        self.used = np.zeros(colours, dtype=np.int64)
        self.counter = 0  # the global bucket counter, for colourless requests and fallbacks
        self.exhaustions = 0
        self.pages = 0  # sum of used: pages mapped from this pool

    def _room(self, colour: int) -> bool:
        return bool(self.used[colour] < self.cap)

    def _next_with_room(self) -> int:
        for i in range(self.colours):
            b = (self.counter + i) % self.colours
            if self._room(b):
                return b
        return self.counter % self.colours  # every bucket full: over-commit

    def get(self, want: int, pages: int = 1) -> int:
        """A slot for ``pages`` pages whose head wants colour ``want`` (-1: any); its colour."""
        if want >= 0 and self._room(want):
            colour = want
        else:
            if want >= 0:
                self.exhaustions += 1
            colour = self._next_with_room()
            self.counter = (colour + 1) % self.colours
        self.take(colour, pages)
        return colour

    def take(self, colour: int, pages: int) -> None:
        # np.add.at, not a fancy +=: a block larger than the colour count takes some colours twice
        np.add.at(self.used, (colour + np.arange(pages)) % self.colours, 1)
        self.pages += pages

    def put(self, colour: int, pages: int = 1) -> None:
        np.add.at(self.used, (colour + np.arange(pages)) % self.colours, -1)
        self.pages -= pages

    def peek(self, want: int) -> int:
        """The colour a transient mapping (map and unmap at once) would get, with its side effects
        on the counter and the exhaustion count, leaving occupancy as it was."""
        colour = self.get(want)
        self.put(colour)
        return colour


# -- a batch of requests at once (the fast engine) ----------------------------------------------------

GET, PUT, PEEK = 0, 1, 2


def serve(pool: ColourPool, op: np.ndarray, want: np.ndarray, pages: np.ndarray, link: np.ndarray,
          carried: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Serve a batch's requests in time order; returns each request's colour.

    ``op`` GET/PUT/PEEK; ``want`` the wanted colour or -1; ``pages`` per request; a PUT gives back
    the colour of the GET at index ``link`` or, when link is -1, ``carried`` (mapped before the
    batch); ``pos`` the event position (requests are in time order, at most one per event).

    The common case is vectorized: while no bucket is full, a wanted colour is granted and the
    colourless requests take consecutive buckets from the counter. That case is verified by
    following every bucket's occupancy through the batch; if any request would find its bucket
    full, the batch is served one request at a time by the scalar verbs instead."""
    colour = _assume_room(pool, op, want, link, carried)
    gets, puts = _per_bucket(colour, pages, op, pool.colours)
    if _fits(pool, op, colour, pages, pos, gets):
        colourless = (op != PUT) & (want < 0)
        pool.counter = (pool.counter + int(np.count_nonzero(colourless))) % pool.colours
        pool.used += gets - puts
        pool.pages += int(gets.sum() - puts.sum())
        return colour
    return _serve_scalar(pool, op, want, pages, link, carried)


def _assume_room(pool: ColourPool, op: np.ndarray, want: np.ndarray, link: np.ndarray,
                 carried: np.ndarray) -> np.ndarray:
    colour = want.astype(np.int64)  # (a copy, and wide whatever ``want``'s type)
    colourless = np.flatnonzero((op != PUT) & (want < 0))
    colour[colourless] = (pool.counter + np.arange(colourless.size)) % pool.colours
    put = np.flatnonzero(op == PUT)
    colour[put] = np.where(link[put] >= 0, colour[np.maximum(link[put], 0)], carried[put])
    return colour


def _spread(colour: np.ndarray, pages: np.ndarray, colours: int) -> np.ndarray:
    """Every page's bucket: a block takes consecutive colours from its head's."""
    return ranges(colour, pages) % colours


def _per_bucket(colour: np.ndarray, pages: np.ndarray, op: np.ndarray, colours: int) -> tuple[np.ndarray, np.ndarray]:
    """The pages the GETs and the PUTs take and give back, per bucket: the heads at once, then
    the other pages of the few blocks of more than one. One count of (bucket, GET or PUT) pairs
    serves both (PEEKs change nothing): an integer bincount, several times faster than np.add.at
    and than a weighted bincount per sign, which goes through floats."""
    change = np.flatnonzero(op != PEEK)
    pair = (colour[change] % colours) * 2 + (op[change] == PUT)
    total = np.bincount(pair, minlength=2 * colours)
    multi = change[pages[change] > 1]
    if multi.size:
        rest = pages[multi] - 1
        pair = _spread(colour[multi] + 1, rest, colours) * 2 + np.repeat(op[multi] == PUT, rest)
        total += np.bincount(pair, minlength=2 * colours)
    return total[0::2], total[1::2]


def _fits(pool: ColourPool, op: np.ndarray, colour: np.ndarray, pages: np.ndarray, pos: np.ndarray,
          gets: np.ndarray) -> bool:
    """Would every GET and PEEK find room at its head colour, given the changes before it?
    (``gets``: the pages the GETs take per bucket.)"""
    ask = op != PUT
    bound = pool.used + gets
    if np.all(bound[colour[ask]] < pool.cap):  # even if no slot were given back, every bucket has room
        return True
    change = op != PEEK
    c_pages = pages[change]
    bucket = _spread(colour[change], c_pages, pool.colours)
    when = np.repeat(pos[change], c_pages)
    delta = np.repeat(np.where(op[change] == GET, 1, -1), c_pages)
    span = int(pos.max()) + 2 if pos.size else 1
    key = bucket * span + when
    order = stable_order(key)  # ties share a key, so they are counted together whatever their order
    key = key[order]
    prefix = np.concatenate([[0], np.cumsum(delta[order])])
    head = colour[ask]
    before = np.searchsorted(key, head * span + pos[ask], side="left")
    first = np.searchsorted(key, head * span, side="left")
    occupancy = pool.used[head] + prefix[before] - prefix[first]
    return bool(np.all(occupancy < pool.cap))


def _serve_scalar(pool: ColourPool, op: np.ndarray, want: np.ndarray, pages: np.ndarray, link: np.ndarray,
                  carried: np.ndarray) -> np.ndarray:
    colour = np.empty(op.size, dtype=np.int64)
    for i in range(op.size):
        if op[i] == GET:
            colour[i] = pool.get(int(want[i]), int(pages[i]))
        elif op[i] == PEEK:
            colour[i] = pool.peek(int(want[i]))
        else:
            colour[i] = colour[link[i]] if link[i] >= 0 else carried[i]
            pool.put(int(colour[i]), int(pages[i]))
    return colour
