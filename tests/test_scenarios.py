"""Scenario tests: tiny event streams with exact, closed-form expectations (SimPy style).

Every scenario runs on both engines; the expectations come from the kernel's own rules (the
REFERENCE.md figures and mm/highmem.c), never from running zonesim.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core import events as E
from core.errors import ConfigError, StreamError
from core.events import Stream, ev, make_batch
from core.highmem import page_address
from core.kernel import Kernel
from core.machine import get_machine, with_overrides
from core.policy import get_policy
from core.record import build_record
from core.sim import simulate
from core.units import GiB, MiB

ENGINES = ("reference", "fast")
PAGE = 4096


def run(rows: list[tuple], policy: str = "stock", machine: dict | None = None, engine: str = "fast",
        max_handles: int = 4096, policy_set: dict | None = None) -> tuple[dict, Kernel]:
    m = with_overrides(get_machine("x86-pae-64g"), machine or {})
    p = get_policy(policy, m, policy_set or {})
    k = simulate(m, p, Stream([make_batch(rows)] if rows else [], max_handles), engine=engine)
    return build_record(k, {}), k


# -- boot: the closed forms of REFERENCE section 2 ------------------------------------------------

def test_mem_map_and_lowmem_at_64g_stock() -> None:
    rec, k = run([])
    assert rec["mem_map_bytes"] == 16_777_216 * 32 == 512 * MiB
    maxmem = (4 * GiB - 0xC0000000) - 128 * MiB  # 896 MiB
    assert k.mm.layout.lowmem_end == maxmem == 896 * MiB
    assert rec["lowmem_total_bytes"] == maxmem - 512 * MiB - 8 * MiB  # minus mem_map and the image
    assert rec["kernel_mapped_bytes_peak"] == 896 * MiB  # the whole offset map
    assert rec["highmem_free_min_bytes"] == 64 * GiB - 896 * MiB


@pytest.mark.parametrize("override, lowmem", [
    ({"struct_page": 40}, 896 * MiB - 640 * MiB - 8 * MiB),  # 2.6.0's 40-byte struct page
    ({"memory": "16GiB"}, 896 * MiB - 128 * MiB - 8 * MiB),
    ({"memory": "512MiB"}, 512 * MiB - 4 * MiB - 8 * MiB),  # no highmem at all
])
def test_lowmem_total_follows_mem_map(override: dict, lowmem: int) -> None:
    rec, _ = run([], machine=override)
    assert rec["lowmem_total_bytes"] == lowmem


@pytest.mark.parametrize("version, struct_page", [("2.5.74", 44), ("2.6.0", 40), ("2.6.11", 32)])
def test_kernel_version_sizes_mem_map(version: str, struct_page: int) -> None:
    rec, _ = run([], policy="4g4g", machine={"kernel_version": version})
    mem_map = 16_777_216 * struct_page
    assert rec["mem_map_bytes"] == mem_map
    assert rec["lowmem_total_bytes"] == 4 * GiB - 128 * MiB - mem_map - 8 * MiB


def test_kernel_version_is_checked_and_struct_page_still_wins() -> None:
    with pytest.raises(ConfigError, match="kernel_version.*2.5.74"):
        with_overrides(get_machine("x86-pae-64g"), {"kernel_version": "2.4.20"})
    m = with_overrides(get_machine("x86-pae-64g"), {"kernel_version": "2.5.74", "struct_page": 36})
    assert m.struct_page == 36


def test_4g4g_lowmem_and_unmapped_window() -> None:
    rec, _ = run([], policy="4g4g")
    assert rec["lowmem_total_bytes"] == 4 * GiB - 128 * MiB - 512 * MiB - 8 * MiB
    rec, k = run([], policy="unmapped")
    freed = (896 * MiB - 512 * MiB - 8 * MiB) // PAGE  # lowmem's virtual space less the permanent maps
    ring = 1 << (freed // 2).bit_length() - 1  # half of it, rounded down to a power of two
    assert k.pk.slots == ring == 32768
    assert rec["lowmem_total_bytes"] == (freed - ring) * PAGE
    assert rec["kernel_mapped_bytes_peak"] == (512 * MiB + 8 * MiB)  # only mem_map and the image


# -- the buddy allocator and the hot list ----------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_hot_list_is_lifo_and_refills_with_the_top_block(engine: str) -> None:
    rows = [ev(E.K_ALLOC_SLAB, 0), ev(E.K_ALLOC_SLAB, 1), ev(E.K_FREE, 0), ev(E.K_ALLOC_SLAB, 2)]
    _, k = run(rows, engine=engine)
    top_block = 229376 - 1024  # Normal ends at 896 MiB; its last order-10 block is listed last
    assert k.handle_pfn[1] == top_block + 1  # a refill hands out the block lowest page first
    assert k.handle_pfn[2] == top_block  # the page freed last is the next one handed out
    normal = k.mm.zones[1]
    assert normal.pcp_top == 1024 - 2


@pytest.mark.parametrize("engine", ENGINES)
def test_order1_free_merges_back_to_the_boot_state(engine: str) -> None:
    _, booted = run([])
    _, k = run([ev(E.K_ALLOC_STACK, 0, order=1), ev(E.K_FREE, 0)], engine=engine)
    for z0, z1 in zip(booted.mm.zones, k.mm.zones, strict=True):
        assert [list(a) for a in z0.free_area] == [list(a) for a in z1.free_area]
        assert z0.free_pages == z1.free_pages


@pytest.mark.parametrize("engine", ENGINES)
def test_lowmem_exhaustion_fails_kernel_allocations_while_highmem_is_free(engine: str) -> None:
    machine = {"memory": "64MiB", "vmalloc_reserve": str((1024 - 24) << 20), "kernel_image": "4MiB"}
    rec, k = run([], machine=machine)
    free = rec["lowmem_total_bytes"] // PAGE
    rows = [ev(E.K_ALLOC_SLAB, h) for h in range(free + 5)]
    rec, k = run(rows, machine=machine, engine=engine, max_handles=free + 5)
    assert rec["alloc_failures"] == 5
    assert rec["lowmem_free_min_bytes"] == 0
    assert rec["highmem_free_min_bytes"] == 64 * MiB - 24 * MiB
    assert (k.handle_pfn == -2).sum() == 5


# The fast engine hands the events its windows cannot batch (a drain, a request that finds too
# few pages) to the same scalar verbs as the reference (reference.do_alloc/do_free, over
# page_alloc), so a differential test cannot see a fault in those verbs on those events. These
# scenarios pin them down with closed forms, and first check that the window does hand them over.
LOW_NORMAL = {"memory": "64MiB", "vmalloc_reserve": str((1024 - 24) << 20), "kernel_image": "4MiB"}


def _hot_list_full_of_normal() -> list[tuple]:
    """Every free Normal page allocated one page at a time, then freed: all of it on the hot list,
    none in the buddy lists."""
    _, k = run([], machine=LOW_NORMAL)
    n = k.mm.zones[1].free_pages
    return [ev(E.K_ALLOC_SLAB, h) for h in range(n)] + [ev(E.K_FREE, h) for h in range(n)]


def _one_page_left_in_normal() -> list[tuple]:
    """Every free Normal page but one allocated."""
    _, k = run([], machine=LOW_NORMAL)
    return [ev(E.K_ALLOC_SLAB, h) for h in range(1, k.mm.zones[1].free_pages)]


@pytest.mark.parametrize("state", [_hot_list_full_of_normal, _one_page_left_in_normal])
def test_an_order1_request_the_window_cannot_batch_goes_scalar(state: Callable[[], list[tuple]]) -> None:
    from core.page_alloc_batch import Window, apply_window

    _, k = run(state(), machine=LOW_NORMAL, max_handles=8192)
    one = np.zeros(1, dtype=np.int64)
    res = apply_window(k, Window(one, one, one + 1, np.full(1, E.GFP_KERNEL, dtype=np.intp), one))
    assert res.done == 0  # the window ends before it: the event goes through the scalar verbs


@pytest.mark.parametrize("engine", ENGINES)
def test_an_order1_request_a_zone_cannot_serve_falls_back_keeping_the_page_it_found(engine: str) -> None:
    """alloc_from_zone: one free page is too few for an order-1 block, so the stack comes from
    DMA, the next zone of GFP_KERNEL's list, and Normal keeps its page."""
    rec, k = run(_one_page_left_in_normal() + [ev(E.K_ALLOC_STACK, 0, order=1)], machine=LOW_NORMAL,
                 engine=engine, max_handles=8192)
    assert rec["alloc_failures"] == 0 and k.mm.zones[1].free_pages == 1
    assert k.mm.zone_of(int(k.handle_pfn[0])).index == 0 and k.mm.page_order[k.handle_pfn[0]] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_an_order1_request_drains_the_hot_list_rather_than_fall_back(engine: str) -> None:
    """alloc_from_zone: the buddy lists have no block, so the hot list drains back into them
    (merging to the boot state) and the stack comes from Normal, not from DMA further down."""
    rows = _hot_list_full_of_normal()
    _, booted = run([], machine=LOW_NORMAL)
    rec, k = run(rows + [ev(E.K_ALLOC_STACK, 0, order=1)], machine=LOW_NORMAL, engine=engine, max_handles=8192)
    normal = k.mm.zones[1]
    assert rec["alloc_failures"] == 0 and normal.pcp_top == 0
    assert k.mm.zone_of(int(k.handle_pfn[0])).index == 1
    assert normal.free_pages == booted.mm.zones[1].free_pages - 2
    _, k = run(rows + [ev(E.K_ALLOC_STACK, 0, order=1), ev(E.K_FREE, 0)], machine=LOW_NORMAL, engine=engine,
               max_handles=8192)
    assert [set(a) for a in k.mm.zones[1].free_area] == [set(a) for a in booted.mm.zones[1].free_area]


