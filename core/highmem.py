"""Persistent and atomic kmaps (mm/highmem.c and arch/i386/mm/highmem.c, 2.6.11), scalar verbs.

pkmap_count[i] encodes, as in the kernel:
   0     slot free, and no TLB holds a stale translation for it
   1     no users, but the translation may still sit in some TLB: unusable until the next
         flush_all_zero_pkmaps (a count must never go to 0 without a global TLB flush)
   n > 1 n - 1 users

``map_new_virtual`` scans round-robin from ``last_pkmap_nr``; wrapping to slot 0 frees every
count-1 slot and costs one global TLB flush (an IPI to every CPU). When a full circle finds no
free slot the caller sleeps on pkmap_map_wait until a kunmap drops some count to 1.

Sleeping in a single event stream: the kmap that must sleep is counted as a wait and parked in
FIFO order; every kunmap that drops a count to 1 wakes all parked callers, which retry in order
(a retry that fails again sleeps again and is counted again). A kunmap of a handle whose kmap is
still parked cancels it (the blocked caller never got its mapping, so it has nothing to unmap).

page_address() of a highmem page is a lookup in ``page_address_htable``, which holds only the
pages that have a pkmap slot (at most LAST_PKMAP of them), as in the kernel: there is no
per-frame page->virtual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.errors import StreamError

if TYPE_CHECKING:
    from core.kernel import Kernel


class PageAddressHtable:
    """page_address_htable (mm/highmem.c): page -> pkmap slot for the pages that hold one.

    The kernel chains page_address_map entries {page, virtual} from a pool of LAST_PKMAP into
    1 << PA_HASH_ORDER buckets by hash_ptr(page). A slot holds one page at most, so here the
    entries are indexed by their slot: ``page[slot]`` (-1 when free) and ``next[slot]``, the next
    entry of its bucket; ``head`` holds each bucket's first entry, -1 ending a chain. The entry
    keeps its own page, as page_address_map does, so the table can be checked against the
    pool's pkmap_page. The bucket is the pfn's low bits: hash_ptr mixes a struct page pointer,
    whose low bits are alike, but consecutive pfns already differ there. Four buckets per slot
    (the kernel has 128 for all of them) keep nearly every chain one entry long, so a batch
    walks them in a step or two.
    """

    def __init__(self, slots: int) -> None:
        self.mask = 4 * slots - 1
        self.head = np.full(4 * slots, -1, dtype=np.int64)
        self.page = np.full(slots, -1, dtype=np.int64)
        self.next = np.full(slots, -1, dtype=np.int64)

    def get(self, pfn: int) -> int:
        """The slot holding ``pfn``, or -1."""
        slot = int(self.head[pfn & self.mask])
        while slot >= 0 and self.page[slot] != pfn:
            slot = int(self.next[slot])
        return slot

    def lookup(self, pfn: np.ndarray) -> np.ndarray:
        """``get`` of every pfn at once: the few not settled by their bucket's first entry walk
        their chains side by side (no further than a chain can reach, so a corrupted one that
        loops still ends)."""
        slot = self.head[pfn & self.mask]
        on = np.flatnonzero((self.page[slot] != pfn) & (slot >= 0))  # further down the chain, or a miss
        for _ in range(self.next.size):
            if not on.size:
                break
            step = self.next[slot[on]]
            slot[on] = step
            on = on[(self.page[step] != pfn[on]) & (step >= 0)]
        return slot

    def add(self, pfn: int, slot: int) -> None:
        """set_page_address(page, virtual): ``slot``, now holding ``pfn``, goes on its chain."""
        b = pfn & self.mask
        self.page[slot] = pfn
        self.next[slot] = self.head[b]
        self.head[b] = slot

    def add_many(self, pfn: np.ndarray, slot: np.ndarray) -> None:
        """``add`` of distinct pages to distinct free slots at once. Where new entries share a
        bucket the scatter keeps one of them (whichever write NumPy keeps), read back to see
        which: it goes in front of the old chain, and the others take their turn in front of it."""
        b = pfn & self.mask
        self.page[slot] = pfn
        while slot.size:
            old = self.head[b]
            self.head[b] = slot
            won = self.head[b] == slot
            self.next[slot[won]] = old[won]
            slot, b = slot[~won], b[~won]

    def rebuild(self, slot: np.ndarray, pfn: np.ndarray) -> None:
        """The table of exactly these pages in these slots: the flush's set_page_address(page,
        NULL) of every other page, done at once."""
        self.head.fill(-1)
        self.page.fill(-1)
        self.next.fill(-1)
        self.add_many(pfn, slot)

    def entries(self) -> np.ndarray:
        """Every slot on a chain, in walk order. A corrupted chain that loops or merges into another
        is cut once more entries than slots have been seen, so its count gives it away."""
        slot = self.head[self.head >= 0]
        seen = [slot]
        total = slot.size
        while slot.size and total <= self.next.size:
            slot = self.next[slot]
            slot = slot[slot >= 0]
            seen.append(slot)
            total += slot.size
        return np.concatenate(seen)


class Pkmap:
    """The persistent kmap pool: LAST_PKMAP slots, the round-robin cursor and the pages' addresses."""

    def __init__(self, slots: int) -> None:
        if slots < 1 or slots & (slots - 1):
            raise ValueError("LAST_PKMAP must be a power of two")
        self.slots = slots
        self.mask = slots - 1
        self.pkmap_count = np.zeros(slots, dtype=np.int32)
        self.pkmap_page = np.full(slots, -1, dtype=np.int64)  # pfn held by each slot
        self.page_address_htable = PageAddressHtable(slots)  # and the way back, pfn -> slot
        self.last_pkmap_nr = 0
        self.waiters: list[tuple[int, int]] = []  # parked (handle, pfn), FIFO
        self.mapped = 0  # slots with count >= 1 (pages that have a pkmap address)
        self.wraps = 0
        self.waits = 0
        self.new_mappings = 0


