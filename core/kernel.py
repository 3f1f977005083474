"""The simulated kernel's whole state and the accounting both engines share.

``Kernel`` bundles mem_map and the zones (``MemMap``), the kmap pool (``Pkmap``), the workload's
handle table, and ``Counters``. The reference engine mutates it one event at a time; the fast
engine mutates it a batch at a time; records are built from it by ``core.record`` alone, so the
two engines cannot disagree on what a count means.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from core.events import GFP_HIGHUSER, GFP_KERNEL, GFP_NONE, GFP_PGTABLE
from core.highmem import Pkmap
from core.machine import Machine
from core.mem_map import MemMap, PG_mapped
from core.parisc import PariscState
from core.policy import ZONE_DMA, ZONE_HIGHMEM, ZONE_NORMAL, Policy

H_FREE = -1  # handle holds nothing
H_FAILED = -2  # the handle's allocation failed; ops on it are skipped until it is allocated again


@dataclass
class Counters:
    """Counts of every mechanism's actions. Pages where a name says so, else occurrences."""

    events: int = 0
    kernel_entries: int = 0
    forks: int = 0
    execs: int = 0
    exits: int = 0
    interrupts: int = 0  # interrupts taken in user mode (K_IRQ)
    fork_ptes: int = 0  # PTEs copied by fork's copy_page_range (K_FORK's addr)
    cow_copies: int = 0  # pages copied by copy-on-write faults (K_COW)
    user_ns: int = 0  # time the tasks ran in user mode (K_RUN)
    allocs: int = 0
    alloc_failures: int = 0
    frees: int = 0
    ops_on_failed: int = 0  # events naming a handle whose allocation failed
    kmap_calls: int = 0
    kmap_atomic_calls: int = 0
    kmap_atomic_maps: int = 0  # kmap_atomic calls that had to install a PTE
    pte_updates: int = 0
    pte_kmaps: int = 0  # PTE edits that needed kmap_atomic (PTE page without a kernel address)
    io_requests: int = 0
    page_copies: int = 0
    user_accesses: int = 0  # user loads and stores the stream names (they matter on VI caches)
    kernel_map_pages: int = 0  # unmapped: pages mapped by __alloc_pages
    kernel_unmap_pages: int = 0  # unmapped: pages unmapped on free
    kernel_unmaps: int = 0  # unmapped: frees of mapped blocks (one local invlpg each)
    tlb_flush_local: int = 0
    tlb_flush_full: int = 0
    # Virtually indexed machines (parisc); zero elsewhere.
    alias_violations: int = 0  # accesses while the frame had inequivalent translations
    cache_flush_page: int = 0  # one page at one colour (fdc/pdc loop)
    cache_flush_all: int = 0  # the whole cache on every CPU (fdce loop)
    cache_flush_tmpalias: int = 0  # a freed user page flushed at its colour through tmpalias
    io_flushes: int = 0  # page flushes issued for I/O (the flushes of flushes_per_io)
    tlb_entries_used: int = 0  # TLB entries covering the kernel's allocation mappings
    # Time series over the run (after boot and after every event), in pages.
    lowmem_free_min: int = 0
    highmem_free_min: int = 0
    kernel_mapped_peak: int = 0
    kernel_mapped_sum: int = 0  # sum over events of pages mapped after the event

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Kernel:
    """Everything a run mutates, built from a machine, a policy and the stream's handle bound."""

    def __init__(self, machine: Machine, policy: Policy, max_handles: int) -> None:
        self.machine = machine
        self.policy = policy
        self.mm = MemMap(machine, policy)
        lowmem_pages = self.mm.layout.lowmem_end // machine.page_size
        reserved = sum(hi - lo for lo, hi in self.mm.layout.reserved_ranges)
        # A virtually indexed machine maps through kmap_kernel's colour buckets, not a pkmap ring.
        self.vi = PariscState(machine, policy) if machine.virtually_indexed else None
        self.pk = Pkmap(1 if self.vi else policy.kmap_ring_slots(machine, lowmem_pages - reserved))
        self.handle_pfn = np.full(max_handles, H_FREE, dtype=np.int64)
        self.c = Counters()
        self.permanent_pages = reserved  # kernel image + mem_map: mapped under every policy
        # pfns below this have a permanent kernel address (the offset map), if the policy keeps it.
        self.offset_mapped_end = lowmem_pages if policy.offset_maps_lowmem else 0
        # unmapped: the freed window minus the kmap ring holds the kernel's own allocations.
        self.window_pages = max(lowmem_pages - reserved - self.pk.slots, 0) if policy.map_on_alloc else 0
        if self.vi and policy.map_on_alloc:  # the allocation pool of the kernel window
            self.window_pages = self.vi.allocs.cap * self.vi.colours
        self.window_used = 0
        self.zonelist = self._zonelists()
        self.maps_on_alloc = self._maps_on_alloc()
        # GFP class -> first zone of its zonelist (the zone the batched allocator assumes)
        self.preferred_zone = np.array([self.zonelist.get(g, (ZONE_NORMAL,))[0] for g in range(4)], dtype=np.int64)
        self.c.lowmem_free_min = self.lowmem_free()
        self.c.highmem_free_min = self.mm.zones[ZONE_HIGHMEM].free_pages
        self.c.kernel_mapped_peak = self.kernel_mapped()
        self.lowmem_total = self.lowmem_free()

    def _zonelists(self) -> dict[int, tuple[int, ...]]:
        """Per GFP class, the zones tried in order. As build_zonelists, empty zones are left out
        (parisc has no DMA or highmem zone; a 512 MiB x86 box has no highmem)."""
        highuser = (ZONE_HIGHMEM, ZONE_NORMAL, ZONE_DMA)
        kernel = self.policy.kernel_zonelist
        pgtable = highuser if self.machine.highpte else kernel  # CONFIG_HIGHPTE, any policy
        populated = {z.index for z in self.mm.zones if z.end > z.start}
        lists = {GFP_HIGHUSER: highuser, GFP_KERNEL: kernel, GFP_PGTABLE: pgtable}
        return {gfp: tuple(z for z in zones if z in populated) for gfp, zones in lists.items()}

    def _maps_on_alloc(self) -> np.ndarray:
        """Per GFP class: does __alloc_pages map the block for the kernel? (the paper's test:
        the highmem flag is not set)."""
        table = np.zeros(4, dtype=bool)
        if self.policy.map_on_alloc:
            table[GFP_KERNEL] = True
            table[GFP_PGTABLE] = not self.machine.highpte
        table[GFP_NONE] = False
        return table

    # -- the quantities the time series follow, in pages --------------------------------------

    def lowmem_free(self) -> int:
        if self.policy.map_on_alloc:
            return self.window_pages - self.window_used
        zones = self.mm.zones
        return zones[ZONE_DMA].free_pages + zones[ZONE_NORMAL].free_pages

    def boot_mapped(self) -> int:
        """Pages mapped at boot for good: the offset map, or (unmapped) mem_map and the image."""
        return self.offset_mapped_end if self.policy.offset_maps_lowmem else self.permanent_pages

    def kernel_mapped(self) -> int:
        """Pages with a kernel virtual address now: the offset map (or the permanent regions),
        blocks mapped on allocation, and pages holding a pkmap slot."""
        return self.boot_mapped() + self.window_used + self.pk.mapped + self.vi_kmapped()

    def vi_kmapped(self) -> int:
        """Pages holding a kmap_kernel slot (unmapped on a virtually indexed machine)."""
        return self.vi.kmaps.pages if self.vi and self.policy.map_on_alloc else 0

    def observe(self) -> None:
        """Fold the state after one event into the time series (the reference's per-event step)."""
        c = self.c
        c.lowmem_free_min = min(c.lowmem_free_min, self.lowmem_free())
        c.highmem_free_min = min(c.highmem_free_min, self.mm.zones[ZONE_HIGHMEM].free_pages)
        mapped = self.kernel_mapped()
        c.kernel_mapped_peak = max(c.kernel_mapped_peak, mapped)
        c.kernel_mapped_sum += mapped

    def has_kernel_address(self, pfn: int) -> bool:
        """page_address(page) != NULL without a pkmap slot: offset-mapped or mapped on alloc."""
        return pfn < self.offset_mapped_end or bool(self.mm.page_flags[pfn] & PG_mapped)
