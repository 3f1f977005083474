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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.errors import StreamError

if TYPE_CHECKING:
    from core.kernel import Kernel


class Pkmap:
    """The persistent kmap pool: LAST_PKMAP slots and the round-robin cursor."""

    def __init__(self, slots: int) -> None:
        if slots < 1 or slots & (slots - 1):
            raise ValueError("LAST_PKMAP must be a power of two")
        self.slots = slots
        self.mask = slots - 1
        self.pkmap_count = np.zeros(slots, dtype=np.int32)
        self.pkmap_page = np.full(slots, -1, dtype=np.int64)  # pfn held by each slot
        self.last_pkmap_nr = 0
        self.waiters: list[tuple[int, int]] = []  # parked (handle, pfn), FIFO
        self.mapped = 0  # slots with count >= 1 (pages that have a pkmap address)
        self.wraps = 0
        self.waits = 0
        self.new_mappings = 0


def new_page_virtual(frames: int, slots: int) -> np.ndarray:
    """page->virtual for the pkmap pool (pkmap_slot: the slot holding each frame, or -1) in the
    narrowest type that holds a slot number. ``frames`` is 0 where no page is ever kmapped
    through the pool (a virtually indexed machine maps through kmap_kernel's buckets)."""
    return np.full(frames, -1, dtype=np.int16 if slots <= np.iinfo(np.int16).max else np.int32)


def flush_all_zero_pkmaps(pk: Pkmap, pkmap_slot: np.ndarray) -> None:
    """Free every count-1 slot; the caller's wrap pays one global TLB flush for all of them.
    (The kernel loops over LAST_PKMAP; a mask does the same in one step.)"""
    stale = np.flatnonzero(pk.pkmap_count == 1)
    pk.pkmap_count[stale] = 0
    pkmap_slot[pk.pkmap_page[stale]] = -1
    pk.pkmap_page[stale] = -1
    pk.mapped -= stale.size
    pk.wraps += 1


def map_new_virtual(pk: Pkmap, pkmap_slot: np.ndarray, pfn: int) -> int:
    """A free slot for ``pfn`` (count becomes 1), or -1 if a full circle found none."""
    count = pk.slots
    while True:
        pk.last_pkmap_nr = (pk.last_pkmap_nr + 1) & pk.mask
        if pk.last_pkmap_nr == 0:
            flush_all_zero_pkmaps(pk, pkmap_slot)
            count = pk.slots
        if pk.pkmap_count[pk.last_pkmap_nr] == 0:
            break
        count -= 1
        if count == 0:
            return -1
    slot = pk.last_pkmap_nr
    pk.pkmap_count[slot] = 1
    pk.pkmap_page[slot] = pfn
    pkmap_slot[pfn] = slot
    pk.mapped += 1
    pk.new_mappings += 1
    return slot


def kmap_high(pk: Pkmap, pkmap_slot: np.ndarray, handle: int, pfn: int) -> bool:
    """kmap of a page with no permanent address; False if the caller must sleep."""
    slot = int(pkmap_slot[pfn])
    if slot < 0:
        slot = map_new_virtual(pk, pkmap_slot, pfn)
        if slot < 0:
            pk.waits += 1
            pk.waiters.append((handle, pfn))
            return False
    pk.pkmap_count[slot] += 1
    if pk.pkmap_count[slot] < 2:
        raise StreamError(f"pkmap_count[{slot}] < 2 after kmap")
    return True


def kunmap_high(pk: Pkmap, pkmap_slot: np.ndarray, handle: int, pfn: int) -> None:
    """Drop one user of ``pfn``'s slot; at count 1 wake the sleepers, who retry in order."""
    for i, (h, _) in enumerate(pk.waiters):
        if h == handle:
            del pk.waiters[i]
            return
    slot = int(pkmap_slot[pfn])
    if slot < 0 or pk.pkmap_count[slot] < 2:
        raise StreamError(f"kunmap of handle {handle}, which is not kmapped")
    pk.pkmap_count[slot] -= 1
    if pk.pkmap_count[slot] == 1 and pk.waiters:
        parked, pk.waiters = pk.waiters, []
        for h, p in parked:
            kmap_high(pk, pkmap_slot, h, p)


def kmap_atomic(k: Kernel, pfn: int) -> bool:
    """kmap_atomic (arch/i386/mm/highmem.c): a page with a kernel address is used through it; one
    without gets its CPU's fixmap PTE for the type, and the old translation goes with one local
    invlpg (counted here). True if it had to map; the caller counts what it mapped for."""
    if k.has_kernel_address(pfn):
        return False
    k.c.tlb_flush_local += 1
    return True
