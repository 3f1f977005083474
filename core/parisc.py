"""The parisc side of every event: translations, kmap_kernel, flushes and the cache (scalar verbs).

Models arch/parisc of 2.6.11 (``stock``: arch/parisc/kernel/cache.c, include/asm-parisc/cacheflush.h
and page.h) and the paper's kernel (``unmapped``) on a virtually indexed machine. The cache verbs
carry the kernel's names: ``flush_kernel_dcache_page``, ``flush_user_dcache_page``,
``flush_dcache_page``, ``flush_tmpalias`` (later kernels' flush_dcache_page_asm), ``clear_user_page``,
``copy_user_page``, ``flush_cache_mm``, ``kmap_atomic``/``kunmap_atomic``. Per frame, on top of mem_map:

  user_colour   int16, colour of the frame's user translation (all of a page's user mappings are
                congruent: SHMLBA), or -1 when no process maps it
  kernel_colour int16, unmapped only: colour of the kernel translation made by __alloc_pages or by
                kmap (stock's translation is the offset map, at the physical colour), or -1
  kmap_count    int16, unmapped only: kmap users of a page that has no allocation mapping; a
                stream that holds more than KMAP_COUNT_MAX kmaps of one page is refused (a
                kernel's sleeping kmaps are a few per page; 32,767 is far past any workload's)

An access through a translation of colour x counts an **alias violation** when the frame's
translations (kernel, user, x) are not all equivalent: every translation here is writable, which
is what the PA8800 refuses (on the PA8700 the same count is harmless). The page-table walker and
DMA use physical addresses and are not translations.

What each event does is the policy's data: the switches in ``core.policy``. Event-level choices
where the kernel's behaviour needed a reading are documented in the verbs. ``K_KMAP_ATOMIC`` only
counts here: the transient mapping an access needs is made by the access itself (``kernel_access``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core import events as E
from core.cache import Cache
from core.errors import StreamError
from core.kmap_kernel import ColourPool
from core.machine import Machine
from core.mem_map import PG_mapped
from core.policy import Policy

if TYPE_CHECKING:
    from core.kernel import Kernel

FREE_TEARDOWN = 1  # K_FREE order: the page goes with an address space torn down (exit, exec)
IO_TO_DEVICE = 1  # K_IO order: 0 = device -> memory (a read from disk), 1 = memory -> device
COPY_INTO_PAGE = 1  # K_COPY order: 0 = the kernel reads the page (copy_to_user), 1 = it writes it
KMAP_COUNT_MAX = np.iinfo(np.int16).max  # kmaps of one page held at once (kmap_count's dtype)


def kmap_overflow(pfn: int) -> str:
    return f"page {pfn} kmapped more than {KMAP_COUNT_MAX} times at once (kunmap the ones held)"


def tlb_entries(order: int | np.ndarray, variable_pages: bool) -> int | np.ndarray:
    """TLB entries covering a 2**order-page block (an int or an array of them): with PA 2.0's
    power-of-4 page sizes the fewest is one (even order) or two (odd order); with 4 KiB pages only,
    one per page."""
    if not variable_pages:
        return np.left_shift(1, order)
    return 1 + np.bitwise_and(order, 1)


class PariscState:
    """Everything a virtually indexed machine adds to ``Kernel``."""

    def __init__(self, machine: Machine, policy: Policy) -> None:
        frames, colours = machine.frames, machine.colours
        self.colours = colours
        self.user_colour = np.full(frames, -1, dtype=np.int16)
        self.kernel_colour = np.full(frames, -1, dtype=np.int16)
        self.kmap_count = np.zeros(frames, dtype=np.int16)
        self.cache = Cache(frames, colours)
        # the window's rows of slots, split between the pools (policy checks there are two or more)
        rows = policy.kernel_window // machine.congruence_stride if policy.map_on_alloc else 2
        kmap_rows = min(max(int(rows * policy.unmapped_kmap_share), 1), rows - 1)
        self.kmaps = ColourPool(colours, kmap_rows)  # kmap and transient mappings
        self.allocs = ColourPool(colours, rows - kmap_rows)  # mappings made by __alloc_pages

    @property
    def exhaustions(self) -> int:
        return self.kmaps.exhaustions + self.allocs.exhaustions


# -- translations ---------------------------------------------------------------------------------


def kernel_translation(k: Kernel, pfn: int) -> int:
    """Colour of the frame's kernel translation now, or -1."""
    if k.policy.offset_maps_lowmem:
        return pfn % k.vi.colours
    return int(k.vi.kernel_colour[pfn])