# -- the persistent kmap pool (mm/highmem.c) ------------------------------------------------------

def _highmem_pages(n: int) -> list[tuple]:
    return [ev(E.K_ALLOC_ANON, h) for h in range(n)]  # user pages come from highmem


@pytest.mark.parametrize("engine", ENGINES)
def test_last_pkmap_kmaps_fit_then_the_next_one_waits(engine: str) -> None:
    n = 8
    machine = {"memory": "4GiB", "last_pkmap": n}
    fill = _highmem_pages(n + 1) + [ev(E.K_KMAP, h) for h in range(n)]
    rec, _ = run(fill, machine=machine, engine=engine)
    # slots 1..n-1, then the wrap to slot 0: one flush_all_zero_pkmaps, one global TLB flush
    assert (rec["pkmap_wraps"], rec["tlb_flush_global"], rec["kmap_waits"]) == (1, 1, 0)
    rec, k = run(fill + [ev(E.K_KMAP, n)], machine=machine, engine=engine)
    # a full circle finds no free slot: the caller sleeps (the circle passed slot 0 once more)
    assert (rec["pkmap_wraps"], rec["kmap_waits"], rec["kmap_waiters_at_end"]) == (2, 1, 1)
    assert rec["tlb_flush_global"] == 2
    assert list(k.pk.pkmap_count) == [2] * n
    # a kunmap drops a count to 1 and wakes the sleeper, whose wrap frees that slot for it
    rec, k = run(fill + [ev(E.K_KMAP, n), ev(E.K_KUNMAP, 3)], machine=machine, engine=engine)
    assert (rec["pkmap_wraps"], rec["kmap_waits"], rec["kmap_waiters_at_end"]) == (3, 1, 0)
    # pages 0..n-2 took slots 1..n-1 and page n-1 slot 0, so page 3 held slot 4: the sleeper's now
    assert page_address(k.pk, int(k.handle_pfn[n])) == 4
    assert page_address(k.pk, int(k.handle_pfn[3])) == -1
    assert rec["pkmap_new_mappings"] == n + 1


