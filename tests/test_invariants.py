"""The invariant checks catch what they claim to: corrupt one piece of a real kernel's state at a
time and ``check_all`` must name the broken invariant.

Each kernel is booted on a small machine and driven by a short scripted stream (reference engine)
that leaves every structure populated: live blocks in lowmem and highmem, buddy free lists, a hot
list, kmapped and stale pkmap slots, and under ``unmapped`` blocks mapped into the kernel window.
Where two invariants both describe a corruption (a frame owned twice is also a tiling hole), either
name is accepted, so the tests do not pin the order in which ``check_all`` runs its checks.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from core import events as E
from core import invariants
from core.errors import InvariantError
from core.events import Stream, ev, make_batch
from core.invariants import check_all
from core.kernel import Kernel
from core.machine import get_machine, with_overrides
from core.mem_map import PG_alloc, PG_buddy, PG_mapped, PG_pcp
from core.policy import ZONE_DMA, ZONE_HIGHMEM, ZONE_NAMES, ZONE_NORMAL, get_policy
from core.sim import simulate

SMALL = {"memory": "96MiB", "vmalloc_reserve": str(960 << 20), "last_pkmap": 8, "kernel_image": "4MiB"}
MAX_HANDLES = 16
SPARE = 15  # a handle the script never uses

SCRIPT = [
    *(ev(E.K_ALLOC_ANON, h) for h in range(4)),  # user pages: highmem under stock
    *(ev(E.K_ALLOC_SLAB, h) for h in range(4, 8)),  # kernel pages: mapped on alloc under unmapped
    ev(E.K_ALLOC_STACK, 8, order=1),
    ev(E.K_KMAP, 0), ev(E.K_KMAP, 1), ev(E.K_KMAP, 1),  # two slots in use, one with two users
    ev(E.K_KMAP, 2), ev(E.K_KUNMAP, 2),  # a stale slot (count 1)
    ev(E.K_FREE, 5),  # an order-0 free: onto the hot list
    ev(E.K_FREE, 8),  # an order-1 free: back to the buddy lists
]


def boot(policy_name: str) -> Kernel:
    m = with_overrides(get_machine("x86-pae-64g"), SMALL)
    stream = Stream([make_batch(SCRIPT)], MAX_HANDLES)
    return simulate(m, get_policy(policy_name, m), stream, engine="reference", check=False)


@pytest.fixture
def stock() -> Kernel:
    return boot("stock")


@pytest.fixture
def unmapped() -> Kernel:
    return boot("unmapped")


def violated(k: Kernel) -> str:
    """The name of the invariant ``check_all`` reports (it must report one)."""
    with pytest.raises(InvariantError) as err:
        check_all(k)
    found = re.match(r"invariant (\S+) violated", str(err.value))
    assert found, f"InvariantError does not name its invariant: {err.value}"
    return found.group(1)


def free_head(k: Kernel, zone: int = ZONE_NORMAL) -> int:
    """A buddy head on one of the zone's free lists."""
    area = next(a for a in k.mm.zones[zone].free_area if a)
    return next(iter(area))


def live_pfn(k: Kernel, handle: int) -> int:
    pfn = int(k.handle_pfn[handle])
    assert pfn >= 0, f"the script left handle {handle} without a page"
    return pfn


def slot_in_use(k: Kernel) -> int:
    """A pkmap slot with at least one user (count >= 2)."""
    used = np.flatnonzero(k.pk.pkmap_count >= 2)
    assert used.size, "the script left no kmapped page"
    return int(used[0])


@pytest.mark.parametrize("policy_name", ["stock", "4g4g", "unmapped"])
def test_the_scripted_kernel_satisfies_every_invariant(policy_name):
    k = boot(policy_name)
    check_all(k)
    assert any(z.pcp_top for z in k.mm.zones), "the script should leave a hot list"
    assert policy_name == "4g4g" or np.any(k.pk.pkmap_count == 1), "the script should leave a stale slot"


# -- frames: one owner each, and reserved/free/hot/allocated tile memory -----------------------------


def test_two_handles_on_one_block_break_one_owner(stock):
    stock.handle_pfn[SPARE] = live_pfn(stock, 4)
    assert violated(stock) in {"one-owner", "tiling"}


