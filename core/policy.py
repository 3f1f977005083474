"""Policies: how the kernel maps memory for itself. Data plus a few named hooks.

- ``stock``: the 2.6 i386 kernel. 3G/1G split; ZONE_DMA and ZONE_NORMAL are offset-mapped for good
  (virtual = physical + PAGE_OFFSET); highmem pages reach the kernel through kmap/kmap_atomic.
- ``4g4g``: Ingo Molnar's 4G/4G patch (LKML, 9 Jul 2003). The kernel gets its own 4 GB page tables,
  so lowmem grows to ~3 GB, but every entry from and exit to user mode (syscalls, faults and
  interrupts taken in user mode) reloads cr3 (a full flush of non-global TLB entries), and
  copy_to/from_user, no longer able to address user memory directly, maps each user page it
  copies through kmap_atomic.
- ``unmapped``: the paper. Free pages are unmapped; ``__alloc_pages`` maps kernel allocations into
  the kernel window and ``__free_pages_ok``/``free_hot_cold_page`` unmap them; user pages are never
  mapped unless kmapped; kmap serves every page (divorced from CONFIG_HIGHMEM) from a pool carved
  out of the freed window; mem_map and the kernel image stay mapped.

On parisc (virtually indexed caches, REFERENCE s3) all memory is ZONE_NORMAL and the names mean:

- ``stock``: 2.6.11 parisc. Everything offset-mapped (so every page has a kernel alias at its
  physical colour); DMA made coherent with the kernel address, then ``flush_dcache_page`` to the
  user colour; ``flush_cache_mm`` (= flush_cache_all) on fork, exec and exit.
- ``unmapped``: the paper's parisc kernel: kernel mappings come from ``kmap_kernel``'s per-colour
  buckets inside a ``kernel_window`` of virtual space, congruent with the page's user address when
  it has one, equivalent (virtual = physical modulo the stride) for page tables and kernel stacks,
  from the global bucket counter otherwise; DMA takes its coherence index from the user address;
  user pages are flushed through tmpalias when freed instead of flushing the whole cache. Each
  technique is a switch (``congruent_kmap``, ``equivalent_kernel``, ``user_coherence_index``,
  ``flush_on_free``, ``variable_pages``) for ablation; ``flush_dcache_page`` is stock's.

Simplifications, stated once: under ``unmapped`` the freed window (lowmem's virtual space less
mem_map and the kernel image) is split statically: a share (``unmapped_kmap_share``, default half,
rounded down to a power of two of pages) is the kmap ring, the rest holds kernel allocations,
accounted by page count (x86 "merely wishes to find the first free pte", paper s5.2; where in the window a
page lands does not change any count this simulator reports). Physical ZONE_NORMAL stops being
special there, so kernel allocations may fall back to highmem frames. Page-table pages follow
the machine's ``highpte`` under every policy: without CONFIG_HIGHPTE (the default, as the paper's
kernel: s4.3 maps every allocation made without the highmem flag, and s1.3 calls HIGHPTE's penalty
unacceptable) they are GFP_KERNEL pages, which ``unmapped`` maps on allocation; with it they come
from highmem and every edit goes through kmap_atomic. Unmapping a freed kernel block costs
one local invlpg on the freeing CPU at once; the other CPUs' stale entries are shot down lazily,
one global flush (IPI) per ``unmap_flush_batch`` unmapped pages, as pkmap batches its flushes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import ConfigError
from core.machine import Machine, parse_bool, parse_int
from core.units import format_size, parse_size

ZONE_DMA, ZONE_NORMAL, ZONE_HIGHMEM = 0, 1, 2
ZONE_NAMES = ("DMA", "Normal", "HighMem")
FOUR_GIB = 1 << 32


def split_3g1g(m: Machine) -> int:
    """Kernel virtual space under the 3G/1G split: everything above PAGE_OFFSET. A 64-bit parisc
    kernel has no such cap: its offset map covers all of memory."""
    if m.arch != "x86":
        return m.memory + m.vmalloc_reserve
    return FOUR_GIB - m.page_offset


def split_4g4g(m: Machine) -> int:
    """Under 4G/4G the kernel has a whole 4 GB address space of its own."""
    return FOUR_GIB


@dataclass(frozen=True)
class Policy:
    """A kernel mapping scheme. Fields are data; the callables are the policy's hooks."""

    name: str
    summary: str
    arches: tuple[str, ...]
    kernel_va: Callable[[Machine], int]  # bytes of virtual space the kernel owns
    cr3_reloads_per_entry: int  # full TLB flushes per kernel entry+exit
    uaccess_kmap: bool  # copy_to/from_user reaches user pages through kmap_atomic (4G/4G)
    offset_maps_lowmem: bool  # ZONE_DMA/ZONE_NORMAL permanently mapped (stock, 4g4g)
    map_on_alloc: bool  # kernel allocations mapped by __alloc_pages, unmapped on free
    kernel_zonelist: tuple[int, ...]  # GFP_KERNEL fallback order
    unmapped_kmap_share: float = 0.5  # unmapped only: share of the freed window used as kmap ring
    unmap_flush_batch: int = 512  # unmapped only: pages unmapped per lazy global TLB flush
    # Virtually indexed machines (parisc). Stock has only flush_dcache_page; the rest are the paper's.
    flush_dcache_page: bool = True  # flush the user colour around DMA and copies (make user coherent)
    congruent_kmap: bool = False  # kmap_kernel: slot congruent with the page's user address
    equivalent_kernel: bool = False  # page tables and kernel stacks mapped virtual == physical mod stride
    user_coherence_index: bool = False  # DMA coherence index from the user address (bio_vec / sg)
    flush_on_free: bool = False  # tmpalias flush of freed user pages instead of flush_cache_all on mm teardown
    variable_pages: bool = False  # cover order-n kernel mappings with the fewest PA 2.0 page sizes
    # a page no process maps is kmapped at its equivalent colour and its kernel lines stay there
    # until DMA or its free needs them (PG_dcache_dirty), instead of being flushed at every kunmap
    defer_dcache_flush: bool = False
    kernel_window: int = 2 << 30  # unmapped on parisc: virtual space for kernel mappings, bytes

    def kmap_ring_slots(self, m: Machine, freed_window_pages: int) -> int:
        """LAST_PKMAP for this policy: the stock pool, or the ring carved from the freed window."""
        if not self.map_on_alloc:
            return m.last_pkmap
        slots = max(int(freed_window_pages * self.unmapped_kmap_share), 1)
        return 1 << (slots.bit_length() - 1)  # the scan wraps with a mask: a power of two