@pytest.mark.parametrize("engine", ENGINES)
def test_each_wrap_costs_exactly_one_global_flush(engine: str) -> None:
    n, rounds = 8, 5
    rows = _highmem_pages(n * rounds)
    for h in range(n * rounds):  # map and release a new page each time: a wrap every n mappings
        rows += [ev(E.K_KMAP, h), ev(E.K_KUNMAP, h)]
    rec, _ = run(rows, machine={"memory": "4GiB", "last_pkmap": n}, engine=engine)
    wraps = (n * rounds) // n  # the cursor starts at 0, so the n-th, 2n-th ... mapping wraps
    assert rec["pkmap_wraps"] == rec["tlb_flush_global"] == wraps
    assert rec["kmap_waits"] == 0
    assert rec["cycles_tlb_flush_global"] == wraps * get_machine("x86-pae-64g").cycles("tlb_flush_global")


@pytest.mark.parametrize("engine", ENGINES)
def test_kmap_of_lowmem_and_kmap_atomic_flush_rules(engine: str) -> None:
    rows = [ev(E.K_ALLOC_SLAB, 0), ev(E.K_ALLOC_ANON, 1),
            ev(E.K_KMAP, 0), ev(E.K_KUNMAP, 0),  # lowmem: page_address, no slot
            ev(E.K_KMAP_ATOMIC, 0),  # lowmem: no PTE to install
            ev(E.K_KMAP_ATOMIC, 1), ev(E.K_KMAP_ATOMIC, 1)]  # highmem: one invlpg each
    rec, _ = run(rows, machine={"memory": "4GiB"}, engine=engine)
    assert rec["pkmap_new_mappings"] == 0
    assert (rec["kmap_atomic_calls"], rec["kmap_atomic_maps"], rec["tlb_flush_local"]) == (3, 2, 2)


