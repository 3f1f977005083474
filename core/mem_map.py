"""Physical memory at boot: mem_map, zones and what bootmem reserves (mm/page_alloc.c, 2.6.11).

Per-frame state is two flat arrays, one entry per 4 KiB frame (16,777,216 at 64 GB):

  page_flags  uint8, bit set of PG_* below
  page_order  int8,  order of the block whose head this frame is (free or allocated), else -1

and each zone keeps its per-CPU-style hot list (see page_alloc) in an int32 array that grows as
the list does (``Zone.pcp``: it has no high mark, so a run's longest list decides its size).

page->virtual of a highmem page is not kept per frame: mm/highmem.c's page_address_htable holds
only the pages that have a pkmap slot (highmem.PageAddressHtable). Two bytes per frame, and the
hot lists.

Boot layout (i386): the kernel image and BIOS area sit at physical 0; bootmem places mem_map just
above MAX_DMA_ADDRESS (16 MB); everything else is handed to the buddy allocator as the largest
aligned blocks, lowest address first, so the free lists pop the highest block first, as they do
after free_all_bootmem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import ConfigError
from core.events import MAX_ORDER
from core.machine import Machine
from core.policy import ZONE_DMA, ZONE_HIGHMEM, ZONE_NAMES, ZONE_NORMAL, Policy
from core.units import format_size

PG_reserved = 1 << 0  # bootmem: kernel image, mem_map; never free
PG_buddy = 1 << 1  # head of a free block on a buddy free list (page_order holds its order)
PG_pcp = 1 << 2  # free order-0 page on a zone's hot list
PG_alloc = 1 << 3  # head of an allocated block (page_order holds its order)
PG_mapped = 1 << 4  # unmapped policy: block mapped into the kernel window by __alloc_pages


@dataclass
class Zone:
    """struct zone: a pfn range, its free count, its buddy free lists and its hot list."""

    index: int
    start: int  # first pfn
    end: int  # one past the last pfn
    free_pages: int = 0  # buddy plus hot list
    # free_area[order]: head pfns in LIFO order (dict keeps insertion order; popitem takes the head).
    free_area: list[dict[int, None]] = field(default_factory=lambda: [{} for _ in range(MAX_ORDER)])
    pcp_top: int = 0  # pages on the hot list; they live in pcp[:pcp_top], the top last
    pcp: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def pcp_room(self, pages: int) -> np.ndarray:
        """The hot list's storage, with room for ``pages`` pages: doubled when it is short, so a
        list that grows page by page is copied a logarithmic number of times."""
        if pages > self.pcp.size:
            grown = np.empty(max(pages, 2 * self.pcp.size, 1024), dtype=np.int32)
            grown[:self.pcp_top] = self.pcp[:self.pcp_top]
            self.pcp = grown
        return self.pcp

    @property
    def name(self) -> str:
        return ZONE_NAMES[self.index]


@dataclass
class Layout:
    """Where the zones end and what boot reserved, in bytes and pfns."""

    lowmem_end: int  # bytes: end of ZONE_NORMAL (MAXMEM capped by memory)
    reserved_ranges: list[tuple[int, int]]  # pfn ranges bootmem keeps


def compute_layout(m: Machine, p: Policy) -> Layout:
    """MAXMEM = kernel virtual space - __VMALLOC_RESERVE (arch/i386/mm/init.c)."""
    maxmem = p.kernel_va(m) - m.vmalloc_reserve
    lowmem_end = min(m.memory, maxmem) // m.page_size * m.page_size
    block = m.page_size << (MAX_ORDER - 1)  # zones start on a max-order boundary (see page_alloc)
    if m.dma_zone < m.memory and m.dma_zone % block:
        raise ConfigError("dma_zone", f"a multiple of {format_size(block)} (a max-order block)", m.dma_zone)
    if lowmem_end < m.memory and lowmem_end % block:
        raise ConfigError("vmalloc_reserve", f"a value that ends lowmem on a multiple of {format_size(block)} "
                          f"(lowmem would end at {format_size(lowmem_end)})", m.vmalloc_reserve)
    image = (0, m.kernel_image // m.page_size)
    mm_start = max(min(m.dma_zone, lowmem_end) // m.page_size, image[1])  # parisc: no DMA zone
    mm_pages = -(-m.mem_map_bytes // m.page_size)
    if (mm_start + mm_pages) * m.page_size > lowmem_end or image[1] > mm_start:
        raise ConfigError("memory", f"mem_map ({format_size(m.mem_map_bytes)}) and the kernel image must fit "
                          f"in lowmem ({format_size(lowmem_end)}): this machine cannot boot", m.memory)
    return Layout(lowmem_end=lowmem_end, reserved_ranges=[image, (mm_start, mm_start + mm_pages)])


class MemMap:
    """mem_map plus the zones. Built once per run; two bytes per frame."""

    def __init__(self, m: Machine, p: Policy) -> None:
        self.machine = m
        self.layout = compute_layout(m, p)
        n = m.frames
        self.page_flags = np.zeros(n, dtype=np.uint8)
        self.page_order = np.full(n, -1, dtype=np.int8)
        dma_end = min(m.dma_zone, m.memory) // m.page_size
        low_end = self.layout.lowmem_end // m.page_size
        self.zones = [Zone(ZONE_DMA, 0, dma_end), Zone(ZONE_NORMAL, dma_end, low_end), Zone(ZONE_HIGHMEM, low_end, n)]
        # zone_of(pfn) is a searchsorted over these boundaries.
        self.zone_bounds = np.array([dma_end, low_end], dtype=np.int64)
        for lo, hi in self.layout.reserved_ranges:
            self.page_flags[lo:hi] |= PG_reserved
        for zone in self.zones:
            self._free_all_bootmem(zone)

    def zone_of(self, pfn: int) -> Zone:
        return self.zones[int(np.searchsorted(self.zone_bounds, pfn, side="right"))]

    def zone_index(self, pfns: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.zone_bounds, pfns, side="right").astype(np.int8)

    def _free_all_bootmem(self, zone: Zone) -> None:
        """Hand every unreserved frame of ``zone`` to its free lists as the largest aligned blocks."""
        lo = zone.start
        for r_lo, r_hi in sorted(self.layout.reserved_ranges) + [(zone.end, zone.end)]:
            r_lo, r_hi = max(r_lo, zone.start), min(r_hi, zone.end)
            if r_lo > lo:
                self._free_range(zone, lo, min(r_lo, zone.end))
                zone.free_pages += min(r_lo, zone.end) - lo
            lo = max(lo, r_hi)

    def _free_range(self, zone: Zone, lo: int, hi: int) -> None:
        top = MAX_ORDER - 1
        big = 1 << top
        a = -(-lo // big) * big  # first max-order-aligned pfn in the range
        b = hi // big * big
        if a >= b:  # no whole max-order block: go block by block
            self._free_small(zone, lo, hi)
            return
        self._free_small(zone, lo, a)
        heads = np.arange(a, b, big, dtype=np.int64)
        self.page_flags[heads] |= PG_buddy
        self.page_order[heads] = top
        zone.free_area[top].update(dict.fromkeys(heads.tolist()))
        self._free_small(zone, b, hi)

    def _free_small(self, zone: Zone, lo: int, hi: int) -> None:
        while lo < hi:
            order = min((lo & -lo).bit_length() - 1 if lo else MAX_ORDER - 1, MAX_ORDER - 1)
            while lo + (1 << order) > hi:
                order -= 1
            self.page_flags[lo] |= PG_buddy
            self.page_order[lo] = order
            zone.free_area[order][lo] = None
            lo += 1 << order