def access(k: Kernel, pfn: int, colour: int, write: bool) -> None:
    """A CPU load or store through a translation of ``colour``."""
    vi = k.vi
    translations = {kernel_translation(k, pfn), int(vi.user_colour[pfn]), colour}
    translations.discard(-1)
    if len(translations) > 1:
        k.c.alias_violations += 1
    (vi.cache.write if write else vi.cache.read)(pfn, colour)


# -- the cache flushes (arch/parisc/kernel/cache.c, asm/cacheflush.h) ------------------------------


def _flush_page(k: Kernel, pfn: int, colour: int, io: bool) -> None:
    """The fdc loop over one page at one colour: what every page flush below comes down to."""
    k.vi.cache.flush_page(pfn, colour)
    k.c.cache_flush_page += 1
    k.c.io_flushes += io


def flush_kernel_dcache_page(k: Kernel, pfn: int, colour: int, io: bool = False) -> None:
    """flush_kernel_dcache_page: the page through a kernel mapping of ``colour`` (its kernel
    address, a kmap slot or a transient mapping; for DMA, dma_map's flush_kernel_dcache_range)."""
    _flush_page(k, pfn, colour, io)


def flush_user_dcache_page(k: Kernel, pfn: int, io: bool = False) -> None:
    """flush_cache_page / flush_user_dcache_page: the page through its user mapping (all of a
    page's user mappings are congruent, so one colour covers them)."""
    _flush_page(k, pfn, int(k.vi.user_colour[pfn]), io)


def flush_dcache_page(k: Kernel, pfn: int, colour: int, io: bool = False) -> None:
    """flush_dcache_page: the kernel and user aliases of a page-cache page the kernel touches
    through ``colour``, in the kernel's order: its own alias first, then the user's (so where a
    page was stored to through both, an alias violation, the user's lines reach memory last)."""
    flush_kernel_dcache_page(k, pfn, colour, io)
    flush_user_dcache_page(k, pfn, io)


def flush_tmpalias(k: Kernel, pfn: int) -> None:
    """The tmpalias flush (later kernels' flush_dcache_page_asm, pacache.S): the kernel maps the
    page at a temporary alias congruent with the user address and flushes it there, which needs
    no user mapping: the paper's flush of a freed user page."""
    k.vi.cache.flush_page(pfn, int(k.vi.user_colour[pfn]))
    k.c.cache_flush_tmpalias += 1


def flush_cache_mm(k: Kernel) -> None:
    """flush_cache_mm on fork, exec and exit: flush_cache_all in 2.6.11's cacheflush.h, the stock
    policy's cost; a kernel that flushes user pages on free (``flush_on_free``) needs none."""
    if not k.policy.flush_on_free:
        k.vi.cache.flush_all()
        k.c.cache_flush_all += 1


# -- kernel mappings: kmap_kernel and kmap_atomic ----------------------------------------------------


def kmap_want(k: Kernel, pfn: int) -> int:
    """The colour kmap_kernel looks for: the user's (congruent), else the page's equivalent colour
    when its lines are left for later (defer_dcache_flush), else any (-1: the bucket counter)."""
    u = int(k.vi.user_colour[pfn])
    if u >= 0:
        return u if k.policy.congruent_kmap else -1
    return pfn % k.vi.colours if k.policy.defer_dcache_flush else -1


def deferred(k: Kernel, pfn: int, colour: int) -> bool:
    """Lines a kunmap may leave (2.6's PG_dcache_dirty): a page no process maps, at its equivalent
    colour, where every later kernel mapping and the DMA coherence index will find them, and where
    clear_user_page purges them when the frame next becomes a user page (as stock's offset map
    does: the data of a freed page is dead, so a free needs no flush)."""
    return k.policy.defer_dcache_flush and k.vi.user_colour[pfn] < 0 and colour == pfn % k.vi.colours


def kmap_atomic(k: Kernel, pfn: int) -> int:
    """kmap_atomic for a page with no kernel translation: congruent with the user if it can be."""
    k.c.kmap_atomic_maps += 1
    k.c.tlb_flush_local += 1  # the purge when it is unmapped
    return k.vi.kmaps.peek(kmap_want(k, pfn))