# -- policies -------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy, reloads", [("stock", 0), ("4g4g", 2), ("unmapped", 0)])
def test_every_kernel_entry_costs_two_cr3_reloads_under_4g4g(engine: str, policy: str, reloads: int) -> None:
    syscalls, faults = 37, 5
    rows = [ev(E.K_SYSCALL)] * syscalls + _highmem_pages(faults) + [ev(E.K_FORK), ev(E.K_EXEC), ev(E.K_EXIT)]
    rec, _ = run(rows, policy=policy, machine={"memory": "4GiB"}, engine=engine)
    entries = syscalls + faults + 3
    assert rec["kernel_entries"] == entries
    assert rec["tlb_flush_full"] == reloads * entries
    assert rec["cycles_cr3_reload"] == reloads * entries * get_machine("x86-pae-64g").cycles("cr3_reload")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["stock", "4g4g", "unmapped"])
def test_user_time_interrupts_and_4g4g_user_copies(engine: str, policy: str) -> None:
    """K_RUN is wall-clock time in user mode (ns x MHz / 1000 cycles); K_IRQ a kernel entry (two
    cr3 reloads under 4g4g) plus the tick handler; under 4g4g every page copied to or from user
    space is reached through kmap_atomic (one PTE set, one invlpg)."""
    runs, irqs, copies = 5, 3, 4
    rows = [ev(E.K_ALLOC_ANON, 0, addr=7)] + [ev(E.K_RUN, addr=250_000)] * runs + [ev(E.K_IRQ)] * irqs
    rows += [ev(E.K_COPY, 0, order=i % 2) for i in range(copies)]
    rec, _ = run(rows, policy=policy, machine={"memory": "4GiB"}, engine=engine)
    m = get_machine("x86-pae-64g")
    reloads = 2 if policy == "4g4g" else 0
    assert (rec["user_time_ns"], rec["interrupts"], rec["kernel_entries"]) == (runs * 250_000, irqs, 1 + irqs)
    assert rec["tlb_flush_full"] == reloads * (1 + irqs)
    assert rec["cycles_user"] == runs * 250 * m.cpu_mhz
    assert rec["cycles_irq"] == irqs * m.cycles("irq_handler")
    kmaps = copies if policy == "4g4g" else 0
    assert rec["uaccess_kmaps"] == kmaps
    assert rec["cycles_uaccess"] == kmaps * (m.cycles("pte_set") + m.cycles("tlb_flush_local"))
    assert rec["cycles_total"] == rec["cycles_kernel"] + rec["cycles_user"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["stock", "4g4g", "unmapped"])
