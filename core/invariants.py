"""Invariants of the simulated kernel, checked at the end of every run and on demand.

Each check raises ``InvariantError`` naming the invariant; a violation is a zonesim bug, so the
message says what was expected and what was found. All checks are vectorized: at 64 GB they read
16 M frames once or twice.
"""

from __future__ import annotations

import numpy as np

from core.errors import InvariantError
from core.kernel import Kernel
from core.mem_map import PG_alloc, PG_buddy, PG_mapped, PG_pcp, PG_reserved


def _fail(name: str, detail: str) -> None:
    raise InvariantError(f"invariant {name} violated: {detail}")


def _cover_blocks(cover: np.ndarray, heads: np.ndarray, orders: np.ndarray) -> None:
    """Add one to every frame of the blocks (heads, orders). Big blocks go by slice, small ones
    through np.add.at, which counts repeated frames (a plain fancy += would count them once)."""
    for o in np.unique(orders).tolist():
        at = heads[orders == o]
        if o >= 4:
            for h in at.tolist():
                cover[h:h + (1 << o)] += 1
        else:
            np.add.at(cover, (at[:, None] + np.arange(1 << o)).ravel(), 1)


def check_frames(k: Kernel) -> None:
    """No frame allocated twice: reserved, buddy, hot-list and allocated frames tile memory.
    Coverage is counted in one byte per frame, so the check needs about a byte per frame."""
    mm = k.mm
    live = k.handle_pfn[k.handle_pfn >= 0]
    ordered = np.sort(live)  # (a sort and a neighbour compare: np.unique costs 30x more here)
    if np.any(ordered[1:] == ordered[:-1]):
        _fail("one-owner", "two handles hold the same block")
    if np.any((mm.page_flags[live] & PG_alloc) == 0):
        _fail("alloc-flag", "a live handle's block is not flagged allocated")
    cover = np.zeros(mm.page_flags.size, dtype=np.uint8)
    reserved = np.flatnonzero(mm.page_flags & PG_reserved)
    cover[reserved] += 1
    heads = np.flatnonzero(mm.page_flags & PG_buddy)
    _cover_blocks(cover, heads, mm.page_order[heads].astype(np.int64))
    stacks = np.concatenate([mm.pcp_stack[z.start:z.start + z.pcp_top] for z in mm.zones]).astype(np.int64)
    np.add.at(cover, stacks, 1)
    _cover_blocks(cover, live, mm.page_order[live].astype(np.int64))
    bad = np.flatnonzero(cover != 1)
    if bad.size:
        _fail("tiling", f"frame {int(bad[0])} is covered {int(cover[bad[0]])} times (reserved/free/pcp/allocated)")
    if not np.array_equal(np.sort(stacks), np.flatnonzero(mm.page_flags & PG_pcp)):
        _fail("pcp-flag", "PG_pcp does not mark exactly the hot-list pages")


def check_zones(k: Kernel) -> None:
    """Each zone's free count equals its buddy pages plus its hot list; lists match the flags."""
    mm = k.mm
    for z in mm.zones:
        buddy = 0
        for order, area in enumerate(z.free_area):
            for pfn in area:
                if not (z.start <= pfn < z.end) or mm.page_order[pfn] != order:
                    _fail("free-area", f"{z.name} free_area[{order}] holds pfn {pfn} of another zone/order")
            buddy += len(area) << order
        if z.free_pages != buddy + z.pcp_top:
            _fail("zone-free", f"{z.name}: free_pages {z.free_pages} != buddy {buddy} + hot list {z.pcp_top}")
    listed = sum(len(a) for z in mm.zones for a in z.free_area)
    if listed != int(np.count_nonzero(mm.page_flags & PG_buddy)):
        _fail("buddy-flag", "PG_buddy heads and free lists disagree")


def check_pkmap(k: Kernel) -> None:
    """pkmap_count and page->virtual agree; counts are never negative."""
    pk, slot_of = k.pk, k.mm.pkmap_slot
    if np.any(pk.pkmap_count < 0):
        _fail("pkmap-count", "a pkmap_count is negative")
    used = np.flatnonzero(pk.pkmap_count >= 1)
    if used.size != pk.mapped:
        _fail("pkmap-mapped", f"{used.size} slots in use but mapped = {pk.mapped}")
    if np.any(slot_of[pk.pkmap_page[used]] != used):
        _fail("pkmap-virtual", "a slot's page does not point back at the slot")
    if int(np.count_nonzero(slot_of >= 0)) != used.size:
        _fail("pkmap-virtual", "a page points at a slot that does not hold it")


def check_mapped(k: Kernel) -> None:
    """unmapped policy: every kernel-mapped block is allocated and the window count is exact."""
    mm = k.mm
    heads = np.flatnonzero(mm.page_flags & PG_mapped)
    if np.any((mm.page_flags[heads] & PG_alloc) == 0):
        _fail("mapped-allocated", "a kernel-mapped block is not allocated")
    pages = int(np.sum(np.left_shift(1, mm.page_order[heads].astype(np.int64))))
    if pages != k.window_used:
        _fail("window", f"window_used {k.window_used} != mapped pages {pages}")
    if k.window_used > k.window_pages:
        _fail("window", "more pages mapped than the window holds")


def check_vi(k: Kernel) -> None:
    """Virtually indexed machines: translations only on allocated frames, the colour pools'
    occupancy equal to the mappings that hold slots, versions that never run ahead of the clock."""
    if not k.vi:
        return
    vi, mm = k.vi, k.mm
    allocated = (mm.page_flags & PG_alloc) != 0
    if np.any((vi.user_colour >= 0) & ~allocated):
        _fail("user-colour", "a frame that is not an allocated block head has a user translation")
    if np.any(vi.kmap_count < 0):
        _fail("kmap-count", "a kmap count is negative")
    kmapped = vi.kmap_count > 0
    if np.any(kmapped & (vi.kernel_colour < 0)) or np.any(kmapped & ((mm.page_flags & PG_mapped) != 0)):
        _fail("kmap-colour", "a kmapped page has no slot colour, or also an allocation mapping")
    if int(np.count_nonzero(kmapped)) != vi.kmaps.pages:
        _fail("kmap-pool", f"{int(np.count_nonzero(kmapped))} kmapped pages but the pool holds {vi.kmaps.pages}")
    mapped = np.flatnonzero(mm.page_flags & PG_mapped)
    if np.any(vi.kernel_colour[mapped] < 0):
        _fail("alloc-colour", "a block mapped by __alloc_pages has no slot colour")
    if vi.allocs.pages != k.window_used:
        _fail("alloc-pool", f"the allocation pool holds {vi.allocs.pages} pages, the window {k.window_used}")
    for name, pool in (("kmaps", vi.kmaps), ("allocs", vi.allocs)):
        if np.any(pool.used < 0) or int(pool.used.sum()) != pool.pages:
            _fail("pool-used", f"{name}: bucket occupancy negative or not summing to {pool.pages}")
    keys, version, dirty = vi.cache.snapshot()
    clock = vi.cache.clock
    if np.any(np.diff(keys) <= 0) or np.any(version > clock) or np.any(vi.cache.latest > clock):
        _fail("cache-versions", "cache lines unsorted or a version newer than the clock")
    if np.any(vi.cache.mem_version > vi.cache.latest):
        _fail("cache-versions", "memory holds a version newer than the frame's last write")


def check_all(k: Kernel) -> None:
    check_zones(k)
    check_frames(k)
    check_pkmap(k)
    check_mapped(k)
    check_vi(k)