@pytest.mark.parametrize("zone", [ZONE_NORMAL, ZONE_HIGHMEM], ids=["Normal", "HighMem"])
def test_a_handle_on_a_free_block_breaks_tiling(stock, zone):
    pfn = free_head(stock, zone)
    stock.handle_pfn[SPARE] = pfn
    stock.mm.page_flags[pfn] |= PG_alloc  # allocated and on a free list at once
    assert violated(stock) in {"tiling", "one-owner"}


def test_a_handle_on_an_unflagged_free_block_breaks_alloc_flag(stock):
    stock.handle_pfn[SPARE] = free_head(stock)
    assert violated(stock) in {"alloc-flag", "tiling"}


def test_pg_pcp_on_a_page_off_the_hot_list_breaks_pcp_flag(stock):
    stock.mm.page_flags[live_pfn(stock, 4)] |= PG_pcp
    assert violated(stock) in {"pcp-flag", "tiling"}


def test_a_hot_list_page_without_pg_pcp_breaks_pcp_flag(stock):
    zone = next(z for z in stock.mm.zones if z.pcp_top)
    top = int(zone.pcp[zone.pcp_top - 1])
    stock.mm.page_flags[top] &= 0xFF ^ PG_pcp
    assert violated(stock) in {"pcp-flag", "tiling"}


# The tiling is shown on the blocks' runs when they are few (invariants._tiles_by_runs), else decided
# by one sort of every block (invariants._check_tiling): the runs must never show a tiling the sort
# rejects, and a kernel whose runs are many must still pass by the sort.


def two_handles_on_one_block(k: Kernel) -> None:
    k.handle_pfn[SPARE] = live_pfn(k, 4)


def a_handle_on_a_free_block(k: Kernel) -> None:
    k.handle_pfn[SPARE] = free_head(k)


def a_free_head_off_its_list(k: Kernel) -> None:
    pfn = free_head(k)
    del k.mm.zones[ZONE_NORMAL].free_area[int(k.mm.page_order[pfn])][pfn]


def a_live_block_one_order_larger(k: Kernel) -> None:
    k.mm.page_order[live_pfn(k, 4)] += 1


def a_live_block_grown_over_the_next_handles(k: Kernel) -> None:
    """Handles 0 and 1 hold neighbouring pages: an order-1 block at the first holds both."""
    assert live_pfn(k, 1) == live_pfn(k, 0) + 1 and live_pfn(k, 0) % 2 == 0
    k.mm.page_order[live_pfn(k, 0)] = 1


def a_live_block_of_negative_order(k: Kernel) -> None:
    k.mm.page_order[live_pfn(k, 4)] = -1


def a_handle_of_no_order_on_a_free_block(k: Kernel) -> None:
    """The free block still covers its frames; the handle's block (order -1) would cover none."""
    k.handle_pfn[SPARE] = free_head(k)
    k.mm.page_order[free_head(k)] = -1


def a_hot_page_listed_twice(k: Kernel) -> None:
    zone = next(z for z in k.mm.zones if z.pcp_top > 1)
    zone.pcp[0] = zone.pcp[1]


def a_hot_page_past_memory(k: Kernel) -> None:
    zone = next(z for z in k.mm.zones if z.pcp_top)
    zone.pcp[0] = k.mm.page_flags.size + 5


TILING_BREAKS = [two_handles_on_one_block, a_handle_on_a_free_block, a_free_head_off_its_list,
                 a_live_block_one_order_larger, a_live_block_grown_over_the_next_handles,
                 a_live_block_of_negative_order, a_handle_of_no_order_on_a_free_block,
                 a_hot_page_listed_twice, a_hot_page_past_memory]


def test_the_runs_show_the_scripted_kernels_tiling(stock):
    assert invariants._tiles_by_runs(stock.mm, invariants.owners(stock))


@pytest.mark.parametrize("corrupt", TILING_BREAKS, ids=lambda f: f.__name__)
def test_the_runs_never_show_a_tiling_the_sort_rejects(stock, corrupt):
    corrupt(stock)
    own = invariants.owners(stock)
    assert not invariants._tiles_by_runs(stock.mm, own)
    with pytest.raises(InvariantError, match="invariant (tiling|one-owner) violated"):
        invariants._check_tiling(stock.mm, own)