def test_fork_copies_ptes_and_a_cow_copy_kmaps_its_highmem_source(engine: str, policy: str) -> None:
    """fork's copy_page_range: one PTE copied per page the parent maps (K_FORK's addr); a COW
    copy maps its source with kmap_atomic when it has no kernel address (a highmem user page
    under every policy), one invlpg; the destination's mapping is the stream's K_KMAP_ATOMIC."""
    rows = _highmem_pages(1) + [ev(E.K_FORK, addr=300), ev(E.K_ALLOC_ANON, 1, addr=5), ev(E.K_COW, 0),
                                ev(E.K_KMAP_ATOMIC, 1)]
    rec, _ = run(rows, policy=policy, machine={"memory": "4GiB"}, engine=engine)
    m = get_machine("x86-pae-64g")
    assert (rec["fork_ptes_copied"], rec["cow_copies"]) == (300, 1)
    assert rec["cycles_fork_ptes"] == 300 * m.cycles("pte_copy")
    assert rec["cycles_cow"] == m.cycles("page_copy")
    assert rec["kmap_atomic_maps"] == 2  # the source and the destination
    assert rec["uaccess_kmaps"] == 0  # a COW copy is kernel to kernel, not a user copy


@pytest.mark.parametrize("engine", ENGINES)
def test_unmapped_kernel_mapped_bytes_are_live_kernel_allocations_plus_permanent_maps(engine: str) -> None:
    slabs, stacks = 7, 3
    rows = [ev(E.K_ALLOC_SLAB, h) for h in range(slabs)]
    rows += [ev(E.K_ALLOC_STACK, slabs + h, order=1) for h in range(stacks)]
    rows += [ev(E.K_ALLOC_ANON, 100), ev(E.K_ALLOC_PGTABLE, 101)]  # user page: not mapped; PTE page: mapped
    permanent = (512 * MiB + 8 * MiB) // PAGE
    live = slabs + 2 * stacks + 1
    rec, k = run(rows, policy="unmapped", engine=engine)
    assert rec["kernel_mapped_bytes_peak"] == (permanent + live) * PAGE
    assert rec["kernel_map_pages"] == live
    assert k.lowmem_free() == k.window_pages - live
    frees = [ev(E.K_FREE, h) for h in range(slabs + stacks)]
    rec, k = run(rows + frees, policy="unmapped", engine=engine)
    assert rec["kernel_unmap_pages"] == live - 1  # the PTE page stays
    assert rec["tlb_flush_local"] == slabs + stacks  # one invlpg per block unmapped on free
    assert k.kernel_mapped() * PAGE == (permanent + 1) * PAGE


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["stock", "4g4g", "unmapped"])
@pytest.mark.parametrize("highpte", [False, True])
def test_pte_edits_need_kmap_atomic_only_under_highpte(engine: str, policy: str, highpte: bool) -> None:
    """CONFIG_HIGHPTE is the machine's switch under every x86 policy. Without it a PTE page is a
    GFP_KERNEL page: stock and 4g4g edit it through the offset map, unmapped maps it on allocation
    (s4.3: no highmem flag, so __alloc_pages maps it); either way an edit needs no kmap_atomic.
    With it the page comes from highmem, and each edit is a kmap_atomic with its invlpg."""
    edits = 3
    rows = [ev(E.K_ALLOC_PGTABLE, 0)] + [ev(E.K_PTE_UPDATE, 0)] * edits
    rec, k = run(rows, policy=policy, machine={"memory": "4GiB", "highpte": highpte}, engine=engine)
    kmaps = edits if highpte else 0
    assert (rec["pte_updates"], rec["pte_kmaps"], rec["tlb_flush_local"]) == (edits, kmaps, kmaps)
    mapped_on_alloc = policy == "unmapped" and not highpte
    assert rec["kernel_map_pages"] == (1 if mapped_on_alloc else 0)
    in_highmem = k.handle_pfn[0] >= k.mm.layout.lowmem_end // PAGE
    assert in_highmem == highpte


