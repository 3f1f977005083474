"""kmap_kernel's colour buckets (the paper, s5.2): kernel mappings on a virtually indexed machine.

The kernel window is ``slots_per_colour`` rows of ``colours`` page slots. A request names the
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
        self.used[(colour + np.arange(pages)) % self.colours] += 1
        self.pages += pages

    def put(self, colour: int, pages: int = 1) -> None:
        self.used[(colour + np.arange(pages)) % self.colours] -= 1
        self.pages -= pages

    def peek(self, want: int) -> int:
        """The colour a transient mapping (map and unmap at once) would get, with its side effects
        on the counter and the exhaustion count, leaving occupancy as it was."""
        colour = self.get(want)
        self.put(colour)
        return colour
