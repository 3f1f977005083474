"""Machines as data: the box a simulation runs on.

A ``Machine`` is a frozen record of the facts in REFERENCE.md (section 2 for x86, section 3 for the
PA-RISC 2.0 boxes) plus a cost table
whose every entry names its source. Presets are plain instances; ``with_overrides`` returns a copy
with ``--set`` values applied and validated, so every field can be swept.

Simplifications: one flat ``mem_map`` (no NUMA nodes); the kernel image, the BIOS area and early
boot reservations are one block at physical 0; CPU speed is a single clock rate used to turn the
microsecond figures of REFERENCE.md into cycles. On parisc all of memory is ZONE_NORMAL (there is
no highmem and no DMA zone) and the data cache is virtually indexed: ``congruence_stride`` is the
modulus at which two virtual addresses share cache lines, so a page has ``stride / page_size``
possible cache colours. x86's caches are physically indexed, which the model expresses as a stride
of one page (a single colour: every alias is equivalent).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from core.errors import ConfigError
from core.units import GiB, MiB, format_size, parse_size


@dataclass(frozen=True)
class Cost:
    """One entry of the cost table: cycles per action, and where the number comes from."""

    cycles: int
    source: str


def _x86_costs(mhz: int) -> dict[str, Cost]:
    us = mhz  # cycles per microsecond
    return {
        "kernel_entry": Cost(1 * us, "REFERENCE s2: ~1 us null syscall (Molnar 2003)"),
        "cr3_reload": Cost(3 * us // 2, "REFERENCE s2: 4G/4G adds ~3 us per syscall = 2 cr3 reloads [derived]"),
        "tlb_flush_global": Cost(4 * us, "[est] flush_tlb_all: IPI to every CPU and wait, ~4 us"),
        "tlb_flush_local": Cost(200, "[est] one invlpg plus the refill it causes"),
        "pte_set": Cost(50, "[est] write one kernel PTE"),
        "pte_copy": Cost(us * 15 // 100, "[est] copy_one_pte: the child's PTE, get_page and page_dup_rmap on the "
                         "struct page (a cache miss), ~0.15 us"),
        "pkmap_flush_scan": Cost(5, "[est] per slot of flush_all_zero_pkmaps' scan"),
        "page_alloc": Cost(400, "[est] buffered_rmqueue fast path"),
        "page_free": Cost(300, "[est] free_hot_cold_page fast path"),
        "page_copy": Cost(1 * us, "[est] copy 4 KiB at ~4 GB/s"),
        "fork": Cost(100 * us, "[est] dup_mm and friends besides page tables, ~100 us"),
        "exec": Cost(300 * us, "[est] do_execve besides page tables, ~300 us"),
        "exit": Cost(50 * us, "[est] do_exit besides page freeing, ~50 us"),
        "io_request": Cost(5 * us, "[est] block layer and driver work per page of I/O"),
        "kmap_wait": Cost(5 * us, "[est] sleep on pkmap_map_wait and wake: two context switches"),
        "irq_handler": Cost(1 * us, "[est] timer tick: do_timer, update_process_times, scheduler_tick, ~1 us"),
    }


# sizeof(struct page) by kernel version, per arch (REFERENCE s2; x86 with PAE, parisc 64-bit). 2.5.74,
# the kernel Molnar's 4G/4G announcement ran, carried rmap's pte_chain union (a 64-bit pte_addr_t
# under PAE) and the lru list in every page: 44 B [derived]. 2.6.0 dropped to 40 B, 2.6.11 to 32 B.
STRUCT_PAGE: dict[str, dict[str, int]] = {
    "x86": {"2.5.74": 44, "2.6.0": 40, "2.6.11": 32},
    "parisc": {"2.6.11": 56},
}


@dataclass(frozen=True)
class Machine:
    """The simulated box. Sizes are bytes; every field can be overridden with ``--set``."""

    name: str
    arch: str
    memory: int
    page_size: int
    page_offset: int  # start of the kernel's offset map (3G/1G split: 0xC0000000)
    vmalloc_reserve: int  # __VMALLOC_RESERVE: kernel VA kept for vmalloc/fixmap/pkmap
    dma_zone: int  # ZONE_DMA ends here
    struct_page: int  # sizeof(struct page)
    last_pkmap: int  # LAST_PKMAP: persistent kmap slots (512 with PAE)
    kmap_atomic_slots: int  # KM_TYPE_NR: fixmap slots per CPU
    cpus: int
    tlb_entries: int
    cpu_mhz: int
    kernel_image: int  # text + data + bss + the BIOS area, reserved at boot from physical 0
    highpte: bool  # CONFIG_HIGHPTE: user PTE pages may live in highmem
    kernel_stack_order: int  # 1 = 8 KiB stacks (the 2.6.11 default), 0 = CONFIG_4KSTACKS
    congruence_stride: int = 4096  # VI caches: addresses equal modulo this share lines (x86: one page)
    cache_line: int = 64  # L1 D line size in bytes
    l1d_size: int = 32 * 1024  # L1 D per core, bytes (recorded; the cache model is per page x colour)
    alias_detection: bool = False  # the CPU traps (HPMC) on inequivalent aliases: PA8800 onward
    kernel_version: str = "2.6.11"  # sets struct_page from STRUCT_PAGE unless struct_page is given too
    costs: dict[str, Cost] = field(default_factory=dict, compare=False)

    @property
    def frames(self) -> int:
        return self.memory // self.page_size

    @property
    def colours(self) -> int:
        """Cache colours of a page: virtual pages that share lines are equal modulo this."""
        return self.congruence_stride // self.page_size

    @property
    def virtually_indexed(self) -> bool:
        return self.colours > 1

    @property
    def mem_map_bytes(self) -> int:
        """One struct page per frame, all of it in lowmem (flat mem_map, as i386 2.6.11)."""
        return self.frames * self.struct_page

    def cycles(self, name: str) -> int:
        return self.costs[name].cycles


X86_PAE_64G = Machine(
    name="x86-pae-64g",
    arch="x86",
    memory=64 * GiB,
    page_size=4096,
    page_offset=0xC0000000,
    vmalloc_reserve=128 * MiB,
    dma_zone=16 * MiB,
    struct_page=32,
    last_pkmap=512,
    kmap_atomic_slots=13,
    cpus=8,
    tlb_entries=64,
    cpu_mhz=2800,
    kernel_image=8 * MiB,
    highpte=False,
    kernel_stack_order=1,
    costs=_x86_costs(2800),
)


# rp3440 (4 x PA8800 at 800 MHz, Anglin 2024): the whole-cache flush walks the L1 I and D caches,
# 768 KiB each in 128-byte lines, in 2,696,560 cycles; a 16 MiB range flush takes 5,080,984 cycles.
# Per line walked [derived]: what the other parisc boxes' flushes are scaled by, line for line.
RP3440_FLUSH_ALL, RP3440_LINES = 2_696_560, 2 * 768 * 1024 // 128
RP3440_FDC_PER_LINE = 5_080_984 / (16 * MiB // 128)  # ~38.8 cycles


def _parisc_costs(mhz: int, icache: int, dcache: int, line: int) -> dict[str, Cost]:
    """The cost table of a parisc box with these L1 caches: the flushes scale by the lines their
    loops walk (fdce / fice over both caches, fdc over one page), at the rp3440's cycles per line."""
    us = mhz
    measured = (icache + dcache) // line == RP3440_LINES and line == 128
    page_lines = 4096 // line
    flush_page = round(RP3440_FDC_PER_LINE * page_lines)
    flush_all = RP3440_FLUSH_ALL * (icache + dcache) // line // RP3440_LINES
    if measured:
        page_src = "REFERENCE s3: fdc over 4 KiB, 5,080,984 cycles per 16 MiB [derived]"
        all_src = "REFERENCE s3: fdce over the whole cache on rp3440 (Anglin 2024)"
    else:
        page_src = f"[est] fdc over 4 KiB: {page_lines} lines of {line} B at the rp3440's ~38.8 cycles per line"
        all_src = (f"[est] fdce/fice over {(icache + dcache) // line:,} lines ({icache >> 10} KiB I + "
                   f"{dcache >> 10} KiB D in {line} B lines) at the rp3440's 2,696,560 cycles per 12,288 lines")
    return {
        "kernel_entry": Cost(1 * us, "[est] gateway page entry and exit, ~1 us"),
        "cr3_reload": Cost(0, "not on parisc: user and kernel live in separate spaces (sr3/sr7)"),
        "tlb_flush_global": Cost(30_877, "REFERENCE s3: whole TLB flush on rp3440 (Anglin 2024)"),
        "tlb_flush_local": Cost(440, "REFERENCE s3: TLB purge of one page ~440 cycles [derived]"),
        "pte_set": Cost(50, "[est] write one kernel PTE"),
        "pte_copy": Cost(us * 15 // 100, "[est] copy_one_pte: the child's PTE, get_page and page_dup_rmap on the "
                         "struct page (a cache miss), ~0.15 us"),
        "pkmap_flush_scan": Cost(0, "not on parisc: no pkmap pool"),
        "page_alloc": Cost(400, "[est] buffered_rmqueue fast path"),
        "page_free": Cost(300, "[est] free_hot_cold_page fast path"),
        "page_copy": Cost(5 * us // 2, "[est] copy 4 KiB at ~1.6 GB/s"),
        "fork": Cost(100 * us, "[est] dup_mm and friends besides page tables and cache flushes, ~100 us"),
        "exec": Cost(300 * us, "[est] do_execve besides page tables and cache flushes, ~300 us"),
        "exit": Cost(50 * us, "[est] do_exit besides page freeing and cache flushes, ~50 us"),
        "io_request": Cost(5 * us, "[est] block layer and driver work per page of I/O"),
        "kmap_wait": Cost(0, "not on parisc: kmap_kernel never sleeps"),
        "irq_handler": Cost(1 * us, "[est] timer tick: do_timer, update_process_times, scheduler_tick, ~1 us"),
        "cache_flush_page": Cost(flush_page, page_src),
        "cache_flush_all": Cost(flush_all, all_src),
        "cache_flush_tmpalias": Cost(flush_page + 440, f"page flush {flush_page:,} + tmpalias TLB purge 440 "
                                     "(REFERENCE s3) [derived]"),
    }


def _vi_costs_absent(costs: dict[str, Cost]) -> dict[str, Cost]:
    """x86 never issues the VI cache flushes; their entries exist so records have one shape."""
    none = "not on x86: caches are physically indexed"
    return {**costs, **{name: Cost(0, none) for name in ("cache_flush_page", "cache_flush_all",
                                                          "cache_flush_tmpalias")}}


X86_PAE_64G = dataclasses.replace(X86_PAE_64G, costs=_vi_costs_absent(X86_PAE_64G.costs))

# rp3440-class box: 4 x PA8800 at 800 MHz (REFERENCE s3). All memory is ZONE_NORMAL; the kernel's
# offset map needs no virtual-space cap on a 64-bit kernel, so ``page_offset``/``vmalloc_reserve``
# only place the map. struct page is 56 bytes on 64-bit 2.6.11 [derived: flags, _count, _mapcount,
# private, mapping, index, lru].
PA8800 = Machine(
    name="pa8800",
    arch="parisc",
    memory=8 * GiB,
    page_size=4096,
    page_offset=0x10000000,
    vmalloc_reserve=0,
    dma_zone=0,
    struct_page=56,
    last_pkmap=1,
    kmap_atomic_slots=1,
    cpus=4,
    tlb_entries=240,
    cpu_mhz=800,
    kernel_image=8 * MiB,
    highpte=False,
    kernel_stack_order=2,  # 16 KiB THREAD_SIZE on 64-bit parisc
    congruence_stride=4 * MiB,
    cache_line=128,
    l1d_size=768 * 1024,
    alias_detection=True,
    costs=_parisc_costs(800, 768 * 1024, 768 * 1024, 128),
)
# The generation before (PA8700): without alias detection, where Linux "got away with" inequivalent
# aliases because the CPU only objected when several became dirty (paper s2.2). Its own caches
# ([est]: 768 KiB I + 1.5 MiB D on chip, 64-byte lines, no L2) and clock ([est] 750 MHz) give it
# its own flush costs: three times the rp3440's lines to walk in a whole-cache flush.
PA8700 = dataclasses.replace(PA8800, name="pa8700", alias_detection=False, l1d_size=1536 * 1024, cache_line=64,
                             cpu_mhz=750, costs=_parisc_costs(750, 768 * 1024, 1536 * 1024, 64))

MACHINES: dict[str, Machine] = {m.name: m for m in (X86_PAE_64G, PA8800, PA8700)}

# What each field means, for `zonesim list` and error messages.
FIELD_HELP: dict[str, str] = {
    "memory": "physical memory, e.g. 16GiB",
    "page_size": "bytes per page, a power of two >= 4096",
    "page_offset": "start of the kernel offset map, e.g. 0xC0000000",
    "vmalloc_reserve": "kernel virtual space kept for vmalloc, fixmap and pkmap",
    "dma_zone": "end of ZONE_DMA",
    "struct_page": "sizeof(struct page) in bytes (default: kernel_version's)",
    "kernel_version": "the kernel whose struct page sizes mem_map: 2.5.74 (44 B), 2.6.0 (40 B) or 2.6.11 "
                      "(32 B) on x86; 2.6.11 (56 B) on parisc",
    "last_pkmap": "persistent kmap slots (LAST_PKMAP), a power of two; x86 only (parisc maps through "
                  "kmap_kernel's colour buckets)",
    "kmap_atomic_slots": "kmap_atomic fixmap slots per CPU (KM_TYPE_NR); recorded only: a kmap_atomic "
                         "event maps and unmaps, so slots never run out",
    "cpus": "CPU count",
    "tlb_entries": "data TLB entries per CPU; recorded only, for TLB-reach accounting to come",
    "cpu_mhz": "clock rate, turns microsecond costs into cycles",
    "kernel_image": "kernel text, data and boot reservations",
    "highpte": "CONFIG_HIGHPTE, x86 only: user PTE pages come from highmem and are edited through "
               "kmap_atomic, under every policy (default false, as the paper's kernel)",
    "kernel_stack_order": "kernel stack allocation order, 0..2 (4, 8 or 16 KiB); workloads follow it",
    "congruence_stride": "VI cache congruence modulus, a power-of-two multiple of page_size (x86: page_size)",
    "cache_line": "L1 D cache line in bytes, a power of two no larger than page_size",
    "l1d_size": "L1 D cache per core (recorded; the cache model works per page and colour)",
    "alias_detection": "the CPU traps on inequivalent aliases (true on PA8800): true or false",
}

_SIZE_FIELDS = {"memory", "page_size", "page_offset", "vmalloc_reserve", "dma_zone", "kernel_image",
                "congruence_stride", "cache_line", "l1d_size"}
_INT_FIELDS = {"struct_page", "last_pkmap", "kmap_atomic_slots", "cpus", "tlb_entries", "cpu_mhz",
               "kernel_stack_order"}
_BOOL_FIELDS = {"highpte", "alias_detection"}


def parse_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, "true or false", value)