def kunmap_atomic(k: Kernel, pfn: int, colour: int, io: bool = False) -> None:
    """kunmap_atomic: a mapping not congruent with the user's leaves lines nobody else can reach,
    unless they are left where the next user of the page will look (``deferred``)."""
    if colour != k.vi.user_colour[pfn] and not deferred(k, pfn, colour):
        flush_kernel_dcache_page(k, pfn, colour, io)


def kernel_colour(k: Kernel, pfn: int) -> tuple[int, bool]:
    """The colour the kernel reaches the page through: its translation, else a kmap_atomic made
    for the access (True: the caller must kunmap_atomic it)."""
    colour = kernel_translation(k, pfn)
    if colour >= 0:
        return colour, False
    return kmap_atomic(k, pfn), True


def kernel_access(k: Kernel, pfn: int, write: bool) -> None:
    """The kernel touches a page: through its translation, or a transient mapping made for it."""
    colour, transient = kernel_colour(k, pfn)
    access(k, pfn, colour, write)
    if transient:
        kunmap_atomic(k, pfn, colour)


def kmap(k: Kernel, pfn: int) -> None:
    """kmap_kernel: the first kmap of a page without a translation takes a slot."""
    vi = k.vi
    if kernel_translation(k, pfn) >= 0 and not vi.kmap_count[pfn]:
        return  # offset-mapped or mapped by __alloc_pages
    if vi.kmap_count[pfn] == KMAP_COUNT_MAX:
        raise StreamError(kmap_overflow(pfn))
    vi.kmap_count[pfn] += 1
    if vi.kmap_count[pfn] == 1:
        vi.kernel_colour[pfn] = vi.kmaps.get(kmap_want(k, pfn))


def kunmap(k: Kernel, pfn: int, handle: int) -> None:
    """kunmap_kernel: the last kunmap gives the slot back, purges its TLB entry, and flushes
    the page there as kunmap_atomic does."""
    vi = k.vi
    if not vi.kmap_count[pfn]:
        if kernel_translation(k, pfn) >= 0:
            return
        raise StreamError(f"kunmap of handle {handle}, which is not kmapped")
    vi.kmap_count[pfn] -= 1
    if not vi.kmap_count[pfn]:
        colour = int(vi.kernel_colour[pfn])
        vi.kmaps.put(colour)
        vi.kernel_colour[pfn] = -1
        k.c.tlb_flush_local += 1
        kunmap_atomic(k, pfn, colour)


# -- event verbs (after the generic allocator verbs have run) --------------------------------------


def clear_user_page(k: Kernel, pfn: int, addr: int) -> None:
    """clear_user_page for a new anonymous page: purge the kernel alias where the old owner's lines
    may be (purge_kernel_dcache_page), then zero the page through tmpalias at the user's colour."""
    vi = k.vi
    u = addr % vi.colours
    vi.user_colour[pfn] = u
    kcol = kernel_translation(k, pfn)
    if kcol < 0 and k.policy.defer_dcache_flush:  # where kunmaps may have left the old owner's lines
        kcol = pfn % vi.colours
    if kcol >= 0 and kcol != u:
        vi.cache.purge_page(pfn, kcol)
        k.c.cache_flush_page += 1
    access(k, pfn, u, write=True)


def after_alloc(k: Kernel, kind: int, pfn: int, order: int, addr: int) -> None:
    """A new block's translations: a user page's (zeroed by clear_user_page), a page-cache page's
    user address, or the kernel window's mapping __alloc_pages made (``page_alloc.map_on_alloc``)."""
    vi, p = k.vi, k.policy
    if kind == E.K_ALLOC_ANON:
        clear_user_page(k, pfn, addr)
    elif kind == E.K_ALLOC_PAGECACHE:
        if addr:
            vi.user_colour[pfn] = addr % vi.colours
    elif k.mm.page_flags[pfn] & PG_mapped:
        equivalent = p.equivalent_kernel and kind in (E.K_ALLOC_STACK, E.K_ALLOC_PGTABLE)
        vi.kernel_colour[pfn] = vi.allocs.get(pfn % vi.colours if equivalent else -1, 1 << order)
        k.c.tlb_entries_used += int(tlb_entries(order, p.variable_pages))


