"""Policies: how the kernel maps memory for itself. Data plus a few named hooks.

- ``stock``: the 2.6 i386 kernel. 3G/1G split; ZONE_DMA and ZONE_NORMAL are offset-mapped for good
  (virtual = physical + PAGE_OFFSET); highmem pages reach the kernel through kmap/kmap_atomic.
- ``4g4g``: Ingo Molnar's 4G/4G patch (LKML, 9 Jul 2003). The kernel gets its own 4 GB page tables,
  so lowmem grows to ~3 GB, but every entry from and exit to user mode reloads cr3 (a full flush of
  non-global TLB entries).
- ``unmapped``: the paper. Free pages are unmapped; ``__alloc_pages`` maps kernel allocations into
  the kernel window and ``__free_pages_ok``/``free_hot_cold_page`` unmap them; user pages are never
  mapped unless kmapped; kmap serves every page (divorced from CONFIG_HIGHMEM) from a pool carved
  out of the freed window; mem_map and the kernel image stay mapped.

Simplifications, stated once: under ``unmapped`` the freed window (lowmem's virtual space less
mem_map and the kernel image) is split statically: a share (``unmapped_kmap_share``, default half,
rounded down to a power of two of pages) is the kmap ring, the rest holds kernel allocations,
accounted by page count (x86 "merely wishes to find the first free pte", paper s5.2; where in the window a
page lands does not change any count this simulator reports). Physical ZONE_NORMAL stops being
special there, so kernel allocations may fall back to highmem frames. Page-table pages under
``unmapped`` are not mapped on allocation: x86's page walker uses physical addresses and the kernel
edits them through kmap_atomic, as CONFIG_HIGHPTE does. Unmapping a freed kernel block costs
one local invlpg on the freeing CPU at once; the other CPUs' stale entries are shot down lazily,
one global flush (IPI) per ``unmap_flush_batch`` unmapped pages, as pkmap batches its flushes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import ConfigError
from core.machine import Machine, parse_int

ZONE_DMA, ZONE_NORMAL, ZONE_HIGHMEM = 0, 1, 2
ZONE_NAMES = ("DMA", "Normal", "HighMem")
FOUR_GIB = 1 << 32


def split_3g1g(m: Machine) -> int:
    """Kernel virtual space under the 3G/1G split: everything above PAGE_OFFSET."""
    return FOUR_GIB - m.page_offset


def split_4g4g(m: Machine) -> int:
    """Under 4G/4G the kernel has a whole 4 GB address space of its own."""
    return FOUR_GIB


def pgtable_highmem_if_configured(m: Machine) -> bool:
    return m.highpte


def pgtable_always_unmapped(m: Machine) -> bool:
    return True


@dataclass(frozen=True)
class Policy:
    """A kernel mapping scheme. Fields are data; the callables are the policy's hooks."""

    name: str
    summary: str
    arches: tuple[str, ...]
    kernel_va: Callable[[Machine], int]  # bytes of virtual space the kernel owns
    cr3_reloads_per_entry: int  # full TLB flushes per kernel entry+exit
    offset_maps_lowmem: bool  # ZONE_DMA/ZONE_NORMAL permanently mapped (stock, 4g4g)
    map_on_alloc: bool  # kernel allocations mapped by __alloc_pages, unmapped on free
    pgtable_highmem: Callable[[Machine], bool]  # PTE pages allocated with __GFP_HIGHMEM
    kernel_zonelist: tuple[int, ...]  # GFP_KERNEL fallback order
    unmapped_kmap_share: float = 0.5  # unmapped only: share of the freed window used as kmap ring
    unmap_flush_batch: int = 512  # unmapped only: pages unmapped per lazy global TLB flush

    def kmap_ring_slots(self, m: Machine, freed_window_pages: int) -> int:
        """LAST_PKMAP for this policy: the stock pool, or the ring carved from the freed window."""
        if not self.map_on_alloc:
            return m.last_pkmap
        slots = max(int(freed_window_pages * self.unmapped_kmap_share), 1)
        return 1 << (slots.bit_length() - 1)  # the scan wraps with a mask: a power of two


PARAM_HELP = {
    "unmapped_kmap_share": "unmapped: share of the freed kernel window given to the kmap ring (0-1)",
    "unmap_flush_batch": "unmapped: kernel pages unmapped per lazy global TLB flush",
}

STOCK = Policy(
    name="stock",
    summary="3G/1G, ZONE_NORMAL offset-mapped, highmem through kmap/kmap_atomic",
    arches=("x86",),
    kernel_va=split_3g1g,
    cr3_reloads_per_entry=0,
    offset_maps_lowmem=True,
    map_on_alloc=False,
    pgtable_highmem=pgtable_highmem_if_configured,
    kernel_zonelist=(ZONE_NORMAL, ZONE_DMA),
)
FOUR_G_FOUR_G = dataclasses.replace(
    STOCK,
    name="4g4g",
    summary="separate 4 GB kernel page tables: ~3 GB lowmem, cr3 reload on every kernel entry and exit",
    kernel_va=split_4g4g,
    cr3_reloads_per_entry=2,
)
UNMAPPED = dataclasses.replace(
    STOCK,
    name="unmapped",
    summary="the paper: free pages unmapped, kernel allocations mapped on alloc, kmap for every page",
    offset_maps_lowmem=False,
    map_on_alloc=True,
    pgtable_highmem=pgtable_always_unmapped,
    kernel_zonelist=(ZONE_NORMAL, ZONE_HIGHMEM, ZONE_DMA),
)

POLICIES: dict[str, Policy] = {p.name: p for p in (STOCK, FOUR_G_FOUR_G, UNMAPPED)}


def parse_share(key: str, value: object) -> float:
    try:
        share = float(str(value))
    except ValueError:
        raise ConfigError(key, "a number between 0 and 1", value) from None
    if not 0.0 < share < 1.0:
        raise ConfigError(key, "a number between 0 and 1, both excluded", value)
    return share


def owns(key: str) -> bool:
    return key in PARAM_HELP


def get_policy(name: str, machine: Machine, overrides: dict[str, object] | None = None) -> Policy:
    """The named policy for ``machine`` with its ``--set`` parameters applied and validated."""
    if name not in POLICIES:
        raise ConfigError("policy", "one of " + ", ".join(sorted(POLICIES)), name)
    policy = POLICIES[name]
    if machine.arch not in policy.arches:
        raise ConfigError("policy", f"{name} needs an {' or '.join(policy.arches)} machine, "
                          f"not {machine.name} ({machine.arch})", name)
    changes: dict[str, object] = {}
    for key, value in (overrides or {}).items():
        if key == "unmapped_kmap_share":
            changes[key] = parse_share(key, value)
        elif key == "unmap_flush_batch":
            changes[key] = parse_int(key, value)
        else:
            raise ConfigError(key, "a policy parameter: " + ", ".join(sorted(PARAM_HELP)))
    policy = dataclasses.replace(policy, **changes)
    if policy.unmap_flush_batch < 1:
        raise ConfigError("unmap_flush_batch", "an integer >= 1", policy.unmap_flush_batch)
    return policy