def parse_int(key: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, "an integer", value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        raise ConfigError(key, "an integer", value) from None


def owns(key: str) -> bool:
    """Whether ``--set key=...`` is a machine setting."""
    return key in FIELD_HELP or key.startswith("cost.")


def _coerce(key: str, value: object) -> object:
    if key == "kernel_version":
        return str(value).strip()
    if key in _SIZE_FIELDS:
        return parse_size(key, value)
    if key in _INT_FIELDS:
        return parse_int(key, value)
    return parse_bool(key, value)


def with_overrides(machine: Machine, overrides: dict[str, object]) -> Machine:
    """A copy of ``machine`` with ``--set`` values applied; raises ConfigError naming the field."""
    changes: dict[str, object] = {}
    costs = dict(machine.costs)
    for key, value in overrides.items():
        if key.startswith("cost."):
            name = key[len("cost."):]
            if name not in costs:
                raise ConfigError(key, "one of " + ", ".join(f"cost.{n}" for n in sorted(costs)))
            cycles = parse_int(key, value)
            if cycles < 0:
                raise ConfigError(key, "cycles >= 0", value)
            costs[name] = Cost(cycles, "--set override")
        elif key in FIELD_HELP:
            changes[key] = _coerce(key, value)
        else:
            raise ConfigError(key, "a machine field: " + ", ".join(sorted(FIELD_HELP)) + ", cost.NAME")
    if "kernel_version" in changes and "struct_page" not in changes:
        sizes = STRUCT_PAGE[machine.arch]
        if changes["kernel_version"] not in sizes:
            raise ConfigError("kernel_version", f"one of {', '.join(sizes)} on {machine.name}",
                              changes["kernel_version"])
        changes["struct_page"] = sizes[changes["kernel_version"]]
    out = dataclasses.replace(machine, costs=costs, **changes)
    validate(out)
    return out


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def validate(m: Machine) -> None:
    """Reject machines no kernel could boot on, naming the first bad field."""
    if m.page_size < 4096 or not _power_of_two(m.page_size):
        raise ConfigError("page_size", "a power of two >= 4096", m.page_size)
    if m.memory <= 0 or m.memory % m.page_size:
        raise ConfigError("memory", "a positive multiple of page_size", m.memory)
    if m.arch == "x86" and m.memory > 64 * GiB:
        raise ConfigError("memory", "at most 64GiB on x86 with PAE (36-bit physical addresses)", m.memory)
    if not 0 < m.page_offset < 1 << 32 or m.page_offset % m.page_size:
        raise ConfigError("page_offset", "a page-aligned address inside 4 GiB, e.g. 0xC0000000", m.page_offset)
    if m.vmalloc_reserve < 0 or m.vmalloc_reserve % m.page_size or m.vmalloc_reserve >= (1 << 32) - m.page_offset:
        raise ConfigError("vmalloc_reserve", "page-aligned and smaller than the kernel's virtual space",
                          m.vmalloc_reserve)
    if m.dma_zone < 0 or m.dma_zone % m.page_size:
        raise ConfigError("dma_zone", "a page-aligned size >= 0", m.dma_zone)
    if m.kernel_version not in STRUCT_PAGE[m.arch]:
        raise ConfigError("kernel_version", f"one of {', '.join(STRUCT_PAGE[m.arch])} on {m.name}", m.kernel_version)
    if not 8 <= m.struct_page <= 256:
        raise ConfigError("struct_page", "between 8 and 256 bytes", m.struct_page)
    if not _power_of_two(m.last_pkmap):
        raise ConfigError("last_pkmap", "a power of two >= 1 (the scan wraps with LAST_PKMAP_MASK)", m.last_pkmap)
    for name in ("kmap_atomic_slots", "cpus", "tlb_entries", "cpu_mhz"):
        if getattr(m, name) < 1:
            raise ConfigError(name, "an integer >= 1", getattr(m, name))
    if m.kernel_stack_order not in (0, 1, 2):
        raise ConfigError("kernel_stack_order", "0, 1 or 2 (4, 8 or 16 KiB stacks)", m.kernel_stack_order)
    if m.highpte and m.arch != "x86":
        raise ConfigError("highpte", f"false on {m.name}: it has no highmem (all of memory is ZONE_NORMAL)", m.highpte)
    _validate_cache(m)
    if m.kernel_image < 0 or m.kernel_image % m.page_size:
        raise ConfigError("kernel_image", "a page-aligned size >= 0", m.kernel_image)
    if m.frames >= 1 << 31:
        raise ConfigError("memory", "fewer than 2**31 frames", m.memory)


def _validate_cache(m: Machine) -> None:
    stride = m.congruence_stride
    if stride < m.page_size or stride % m.page_size or not _power_of_two(stride // m.page_size):
        raise ConfigError("congruence_stride", f"a power-of-two multiple of page_size ({m.page_size})", stride)
    if m.arch == "x86" and stride != m.page_size:
        raise ConfigError("congruence_stride", f"page_size ({m.page_size}) on x86: its caches are physically "
                          "indexed", stride)
    if stride // m.page_size > 1 << 15:
        raise ConfigError("congruence_stride", f"at most {1 << 15} colours ({format_size((1 << 15) * m.page_size)})",
                          stride)
    if not _power_of_two(m.cache_line) or m.cache_line > m.page_size:
        raise ConfigError("cache_line", f"a power of two no larger than page_size ({m.page_size})", m.cache_line)
    if m.l1d_size < m.cache_line:
        raise ConfigError("l1d_size", "at least one cache line", m.l1d_size)


def get_machine(name: str) -> Machine:
    if name not in MACHINES:
        raise ConfigError("machine", "one of " + ", ".join(sorted(MACHINES)), name)
    return MACHINES[name]