def before_free(k: Kernel, pfn: int, handle: int, teardown: bool) -> None:
    """User pages: flush on free through tmpalias (unmapped) or munmap's flush_cache_range (stock,
    except when the whole address space went with flush_cache_mm). Kernel mappings: flushed and
    given back before ``page_alloc.unmap_on_free`` unmaps the page."""
    vi = k.vi
    if vi.kmap_count[pfn]:
        raise StreamError(f"free of handle {handle} while it is kmapped")
    if vi.user_colour[pfn] >= 0:
        if k.policy.flush_on_free:
            flush_tmpalias(k, pfn)
        elif not teardown:
            flush_user_dcache_page(k, pfn)
        vi.user_colour[pfn] = -1
    if k.mm.page_flags[pfn] & PG_mapped:
        colour = int(vi.kernel_colour[pfn])
        flush_kernel_dcache_page(k, pfn, colour)
        vi.allocs.put(colour, 1 << int(k.mm.page_order[pfn]))
        vi.kernel_colour[pfn] = -1


def filemap_copy(k: Kernel, pfn: int, into: bool) -> None:
    """file_read_actor's copy_to_user from the page (into=False) or generic_file_buffered_write's
    copy_from_user into it. When the kernel's colour is not the user's, the read is preceded by
    flush_dcache_page: the kernel's alias first (its stale copy is dropped), then the user's (the
    user's stores reach memory, and reach it last); the write is preceded by the user half and
    followed by the kernel half (its stores reach memory after they are made). A congruent kernel
    mapping needs none of it: the lines are the user's."""
    colour, transient = kernel_colour(k, pfn)
    u = int(k.vi.user_colour[pfn])
    coherent = u >= 0 and colour != u and k.policy.flush_dcache_page
    if coherent and not into:
        flush_dcache_page(k, pfn, colour)
    elif coherent:
        flush_user_dcache_page(k, pfn)
    access(k, pfn, colour, into)
    if coherent and into:
        flush_kernel_dcache_page(k, pfn, colour)
    if transient:
        kunmap_atomic(k, pfn, colour)


def copy_user_page(k: Kernel, pfn: int) -> None:
    """copy_user_page's source, for do_wp_page (the copy's destination is the K_ALLOC_ANON before
    it, written at the user's colour through tmpalias). Stock reads through the offset map and
    relies on fork's flush_cache_mm to have written the user's dirty lines back. A kernel that
    flushes on free has no such flush, so when it reads through a colour not the user's it must
    flush the user's colour first (flush_cache_page): congruent, it reads the user's own lines."""
    colour, transient = kernel_colour(k, pfn)
    u = int(k.vi.user_colour[pfn])
    if k.policy.flush_on_free and u >= 0 and colour != u:
        flush_user_dcache_page(k, pfn)
    access(k, pfn, colour, write=False)
    if transient:
        kunmap_atomic(k, pfn, colour)


def user_access(k: Kernel, pfn: int, write: bool) -> None:
    """A user load or store. A page the process does not map (a stream naming a kernel page) is
    reached at its physical colour, as a process would through an equivalent mapping."""
    u = int(k.vi.user_colour[pfn])
    access(k, pfn, u if u >= 0 else pfn % k.vi.colours, write)


def pte_update(k: Kernel, pfn: int) -> None:
    """The kernel writes a PTE; the TLB miss handler reads it in absolute mode, i.e. through the
    physical (equivalent) colour. Safe only if the kernel's translation is equivalent."""
    kernel_access(k, pfn, write=True)
    k.vi.cache.read(pfn, pfn % k.vi.colours)


def io(k: Kernel, pfn: int, to_device: bool) -> None:
    """One page of DMA. The coherence index is the user's colour (unmapped) or the kernel's
    (stock, which makes the user colour coherent first: flush_dcache_page at the index)."""
    vi, p = k.vi, k.policy
    u = int(vi.user_colour[pfn])
    transient = -1
    user_index = p.user_coherence_index and u >= 0
    if user_index:
        index = u
    else:
        index = kernel_translation(k, pfn)
        if index < 0 and not p.user_coherence_index:  # the kernel maps it to learn an index
            index = transient = kmap_atomic(k, pfn)
        elif index < 0 and p.defer_dcache_flush and u < 0:  # where the kunmaps left its lines
            index = pfn % vi.colours
    if not user_index and u >= 0 and p.flush_dcache_page:  # (then the index is the kernel's)
        flush_dcache_page(k, pfn, index, io=True)
    elif index >= 0:
        flush_kernel_dcache_page(k, pfn, index, io=True)
    if to_device:
        vi.cache.device_read(pfn)
    else:
        vi.cache.dma_write(pfn, index)
    if transient >= 0:
        kunmap_atomic(k, pfn, transient, io=True)