PARAM_HELP = {
    "unmapped_kmap_share": "unmapped: share of the freed kernel window given to the kmap ring (0-1)",
    "unmap_flush_batch": "unmapped on x86: kernel pages unmapped per lazy global TLB flush",
    "flush_dcache_page": "parisc: flush_dcache_page around DMA and copies through a colour not the user's "
                         "(false is a broken kernel; unmapped needs it only where congruence fails)",
    "congruent_kmap": "unmapped on parisc: kmap_kernel picks a slot congruent with the user address",
    "equivalent_kernel": "unmapped on parisc: page tables and kernel stacks equivalently mapped",
    "user_coherence_index": "unmapped on parisc: DMA coherence index from the user address",
    "flush_on_free": "unmapped on parisc: tmpalias flush on free instead of flush_cache_all on fork/exec/exit",
    "variable_pages": "unmapped on parisc: order-n kernel mappings use the fewest PA 2.0 TLB page sizes",
    "defer_dcache_flush": "parisc: a page no process maps is kmapped at its equivalent colour and its kernel "
                          "lines flushed only when DMA or its free needs them (2.6's PG_dcache_dirty); stock's "
                          "offset map always does this (true only), unmapped flushes at every kunmap by default",
    "kernel_window": "unmapped on parisc: kernel virtual space for kmap_kernel slots, a multiple of "
                     "congruence_stride (shrink it to exhaust the colour buckets)",
}
# Where each parameter means something: (policies, arches).
_VI = ("parisc",)
_APPLIES = {"unmapped_kmap_share": (("unmapped",), ("x86", "parisc")), "unmap_flush_batch": (("unmapped",), ("x86",)),
            "flush_dcache_page": (("stock", "unmapped"), _VI), "congruent_kmap": (("unmapped",), _VI),
            "equivalent_kernel": (("unmapped",), _VI), "user_coherence_index": (("unmapped",), _VI),
            "flush_on_free": (("unmapped",), _VI), "variable_pages": (("unmapped",), _VI),
            "kernel_window": (("unmapped",), _VI), "defer_dcache_flush": (("stock", "unmapped"), _VI)}