def test_highpte_is_refused_on_parisc() -> None:
    with pytest.raises(ConfigError, match="highpte"):
        with_overrides(get_machine("pa8800"), {"highpte": "true"})


@pytest.mark.parametrize("engine", ENGINES)
def test_unmapped_kernel_allocations_fail_when_the_window_is_full_and_fit_again_after_frees(engine: str) -> None:
    """alloc_pages_mapped checks the window before any zone: with it full, a kernel allocation
    fails (and a free of that handle gives nothing back); two frees make room for exactly two more."""
    _, k = run([], policy="unmapped", machine={"memory": "64MiB"})
    cap = k.window_pages
    rows = [ev(E.K_ALLOC_SLAB, h) for h in range(cap)]
    rows += [ev(E.K_ALLOC_SLAB, cap + h) for h in range(3)]  # no room: three failures
    rows += [ev(E.K_FREE, cap), ev(E.K_FREE, 0), ev(E.K_FREE, 1)]  # a failed handle's free, two real ones
    rows += [ev(E.K_ALLOC_SLAB, cap + h) for h in range(3)]  # two fit, the third fails
    rec, k = run(rows, policy="unmapped", machine={"memory": "64MiB"}, engine=engine, max_handles=cap + 8)
    assert rec["alloc_failures"] == 3 + 1
    assert rec["ops_on_failed"] == 1
    assert rec["kernel_map_pages"] == cap + 2 and k.window_used == cap
    assert rec["lowmem_free_min_bytes"] == 0


def test_unmapped_lazy_global_flush_per_batch_of_unmapped_pages() -> None:
    n = 10
    rows = [ev(E.K_ALLOC_SLAB, h) for h in range(n)] + [ev(E.K_FREE, h) for h in range(n)]
    rec, _ = run(rows, policy="unmapped", policy_set={"unmap_flush_batch": 4})
    assert rec["tlb_flush_global"] == n // 4


def test_engines_agree_on_a_scenario_stream() -> None:
    rows = _highmem_pages(40) + [ev(E.K_ALLOC_SLAB, 40 + i) for i in range(20)]
    rng = np.random.default_rng(1)
    for h in rng.integers(0, 40, 60).tolist():
        rows += [ev(E.K_KMAP, h), ev(E.K_KUNMAP, h)]
    for policy in ("stock", "4g4g", "unmapped"):
        recs = [run(rows, policy=policy, machine={"memory": "4GiB", "last_pkmap": 8}, engine=e)[0] for e in ENGINES]
        assert recs[0] == recs[1]


@pytest.mark.parametrize("handle, ok", [(0, True), (7, True), (8, False), (-1, False), (-(2**31), False)])
def test_check_batch_refuses_handles_out_of_range(handle: int, ok: bool) -> None:
    batch = make_batch([ev(E.K_SYSCALL, -1), ev(E.K_ALLOC_ANON, handle)])  # a syscall names no handle
    if ok:
        E.check_batch(batch, 8, 1)
    else:
        with pytest.raises(StreamError, match=r"handle out of range 0\.\.7"):
            E.check_batch(batch, 8, 1)


def test_check_batch_refuses_negative_handles_whatever_the_bound() -> None:
    batch = make_batch([ev(E.K_ALLOC_ANON, -(2**31))])
    with pytest.raises(StreamError, match="handle out of range"):
        E.check_batch(batch, 2**31 + 1, 1)