def test_a_hot_page_past_memory_breaks_tiling(stock):
    a_hot_page_past_memory(stock)
    assert violated(stock) == "tiling"


def test_a_kernel_whose_runs_are_many_passes_by_the_sort(stock):
    zone = next(z for z in stock.mm.zones if z.pcp_top > 100)
    zone.pcp[:zone.pcp_top] = np.sort(zone.pcp[:zone.pcp_top])  # no page abuts the one pushed after it
    assert not invariants._tiles_by_runs(stock.mm, invariants.owners(stock))
    check_all(stock)


# -- zones: free counts and free lists ----------------------------------------------------------------


@pytest.mark.parametrize("zone", [ZONE_DMA, ZONE_NORMAL, ZONE_HIGHMEM], ids=list(ZONE_NAMES))
@pytest.mark.parametrize("delta", [1, -1])
def test_a_zone_free_count_off_by_one_breaks_zone_free(stock, zone, delta):
    stock.mm.zones[zone].free_pages += delta
    assert violated(stock) == "zone-free"


def test_a_listed_head_with_the_wrong_order_breaks_free_area(stock):
    pfn = free_head(stock)
    order = int(stock.mm.page_order[pfn])
    stock.mm.page_order[pfn] = order - 1 if order else 1
    assert violated(stock) in {"free-area", "tiling"}


def test_pg_buddy_on_an_allocated_block_breaks_buddy_flag(stock):
    stock.mm.page_flags[live_pfn(stock, 4)] |= PG_buddy
    assert violated(stock) in {"buddy-flag", "tiling"}


# -- the kmap pool ------------------------------------------------------------------------------------


def test_a_mapped_slot_counted_free_breaks_pkmap(stock):
    """pkmap_count drops to 0 while the page still points at the slot."""
    stock.pk.pkmap_count[slot_in_use(stock)] = 0
    assert violated(stock).startswith("pkmap-")


def test_a_wrong_count_of_mapped_slots_breaks_pkmap_mapped(stock):
    stock.pk.mapped += 1
    assert violated(stock) == "pkmap-mapped"


def test_a_page_pointing_at_a_free_slot_breaks_pkmap_virtual(stock):
    stock.pk.pkmap_count[slot_in_use(stock)] = 0
    stock.pk.mapped -= 1  # the pool's own count agrees; only page->virtual is left dangling
    assert violated(stock) == "pkmap-virtual"


def test_a_slot_holding_the_wrong_page_breaks_pkmap_virtual(stock):
    slot = slot_in_use(stock)
    stock.pk.pkmap_page[slot] = live_pfn(stock, 3)  # a highmem page that was never kmapped
    assert violated(stock) == "pkmap-virtual"


def test_a_kmapped_page_missing_from_page_address_htable_breaks_pkmap_virtual(stock):
    slot, pk = slot_in_use(stock), stock.pk
    used = np.flatnonzero(pk.pkmap_count >= 1)
    pk.page_address_htable.rebuild(used[used != slot], pk.pkmap_page[used[used != slot]])  # its entry dropped
    assert violated(stock) == "pkmap-virtual"


def test_a_page_address_chain_that_loops_breaks_pkmap_virtual(stock):
    """Every slot is still found, but its chain runs on through itself: the check must end."""
    slot = slot_in_use(stock)
    stock.pk.page_address_htable.next[slot] = slot
    assert violated(stock) == "pkmap-virtual"


def test_a_negative_pkmap_count_breaks_pkmap_count(stock):
    stock.pk.pkmap_count[np.flatnonzero(stock.pk.pkmap_count == 0)[0]] = -1
    assert violated(stock) == "pkmap-count"


# -- unmapped: the kernel window ----------------------------------------------------------------------


def test_unmapped_maps_the_scripts_kernel_pages(unmapped):
    mapped = np.flatnonzero(unmapped.mm.page_flags & PG_mapped)
    assert mapped.size and unmapped.window_used > 0


