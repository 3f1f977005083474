"""The zoned buddy allocator (mm/page_alloc.c, 2.6.11), scalar verbs.

Free memory of a zone is in two places:
  - the buddy free lists ``zone.free_area[order]`` (heads flagged PG_buddy, order in page_order),
    split by ``expand`` and merged by ``__free_one_page`` exactly as the kernel does;
  - the zone's hot list of order-0 pages (``zone.pcp``), a LIFO like the kernel's per-CPU
    ``free_hot_cold_page`` lists: order-0 frees go there and order-0 allocations come from there.

Simplifications: the kernel's hot lists are per CPU, hold at most ``pcp->high`` pages and trade
``pcp->batch`` pages at a time with the buddy. Here there is one hot list per zone with no high
mark: it refills by taking the smallest free buddy block whole, and drains back into the buddy
(merging) only when a higher-order allocation finds no block (2.6.11's __alloc_pages does not
drain; later kernels' drain_all_pages on the slow path does). Order-0 traffic therefore never
merges eagerly; fragmentation shows up when order >= 1 allocations need a drain. ``free_pages``
counts hot-list pages too (2.6.11's zone->free_pages does not), so "can this zone serve" sees them.
Buddies pair by absolute pfn; ``mem_map.compute_layout`` insists zones start on a max-order
boundary, where that is the same as the kernel's zone-relative pairing.

Zone choice walks the zonelist and takes the first zone that can serve the request; there are no
watermarks or reclaim: a request no zone can serve is an allocation failure.

The paper's change to this file (the ``unmapped`` policy, s4.3) is here too: ``__alloc_pages``
maps a block allocated without the highmem flag into the kernel window and the free paths
(``__free_pages_ok``, ``free_hot_cold_page``) unmap it (``alloc_pages_mapped``,
``free_pages_mapped``). The window is accounted by page count only (see ``core.policy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.events import MAX_ORDER
from core.mem_map import MemMap, PG_alloc, PG_buddy, PG_mapped, PG_pcp, Zone

if TYPE_CHECKING:
    from core.kernel import Kernel


def expand(mm: MemMap, zone: Zone, pfn: int, low: int, high: int) -> None:
    """Split the block at ``pfn`` from order ``high`` down to ``low``, freeing the upper halves."""
    while high > low:
        high -= 1
        half = pfn + (1 << high)
        mm.page_flags[half] |= PG_buddy
        mm.page_order[half] = high
        zone.free_area[high][half] = None


def rmqueue(mm: MemMap, zone: Zone, order: int) -> int:
    """__rmqueue: the head of the smallest free block of order >= ``order``, split to fit; -1 if none."""
    for current in range(order, MAX_ORDER):
        area = zone.free_area[current]
        if area:
            pfn, _ = area.popitem()
            mm.page_flags[pfn] &= 0xFF ^ PG_buddy
            expand(mm, zone, pfn, order, current)
            mm.page_order[pfn] = order
            return pfn
    return -1


def free_one_page(mm: MemMap, zone: Zone, pfn: int, order: int) -> None:
    """__free_one_page: merge with free buddies of equal order while they exist, then list the block."""
    while order < MAX_ORDER - 1:
        buddy = pfn ^ (1 << order)
        if not (zone.start <= buddy < zone.end):
            break
        if not (mm.page_flags[buddy] & PG_buddy) or mm.page_order[buddy] != order:
            break
        del zone.free_area[order][buddy]
        mm.page_flags[buddy] &= 0xFF ^ PG_buddy
        mm.page_order[buddy] = -1
        mm.page_order[pfn] = -1
        pfn &= ~(1 << order)
        order += 1
    mm.page_flags[pfn] |= PG_buddy
    mm.page_order[pfn] = order
    zone.free_area[order][pfn] = None


def smallest_block(zone: Zone) -> int:
    """The order of the smallest nonempty free list, or -1."""
    for order in range(MAX_ORDER):
        if zone.free_area[order]:
            return order
    return -1


def pcp_refill(mm: MemMap, zone: Zone) -> bool:
    """Move the smallest free buddy block, whole, onto the empty hot list, lowest frame on top."""
    order = smallest_block(zone)
    if order < 0:
        return False
    pfn, _ = zone.free_area[order].popitem()
    mm.page_flags[pfn] &= 0xFF ^ PG_buddy
    mm.page_order[pfn] = -1
    n = 1 << order
    base = zone.pcp_top
    zone.pcp_room(base + n)[base:base + n] = range(pfn + n - 1, pfn - 1, -1)
    mm.page_flags[pfn:pfn + n] |= PG_pcp
    zone.pcp_top += n
    return True


def pcp_pop(mm: MemMap, zone: Zone) -> int:
    """buffered_rmqueue for order 0: the hot list's top page, refilling from the buddy when empty."""
    if zone.pcp_top == 0 and not pcp_refill(mm, zone):
        return -1
    zone.pcp_top -= 1
    pfn = int(zone.pcp[zone.pcp_top])
    mm.page_flags[pfn] &= 0xFF ^ PG_pcp
    return pfn