def page_address(pk: Pkmap, pfn: int) -> int:
    """page_address() of a highmem page: the pkmap slot holding it, or -1."""
    return pk.page_address_htable.get(pfn)


def flush_all_zero_pkmaps(pk: Pkmap) -> None:
    """Free every count-1 slot; the caller's wrap pays one global TLB flush for all of them.
    (The kernel loops over LAST_PKMAP; a mask does the same in one step.)"""
    stale = np.flatnonzero(pk.pkmap_count == 1)
    pk.pkmap_count[stale] = 0
    pk.pkmap_page[stale] = -1
    used = np.flatnonzero(pk.pkmap_count >= 1)
    pk.page_address_htable.rebuild(used, pk.pkmap_page[used])
    pk.mapped -= stale.size
    pk.wraps += 1


def map_new_virtual(pk: Pkmap, pfn: int) -> int:
    """A free slot for ``pfn`` (count becomes 1), or -1 if a full circle found none."""
    count = pk.slots
    while True:
        pk.last_pkmap_nr = (pk.last_pkmap_nr + 1) & pk.mask
        if pk.last_pkmap_nr == 0:
            flush_all_zero_pkmaps(pk)
            count = pk.slots
        if pk.pkmap_count[pk.last_pkmap_nr] == 0:
            break
        count -= 1
        if count == 0:
            return -1
    slot = pk.last_pkmap_nr
    pk.pkmap_count[slot] = 1
    pk.pkmap_page[slot] = pfn
    pk.page_address_htable.add(pfn, slot)
    pk.mapped += 1
    pk.new_mappings += 1
    return slot


def kmap_high(pk: Pkmap, handle: int, pfn: int) -> bool:
    """kmap of a page with no permanent address; False if the caller must sleep."""
    slot = page_address(pk, pfn)
    if slot < 0:
        slot = map_new_virtual(pk, pfn)
        if slot < 0:
            pk.waits += 1
            pk.waiters.append((handle, pfn))
            return False
    pk.pkmap_count[slot] += 1
    if pk.pkmap_count[slot] < 2:
        raise StreamError(f"pkmap_count[{slot}] < 2 after kmap")
    return True


def kunmap_high(pk: Pkmap, handle: int, pfn: int) -> None:
    """Drop one user of ``pfn``'s slot; at count 1 wake the sleepers, who retry in order."""
    for i, (h, _) in enumerate(pk.waiters):
        if h == handle:
            del pk.waiters[i]
            return
    slot = page_address(pk, pfn)
    if slot < 0 or pk.pkmap_count[slot] < 2:
        raise StreamError(f"kunmap of handle {handle}, which is not kmapped")
    pk.pkmap_count[slot] -= 1
    if pk.pkmap_count[slot] == 1 and pk.waiters:
        parked, pk.waiters = pk.waiters, []
        for h, p in parked:
            kmap_high(pk, h, p)


def kmap_atomic(k: Kernel, pfn: int) -> bool:
    """kmap_atomic (arch/i386/mm/highmem.c): a page with a kernel address is used through it; one
    without gets its CPU's fixmap PTE for the type, and the old translation goes with one local
    invlpg (counted here). True if it had to map; the caller counts what it mapped for."""
    if k.has_kernel_address(pfn):
        return False
    k.c.tlb_flush_local += 1
    return True
