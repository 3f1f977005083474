"""Invariants of the simulated kernel, checked at the end of every run and on demand.

Each check raises ``InvariantError`` naming the invariant; a violation is a zonesim bug, so the
message says what was expected and what was found. All checks are vectorized: at 64 GB they read
16 M frames once or twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.cache import CURRENT, STALE
from core.errors import InvariantError
from core.kernel import Kernel
from core.mem_map import MemMap, PG_alloc, PG_buddy, PG_mapped, PG_pcp, PG_reserved


def _fail(name: str, detail: str) -> None:
    raise InvariantError(f"invariant {name} violated: {detail}")


FLAGS = PG_reserved | PG_buddy | PG_pcp | PG_alloc


@dataclass(frozen=True)
class Owners:
    """Who owns which frames, by the lists and the handle table (not by the flags): every check
    reads the same snapshot, taken once per ``check_all``. The live and free heads' page_flags
    are gathered here once for every check, which also holds those pfns to [-N, N) for N frames
    (NumPy raises on any other index): the steps between two of them fit in int32 when 2N does."""

    live: np.ndarray  # the live handles' block heads
    live_flags: np.ndarray  # their page_flags and page_order
    live_orders: np.ndarray
    live_mapped: np.ndarray  # which of them carry PG_mapped (mapped by __alloc_pages)
    heads: np.ndarray  # every buddy free list's heads, their orders, their lists' zones, their flags
    orders: np.ndarray
    zones: np.ndarray
    head_flags: np.ndarray
    hot: np.ndarray  # every zone's hot-list pages (a page past memory is check_frames's to report)


def owners(k: Kernel) -> Owners:
    flags = k.mm.page_flags
    lists = [(z.index, order, area) for z in k.mm.zones for order, area in enumerate(z.free_area) if area]
    sizes = [len(area) for _, _, area in lists]
    # (each list read by fromiter itself, not through a generator: half the time)
    heads = np.concatenate([np.fromiter(area, dtype=np.int64, count=len(area)) for _, _, area in lists]
                           or [np.zeros(0, dtype=np.int64)])
    live = k.handle_pfn[k.handle_pfn >= 0]
    live_flags = flags[live]
    return Owners(live=live, live_flags=live_flags, live_orders=k.mm.page_order[live],
                  live_mapped=(live_flags & PG_mapped) != 0, heads=heads, head_flags=flags[heads],
                  orders=np.repeat(np.array([o for _, o, _ in lists], dtype=np.int64), sizes),
                  zones=np.repeat(np.array([z for z, _, _ in lists], dtype=np.int64), sizes),
                  hot=np.concatenate([z.pcp[:z.pcp_top] for z in k.mm.zones]).astype(np.int64))


ORDER_BITS = 6  # a block's key is start << ORDER_BITS | order: orders up to 63


def _aligned_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) as the largest aligned power-of-two blocks, (start, order) each: a reserved
    range sorts with the buddy blocks in one key array."""
    out = []
    while lo < hi:
        order = min((lo & -lo).bit_length() - 1 if lo else 63, (hi - lo).bit_length() - 1)
        out.append((lo, order))
        lo += 1 << order
    return out