def pcp_push(mm: MemMap, zone: Zone, pfn: int) -> None:
    """free_hot_cold_page: an order-0 page goes on top of the hot list."""
    zone.pcp_room(zone.pcp_top + 1)[zone.pcp_top] = pfn
    zone.pcp_top += 1
    mm.page_flags[pfn] |= PG_pcp


def drain_pcp(mm: MemMap, zone: Zone) -> None:
    """drain_all_pages: return the hot list to the buddy, top first, merging as the pages go."""
    while zone.pcp_top:
        zone.pcp_top -= 1
        pfn = int(zone.pcp[zone.pcp_top])
        mm.page_flags[pfn] &= 0xFF ^ PG_pcp
        free_one_page(mm, zone, pfn, 0)


def alloc_from_zone(mm: MemMap, zone: Zone, order: int) -> int:
    if zone.free_pages < 1 << order:
        return -1
    if order == 0:
        return pcp_pop(mm, zone)
    pfn = rmqueue(mm, zone, order)
    if pfn < 0 and zone.pcp_top:
        drain_pcp(mm, zone)
        pfn = rmqueue(mm, zone, order)
    return pfn


def alloc_pages(mm: MemMap, zonelist: tuple[int, ...], order: int) -> int:
    """__alloc_pages without reclaim: the first zone of ``zonelist`` that can serve; -1 on failure."""
    for index in zonelist:
        zone = mm.zones[index]
        pfn = alloc_from_zone(mm, zone, order)
        if pfn >= 0:
            zone.free_pages -= 1 << order
            mm.page_flags[pfn] |= PG_alloc
            mm.page_order[pfn] = order
            return pfn
    return -1


def free_pages(mm: MemMap, pfn: int) -> None:
    """__free_pages: order-0 pages to the hot list, larger blocks to the buddy."""
    zone = mm.zone_of(pfn)
    order = int(mm.page_order[pfn])
    mm.page_flags[pfn] &= 0xFF ^ PG_alloc
    mm.page_order[pfn] = -1
    zone.free_pages += 1 << order
    if order == 0:
        pcp_push(mm, zone, pfn)
    else:
        free_one_page(mm, zone, pfn, order)


# -- the unmapped policy: map on allocation, unmap on free (the paper, s4.3) -----------------------


def window_has_room(k: Kernel, gfp: int, order: int) -> bool:
    """Whether an allocation of class ``gfp`` may go to the zones: one that __alloc_pages maps
    needs 2**order free pages of the kernel window first (checked before any zone)."""
    return not k.maps_on_alloc[gfp] or k.window_used + (1 << order) <= k.window_pages


def map_on_alloc(k: Kernel, pfn: int) -> None:
    """__alloc_pages of the unmapped kernel: the block at ``pfn`` is mapped into the kernel window
    (PG_mapped on its head page; page_address works from here on)."""
    pages = 1 << int(k.mm.page_order[pfn])
    k.mm.page_flags[pfn] |= PG_mapped
    k.window_used += pages
    k.c.kernel_map_pages += pages


def unmap_on_free(k: Kernel, pfn: int) -> None:
    """__free_pages_ok / free_hot_cold_page of the unmapped kernel: a mapped block leaves the
    kernel window before the allocator takes it back, with one local invlpg on the freeing CPU
    (the other CPUs' entries go lazily, ``unmap_flush_batch``)."""
    if not k.mm.page_flags[pfn] & PG_mapped:
        return
    pages = 1 << int(k.mm.page_order[pfn])
    k.mm.page_flags[pfn] &= 0xFF ^ PG_mapped
    k.window_used -= pages
    k.c.kernel_unmap_pages += pages
    k.c.kernel_unmaps += 1
    k.c.tlb_flush_local += 1


def alloc_pages_mapped(k: Kernel, gfp: int, order: int) -> int:
    """__alloc_pages as the policy has it: the window check, the zones, then the mapping made
    for the kernel's own allocations; the pfn, or -1 on failure."""
    if not window_has_room(k, gfp, order):
        return -1
    pfn = alloc_pages(k.mm, k.zonelist[gfp], order)
    if pfn >= 0 and k.maps_on_alloc[gfp]:
        map_on_alloc(k, pfn)
    return pfn


def free_pages_mapped(k: Kernel, pfn: int) -> None:
    """__free_pages as the policy has it: unmap a mapped block, then give it back."""
    unmap_on_free(k, pfn)
    free_pages(k.mm, pfn)