@pytest.mark.parametrize("zone", [ZONE_NORMAL, ZONE_HIGHMEM], ids=["Normal", "HighMem"])
def test_pg_mapped_on_a_free_block_breaks_mapped_allocated(unmapped, zone):
    pfn = free_head(unmapped, zone)
    unmapped.mm.page_flags[pfn] |= PG_mapped
    unmapped.window_used += 1 << int(unmapped.mm.page_order[pfn])  # keep the window count consistent
    assert violated(unmapped) == "mapped-allocated"


def test_pg_mapped_on_a_free_block_breaks_mapped_allocated_or_window(unmapped):
    unmapped.mm.page_flags[free_head(unmapped)] |= PG_mapped
    assert violated(unmapped) in {"mapped-allocated", "window"}


@pytest.mark.parametrize("delta", [1, -1])
def test_a_window_count_off_by_one_breaks_window(unmapped, delta):
    unmapped.window_used += delta
    assert violated(unmapped) == "window"


def test_a_window_holding_more_than_its_size_breaks_window(unmapped):
    unmapped.window_pages = unmapped.window_used - 1  # the count is right; the window too small
    assert violated(unmapped) == "window"


def test_an_unmapped_kernel_block_that_lost_pg_mapped_breaks_window(unmapped):
    unmapped.mm.page_flags[live_pfn(unmapped, 4)] &= 0xFF ^ PG_mapped
    assert violated(unmapped) == "window"



# -- virtually indexed machines (check_vi) ---------------------------------------------------------

VI_SCRIPT = [
    ev(E.K_ALLOC_ANON, 0, addr=5), ev(E.K_ALLOC_ANON, 1, addr=9),  # user pages with user translations
    ev(E.K_ALLOC_SLAB, 2),  # under unmapped: mapped on allocation, with a slot colour
    ev(E.K_KMAP, 0),  # a kmapped page: a slot in the kmap pool
]


@pytest.fixture
def parisc() -> Kernel:
    m = with_overrides(get_machine("pa8800"), {"memory": "256MiB"})
    stream = Stream([make_batch(VI_SCRIPT)], MAX_HANDLES)
    k = simulate(m, get_policy("unmapped", m), stream, engine="reference", check=False)
    check_all(k)  # the untouched kernel passes
    assert k.vi.kmap_count[live_pfn(k, 0)] == 1 and k.vi.kmaps.pages == 1
    return k


def test_a_user_translation_on_a_free_frame_breaks_user_colour(parisc):
    parisc.vi.user_colour[free_head(parisc)] = 3
    assert violated(parisc) == "user-colour"


def test_a_negative_kmap_count_breaks_kmap_count(parisc):
    parisc.vi.kmap_count[live_pfn(parisc, 1)] = -1
    assert violated(parisc) == "kmap-count"


def test_a_kmapped_page_without_a_slot_colour_breaks_kmap_colour(parisc):
    parisc.vi.kernel_colour[live_pfn(parisc, 0)] = -1
    assert violated(parisc) == "kmap-colour"


def test_a_kmapped_page_also_mapped_on_allocation_breaks_kmap_colour(parisc):
    parisc.vi.kmap_count[live_pfn(parisc, 2)] = 1
    assert violated(parisc) == "kmap-colour"


def test_a_kmap_the_pool_does_not_hold_breaks_kmap_pool(parisc):
    pfn = live_pfn(parisc, 1)
    parisc.vi.kmap_count[pfn], parisc.vi.kernel_colour[pfn] = 1, 4
    assert violated(parisc) == "kmap-pool"


def test_a_block_mapped_on_allocation_without_a_slot_colour_breaks_alloc_colour(parisc):
    parisc.vi.kernel_colour[live_pfn(parisc, 2)] = -1
    assert violated(parisc) == "alloc-colour"


def test_a_negative_pool_bucket_breaks_pool_used(parisc):
    used = parisc.vi.kmaps.used
    empty, held = int(np.flatnonzero(used == 0)[0]), int(np.flatnonzero(used > 0)[0])
    used[empty], used[held] = -1, used[held] + 1  # the sum still matches the pool's pages
    assert violated(parisc) == "pool-used"