def _block_keys(key: type, pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """One array of start << ORDER_BITS | order keys of ``key`` dtype from (starts, orders) pairs
    (orders None: order 0), written in place: no int64 temporaries of the 400 k live heads."""
    keys = np.empty(sum(starts.size for starts, _ in pairs), dtype=key)
    at = 0
    for starts, orders in pairs:
        part = keys[at:at + starts.size]
        np.left_shift(starts, ORDER_BITS, out=part, casting="unsafe")
        if orders is not None:
            part |= orders
        at += starts.size
    return keys


def _run_bounds(starts: np.ndarray, orders: np.ndarray | None, step: type) -> tuple[np.ndarray, np.ndarray]:
    """The blocks (starts, orders; orders None: order 0) as intervals [start, end), neighbours in
    the given order that abut (one ends where the next begins) joined into one: handles are handed
    out as blocks are split, so 400 k live heads make about 36 k such runs. ``step`` is the dtype
    the steps between neighbours are taken in: int32 when the differences of any two starts fit
    in one (the caller's 2N < 2**31)."""
    if not starts.size:
        return starts, starts
    sizes = np.left_shift(1, orders, dtype=step) if orders is not None else np.ones(starts.size, dtype=step)
    cut = np.flatnonzero(np.subtract(starts[1:], starts[:-1], dtype=step) != sizes[:-1])
    last = np.r_[cut, starts.size - 1]
    return starts[np.r_[0, cut + 1]], starts[last] + sizes[last]


def _tiles_by_runs(mm: MemMap, own: Owners) -> bool:
    """True if the reserved ranges and the free, hot and live blocks cover every frame exactly
    once, shown on their runs; False says only that it is not shown here (_check_tiling decides).
    Intervals [s, e) of positive length cover each frame of [0, N) once and no other exactly when
    their starts and their ends, each sorted, satisfy S[0] = 0, S[i + 1] = E[i], E[-1] = N (a
    frame x is covered #{S <= x} - #{E <= x} times), so the two sorts need no pairing of starts
    with ends: two sorts of the runs instead of one of every block."""
    frames, hot = mm.page_flags.size, own.hot
    # (a hot list is a stack that refills and frees push onto, so its runs mostly descend)
    blocks = [(own.live, own.live_orders), (own.heads, own.orders), (hot[::-1], None)]
    for _, orders in blocks:  # only blocks no larger than memory can tile it (nor overflow a step)
        if orders is not None and orders.size and (orders.min() < 0 or 1 << int(orders.max()) > frames):
            return False
    reserved = [(lo, hi) for lo, hi in mm.layout.reserved_ranges if lo < hi]
    if hot.size and (hot.min() < 0 or hot.max() >= frames) or any(lo < 0 or hi > frames for lo, hi in reserved):
        return False  # (the live and free heads are held to memory by Owners)
    step = np.int32 if 2 * frames < 2**31 else np.int64  # (pfns in [-N, N), sizes <= N)
    parts = [_run_bounds(starts, orders, step) for starts, orders in blocks]
    parts.append(tuple(np.array(reserved, dtype=np.int64).reshape(-1, 2).T))
    if 2 * sum(starts.size for starts, _ in parts) > sum(starts.size for starts, _ in blocks):
        return False  # (blocks in no useful order: one sort of the blocks is the cheaper way)
    starts = np.sort(np.concatenate([starts for starts, _ in parts], dtype=step, casting="same_kind"))
    ends = np.sort(np.concatenate([ends for _, ends in parts], dtype=step, casting="same_kind"))
    if not starts.size:  # nothing at all tiles no memory: _check_tiling names it
        return False
    return bool(starts[0] == 0 and ends[-1] == frames and np.array_equal(starts[1:], ends[:-1]))


def _check_tiling(mm: MemMap, own: Owners) -> None:
    """The tiling on the blocks themselves, exact on any input: one sort of start << ORDER_BITS |
    order keys, naming the first frame that is not covered exactly once."""
    live, heads, orders, hot = own.live, own.heads, own.orders, own.hot
    reserved = [b for lo, hi in mm.layout.reserved_ranges for b in _aligned_blocks(lo, hi)]
    # int32 keys whenever every frame's key fits (64 GB is 2**24 frames): half the bytes to
    # sort and to shift, which halves this check on the default machines
    key = np.int32 if mm.page_flags.size << ORDER_BITS < 2**31 else np.int64
    reserved_pair = (np.array([lo for lo, _ in reserved], dtype=np.int64), np.array([o for _, o in reserved]))
    keys = _block_keys(key, [reserved_pair, (heads, orders), (hot, None), (live, own.live_orders)])
    # (equal keys are equal: no need for a stable sort, whose merge runs take 20x as long as the
    # default sort when the handles hold their blocks in random order)
    keys.sort()
    start = keys >> ORDER_BITS
    ends = start + (np.ones(1, dtype=key) << (keys & ((1 << ORDER_BITS) - 1)))
    gap = np.flatnonzero(start[1:] != ends[:-1])
    if start.size == 0 or start[0] != 0 or ends[-1] != mm.page_flags.size or gap.size:
        ordered = np.sort(live)
        if np.any(ordered[1:] == ordered[:-1]):
            _fail("one-owner", "two handles hold the same block")
        frame = 0 if not start.size or start[0] else int(ends[gap[0]]) if gap.size else int(ends[-1])
        _fail("tiling", f"frame {frame} is not covered exactly once (reserved/free/pcp/allocated)")


def check_frames(k: Kernel, own: Owners) -> None:
    """No frame owned twice: the reserved ranges, the buddy blocks on the free lists, the hot-list
    pages and the live handles' blocks tile memory exactly, and each kind's head carries its flag
    and no other, with no flag anywhere else. The tiling is checked on the blocks themselves (no
    pass over every frame): on their runs when that shows it, else by _check_tiling; the flags
    with one counting pass over the frames that carry any bit at all (every set bit is one of
    FLAGS or PG_mapped, which check_mapped holds to allocated heads, so the count is exact)."""
    mm, live, heads, hot = k.mm, own.live, own.heads, own.hot
    live_flags = own.live_flags & FLAGS
    if np.any((live_flags & PG_alloc) == 0):
        _fail("alloc-flag", "a live handle's block is not flagged allocated")
    if not _tiles_by_runs(mm, own):
        _check_tiling(mm, own)
    if np.any(mm.page_flags[hot] & FLAGS != PG_pcp):
        _fail("pcp-flag", "a hot-list page is not flagged PG_pcp alone")
    if np.any(own.head_flags & FLAGS != PG_buddy) or np.any(live_flags != PG_alloc):
        _fail("tiling", "a free or allocated block's head carries another kind's flag")
    for lo, hi in mm.layout.reserved_ranges:
        if np.any(mm.page_flags[lo:hi] & FLAGS != PG_reserved):
            _fail("tiling", "a reserved frame is not flagged reserved alone")
    flagged = int(np.count_nonzero(mm.page_flags))
    expected = sum(hi - lo for lo, hi in mm.layout.reserved_ranges) + heads.size + hot.size + live.size
    if flagged != expected:
        name = "pcp-flag" if np.count_nonzero(mm.page_flags & PG_pcp) != hot.size else "tiling"
        _fail(name, f"{flagged} frames carry a flag, the lists and handles account for {expected}")


def check_zones(k: Kernel, own: Owners) -> None:
    """Each zone's free count equals its buddy pages plus its hot list; lists match the flags."""
    mm = k.mm
    start = np.array([z.start for z in mm.zones], dtype=np.int64)
    end = np.array([z.end for z in mm.zones], dtype=np.int64)
    zone, heads, orders = own.zones, own.heads, own.orders
    bad = np.flatnonzero((heads < start[zone]) | (heads >= end[zone]) | (mm.page_order[heads] != orders))
    if bad.size:
        i = int(bad[0])
        _fail("free-area", f"{mm.zones[zone[i]].name} free_area[{orders[i]}] holds pfn {heads[i]} of another "
              "zone/order")
    buddy = np.bincount(zone, weights=np.left_shift(1, orders), minlength=len(mm.zones))
    for z in mm.zones:
        if z.free_pages != int(buddy[z.index]) + z.pcp_top:
            _fail("zone-free", f"{z.name}: free_pages {z.free_pages} != buddy {int(buddy[z.index])} + hot list "
                  f"{z.pcp_top}")
    # (a PG_buddy anywhere else is check_frames's: it counts every frame that carries a bit)
    if np.any((own.head_flags & PG_buddy) == 0):
        _fail("buddy-flag", "a free list's head is not flagged PG_buddy")


def check_pkmap(k: Kernel) -> None:
    """pkmap_count, pkmap_page and page_address_htable agree; counts are never negative."""
    pk, htable = k.pk, k.pk.page_address_htable
    if np.any(pk.pkmap_count < 0):
        _fail("pkmap-count", "a pkmap_count is negative")
    used = np.flatnonzero(pk.pkmap_count >= 1)
    if used.size != pk.mapped:
        _fail("pkmap-mapped", f"{used.size} slots in use but mapped = {pk.mapped}")
    if np.any(htable.lookup(pk.pkmap_page[used]) != used):
        _fail("pkmap-virtual", "a slot's page does not find the slot in page_address_htable")
    # each slot in use was just found on its page's chain, so a chain holding any other entry (a
    # free slot, one slot twice, a loop) holds more entries than there are slots in use
    entries = htable.entries().size
    if entries != used.size:
        _fail("pkmap-virtual", f"page_address_htable holds {entries} entries for {used.size} slots in use")


def check_mapped(k: Kernel, own: Owners) -> None:
    """unmapped policy: every kernel-mapped block is allocated and the window count is exact.
    PG_mapped anywhere but an allocated head: check_frames has counted every frame that carries
    a bit against the lists' heads, the hot pages, the reserved frames and the live heads, so
    only those others need looking at (no pass over every frame)."""
    mm = k.mm
    others = [own.head_flags, mm.page_flags[own.hot],
              *(mm.page_flags[lo:hi] for lo, hi in mm.layout.reserved_ranges)]
    if any(np.any(flags & PG_mapped) for flags in others):
        _fail("mapped-allocated", "a kernel-mapped block is not allocated")
    pages = int(np.sum(np.left_shift(1, own.live_orders[own.live_mapped].astype(np.int64))))
    if pages != k.window_used:
        _fail("window", f"window_used {k.window_used} != mapped pages {pages}")
    if k.window_used > k.window_pages:
        _fail("window", "more pages mapped than the window holds")


def check_vi(k: Kernel, own: Owners) -> None:
    """Virtually indexed machines: translations only on allocated frames, the colour pools'
    occupancy equal to the mappings that hold slots, and a settled cache. check_frames has held
    PG_alloc to the live heads exactly, so a frame property that must imply allocation is checked
    by counting it everywhere (one pass) against counting it on the live heads (a gather)."""
    if not k.vi:
        return
    vi, mm, live = k.vi, k.mm, own.live
    if np.count_nonzero(vi.user_colour >= 0) != np.count_nonzero(vi.user_colour[live] >= 0):
        _fail("user-colour", "a frame that is not an allocated block head has a user translation")
    if vi.kmap_count.size and int(vi.kmap_count.min()) < 0:
        _fail("kmap-count", "a kmap count is negative")
    kmapped = np.flatnonzero(vi.kmap_count > 0)  # a few per cent of the frames at most
    if np.any(vi.kernel_colour[kmapped] < 0) or np.any(mm.page_flags[kmapped] & PG_mapped):
        _fail("kmap-colour", "a kmapped page has no slot colour, or also an allocation mapping")
    if kmapped.size != vi.kmaps.pages:
        _fail("kmap-pool", f"{kmapped.size} kmapped pages but the pool holds {vi.kmaps.pages}")
    # (PG_mapped is on allocated heads only: check_mapped)
    if np.any(vi.kernel_colour[live[own.live_mapped]] < 0):
        _fail("alloc-colour", "a block mapped by __alloc_pages has no slot colour")
    if vi.allocs.pages != k.window_used:
        _fail("alloc-pool", f"the allocation pool holds {vi.allocs.pages} pages, the window {k.window_used}")
    for name, pool in (("kmaps", vi.kmaps), ("allocs", vi.allocs)):
        if np.any(pool.used < 0) or int(pool.used.sum()) != pool.pages:
            _fail("pool-used", f"{name}: bucket occupancy negative or not summing to {pool.pages}")
    if not vi.cache.settled():
        _fail("cache-settled", "the cache holds this batch's versions between batches")
    versions = vi.cache.line_versions()
    if np.any((versions != CURRENT) & (versions != STALE)):
        _fail("cache-versions", "a settled line holds neither the latest write nor an older one")


def check_all(k: Kernel) -> None:
    own = owners(k)
    check_zones(k, own)
    check_frames(k, own)
    check_pkmap(k)
    check_mapped(k, own)
    check_vi(k, own)