STOCK = Policy(
    name="stock",
    summary="x86: 3G/1G, ZONE_NORMAL offset-mapped, highmem through kmap; parisc: offset-mapped, "
            "DMA coherent with the kernel, flush_cache_all on fork/exec/exit",
    arches=("x86", "parisc"),
    kernel_va=split_3g1g,
    cr3_reloads_per_entry=0,
    uaccess_kmap=False,
    offset_maps_lowmem=True,
    map_on_alloc=False,
    kernel_zonelist=(ZONE_NORMAL, ZONE_DMA),
    defer_dcache_flush=True,  # what the offset map does by itself
)
FOUR_G_FOUR_G = dataclasses.replace(
    STOCK,
    name="4g4g",
    arches=("x86",),
    summary="separate 4 GB kernel page tables: ~3 GB lowmem, cr3 reload on every kernel entry and exit",
    kernel_va=split_4g4g,
    cr3_reloads_per_entry=2,
    uaccess_kmap=True,
)
UNMAPPED = dataclasses.replace(
    STOCK,
    name="unmapped",
    summary="the paper: free pages unmapped, kernel allocations mapped on alloc, kmap for every page; "
            "parisc: congruent/equivalent kernel mappings, user coherence index, flush on free",
    offset_maps_lowmem=False,
    congruent_kmap=True,
    equivalent_kernel=True,
    user_coherence_index=True,
    flush_on_free=True,
    variable_pages=True,
    defer_dcache_flush=False,  # the paper's kmap_kernel: any colour from the bucket counter, flushed at kunmap
    map_on_alloc=True,
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


def owner(key: str) -> str:
    """The policy whose default a parameter shows: stock's one switch, else the paper's."""
    return "stock" if key == "flush_dcache_page" else "unmapped"


def get_policy(name: str, machine: Machine, overrides: dict[str, object] | None = None) -> Policy:
    """The named policy for ``machine`` with its ``--set`` parameters applied and validated."""
    if name not in POLICIES:
        raise ConfigError("policy", "one of " + ", ".join(sorted(POLICIES)), name)
    policy = POLICIES[name]
    if machine.arch not in policy.arches:
        raise ConfigError("policy", f"{name} needs an {' or '.join(policy.arches)} machine, "
                          f"not {machine.name} ({machine.arch})", name)
    changes = {key: _parse_param(key, value, policy, machine) for key, value in (overrides or {}).items()}
    policy = dataclasses.replace(policy, **changes)
    if policy.offset_maps_lowmem and not policy.defer_dcache_flush:
        raise ConfigError("defer_dcache_flush", f"true on {name}: its offset map keeps a page's kernel lines at "
                          "the equivalent colour, flushed when needed", False)
    if policy.unmap_flush_batch < 1:
        raise ConfigError("unmap_flush_batch", "an integer >= 1", policy.unmap_flush_batch)
    if machine.virtually_indexed and policy.map_on_alloc:
        window = policy.kernel_window
        if window < 2 * machine.congruence_stride or window % machine.congruence_stride:
            stride = format_size(machine.congruence_stride)
            raise ConfigError("kernel_window", f"a multiple of congruence_stride ({stride}) and at least two of "
                              "them: a row of slots for kmaps and one for allocation mappings", window)
    return policy


def _parse_param(key: str, value: object, policy: Policy, machine: Machine) -> object:
    if key not in PARAM_HELP:
        raise ConfigError(key, "a policy parameter: " + ", ".join(sorted(PARAM_HELP)))
    names, arches = _APPLIES[key]
    if policy.name not in names or machine.arch not in arches:
        raise ConfigError(key, f"a setting of policy {'/'.join(names)} on {'/'.join(arches)} "
                          f"(not {policy.name} on {machine.name})", value)
    if key == "unmapped_kmap_share":
        return parse_share(key, value)
    if key == "unmap_flush_batch":
        return parse_int(key, value)
    if key == "kernel_window":
        return parse_size(key, value)
    return parse_bool(key, value)
