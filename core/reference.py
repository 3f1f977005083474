"""The scalar reference engine: one event at a time, in stream order. The tests' oracle.

Every event goes through the kernel verbs directly: ``page_alloc`` (mm/page_alloc.c), ``highmem``
(mm/highmem.c) and, on a virtually indexed machine, ``parisc`` (arch/parisc), all of 2.6.11;
the time series are folded after every event. It is deliberately simple rather than fast: it is
the plainest statement of the semantics, and the fast engine must produce the identical record on
any stream. The fast engine falls back to these same steps for the parts it cannot batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core import events as E
from core import parisc
from core.errors import StreamError
from core.highmem import kmap_atomic, kmap_high, kunmap_high
from core.kernel import H_FAILED, H_FREE, Kernel
from core.page_alloc import alloc_pages_mapped, free_pages_mapped


def live_pfn(k: Kernel, handle: int, what: str) -> int:
    """The handle's pfn; -1 if its allocation failed (the op is skipped); error if it holds nothing."""
    pfn = int(k.handle_pfn[handle])
    if pfn == H_FAILED:
        k.c.ops_on_failed += 1
        return -1
    if pfn == H_FREE:
        raise StreamError(f"{what} of handle {handle}, which holds no page")
    return pfn


def do_alloc(k: Kernel, handle: int, order: int, gfp: int) -> None:
    """An allocation into ``handle``: ``page_alloc.alloc_pages_mapped`` (the zones and, under
    unmapped, the kernel window's mapping)."""
    c = k.c
    c.allocs += 1
    if k.handle_pfn[handle] >= 0:
        raise StreamError(f"allocation into handle {handle}, which already holds a page")
    pfn = alloc_pages_mapped(k, gfp, order)
    if pfn < 0:
        c.alloc_failures += 1
        k.handle_pfn[handle] = H_FAILED
        return
    k.handle_pfn[handle] = pfn


def do_free(k: Kernel, handle: int) -> None:
    """The free of ``handle``'s block: ``page_alloc.free_pages_mapped`` (unmapping it first)."""
    pfn = int(k.handle_pfn[handle])
    k.handle_pfn[handle] = H_FREE
    if pfn == H_FAILED:
        k.c.ops_on_failed += 1
        return
    if pfn == H_FREE:
        raise StreamError(f"free of handle {handle}, which holds no page")
    k.c.frees += 1
    free_pages_mapped(k, pfn)


def do_kmap(k: Kernel, handle: int) -> None:
    k.c.kmap_calls += 1
    pfn = live_pfn(k, handle, "kmap")
    if pfn >= 0 and not k.has_kernel_address(pfn):
        kmap_high(k.pk, handle, pfn)


def do_kunmap(k: Kernel, handle: int) -> None:
    pfn = live_pfn(k, handle, "kunmap")
    if pfn >= 0 and not k.has_kernel_address(pfn):
        kunmap_high(k.pk, handle, pfn)


def do_kmap_atomic(k: Kernel, handle: int, what: str = "kmap_atomic", maps: str = "kmap_atomic_maps") -> None:
    """kmap_atomic of the handle's page: one without a kernel address gets a fixmap PTE and one
    local invlpg (``highmem.kmap_atomic``), counted in ``maps``: the mapping's kmap type, the
    callers' KM_USER0/1 (``kmap_atomic_maps``) or pte_offset_map's KM_PTE0 (``pte_kmaps``)."""
    pfn = live_pfn(k, handle, what)
    if pfn >= 0 and kmap_atomic(k, pfn):
        setattr(k.c, maps, getattr(k.c, maps) + 1)


def _kmap_atomic(k: Kernel, handle: int) -> None:
    k.c.kmap_atomic_calls += 1
    do_kmap_atomic(k, handle)


def do_pte_update(k: Kernel, handle: int) -> None:
    """pte_offset_map: a PTE page without a kernel address is reached through kmap_atomic
    (KM_PTE0), counted as a PTE kmap rather than a caller's."""
    k.c.pte_updates += 1
    do_kmap_atomic(k, handle, "pte_update", "pte_kmaps")


def _count(name: str) -> Callable[[Kernel, np.void], None]:
    def step(k: Kernel, e: np.void) -> None:
        setattr(k.c, name, getattr(k.c, name) + 1)
    return step


def _with_handle(verb: Callable[[Kernel, int], None]) -> Callable[[Kernel, np.void], None]:
    return lambda k, e: verb(k, int(e["handle"]))


def _io(k: Kernel, e: np.void) -> None:
    k.c.io_requests += 1
    live_pfn(k, int(e["handle"]), "io")


def _copy(k: Kernel, e: np.void) -> None:
    k.c.page_copies += 1
    live_pfn(k, int(e["handle"]), "copy")


def _user(k: Kernel, e: np.void) -> None:
    k.c.user_accesses += 1
    live_pfn(k, int(e["handle"]), "user access")


def _fork(k: Kernel, e: np.void) -> None:
    k.c.forks += 1
    k.c.fork_ptes += int(e["addr"])


def do_cow(k: Kernel, handle: int) -> None:
    """copy_user_highpage's source: a page without a kernel address is mapped with kmap_atomic
    (the destination's mapping is the K_KMAP_ATOMIC the stream puts after its K_ALLOC_ANON)."""
    k.c.cow_copies += 1
    do_kmap_atomic(k, handle, "cow")


def _run(k: Kernel, e: np.void) -> None:
    k.c.user_ns += int(e["addr"])


def _alloc(k: Kernel, e: np.void) -> None:
    do_alloc(k, int(e["handle"]), int(e["order"]), int(E.GFP_OF_KIND[e["kind"]]))


STEPS: dict[int, Callable[[Kernel, np.void], None]] = {
    E.K_SYSCALL: lambda k, e: None,
    E.K_FORK: _fork,
    E.K_EXEC: _count("execs"),
    E.K_EXIT: _count("exits"),
    E.K_ALLOC_ANON: _alloc,
    E.K_ALLOC_PAGECACHE: _alloc,
    E.K_ALLOC_SLAB: _alloc,
    E.K_ALLOC_STACK: _alloc,
    E.K_ALLOC_PGTABLE: _alloc,
    E.K_FREE: _with_handle(do_free),
    E.K_KMAP: _with_handle(do_kmap),
    E.K_KUNMAP: _with_handle(do_kunmap),
    E.K_KMAP_ATOMIC: _with_handle(_kmap_atomic),
    E.K_PTE_UPDATE: _with_handle(do_pte_update),
    E.K_IO: _io,
    E.K_COPY: _copy,
    E.K_USER: _user,
    E.K_IRQ: _count("interrupts"),
    E.K_RUN: _run,
    E.K_COW: _with_handle(do_cow),
}


# -- virtually indexed machines: the same allocator, then core.parisc's verbs ----------------------


def _vi_alloc(k: Kernel, e: np.void) -> None:
    handle = int(e["handle"])
    _alloc(k, e)
    pfn = int(k.handle_pfn[handle])
    if pfn >= 0:
        parisc.after_alloc(k, int(e["kind"]), pfn, int(e["order"]), int(e["addr"]))


def _vi_free(k: Kernel, e: np.void) -> None:
    pfn = int(k.handle_pfn[int(e["handle"])])
    if pfn >= 0:
        parisc.before_free(k, pfn, int(e["handle"]), int(e["order"]) == parisc.FREE_TEARDOWN)
    do_free(k, int(e["handle"]))


def _vi_page(verb: Callable[[Kernel, int, np.void], None], counter: str | None = None,
             what: str = "op") -> Callable[[Kernel, np.void], None]:
    """An event on a page: count it, then run ``verb`` on the pfn unless its allocation failed."""
    def step(k: Kernel, e: np.void) -> None:
        if counter:
            setattr(k.c, counter, getattr(k.c, counter) + 1)
        pfn = live_pfn(k, int(e["handle"]), what)
        if pfn >= 0:
            verb(k, pfn, e)
    return step


def _vi_teardown(counter: str) -> Callable[[Kernel, np.void], None]:
    def step(k: Kernel, e: np.void) -> None:
        setattr(k.c, counter, getattr(k.c, counter) + 1)
        if counter == "forks":
            k.c.fork_ptes += int(e["addr"])
        parisc.flush_cache_mm(k)
    return step


VI_STEPS: dict[int, Callable[[Kernel, np.void], None]] = {
    **STEPS,
    E.K_FORK: _vi_teardown("forks"),
    E.K_EXEC: _vi_teardown("execs"),
    E.K_EXIT: _vi_teardown("exits"),
    **{kind: _vi_alloc for kind in (E.K_ALLOC_ANON, E.K_ALLOC_PAGECACHE, E.K_ALLOC_SLAB, E.K_ALLOC_STACK,
                                    E.K_ALLOC_PGTABLE)},
    E.K_FREE: _vi_free,
    E.K_KMAP: _vi_page(lambda k, pfn, e: parisc.kmap(k, pfn), "kmap_calls", "kmap"),
    E.K_KUNMAP: _vi_page(lambda k, pfn, e: parisc.kunmap(k, pfn, int(e["handle"])), None, "kunmap"),
    E.K_KMAP_ATOMIC: _vi_page(lambda k, pfn, e: None, "kmap_atomic_calls", "kmap_atomic"),
    E.K_PTE_UPDATE: _vi_page(lambda k, pfn, e: parisc.pte_update(k, pfn), "pte_updates", "pte_update"),
    E.K_IO: _vi_page(lambda k, pfn, e: parisc.io(k, pfn, int(e["order"]) == parisc.IO_TO_DEVICE),
                     "io_requests", "io"),
    E.K_COPY: _vi_page(lambda k, pfn, e: parisc.filemap_copy(k, pfn, int(e["order"]) == parisc.COPY_INTO_PAGE),
                       "page_copies", "copy"),
    E.K_USER: _vi_page(lambda k, pfn, e: parisc.user_access(k, pfn, int(e["order"]) == 1), "user_accesses",
                       "user access"),
    E.K_COW: _vi_page(lambda k, pfn, e: parisc.copy_user_page(k, pfn), "cow_copies", "cow"),
}


def step(k: Kernel, e: np.void) -> None:
    """One event: kernel entry accounting, the kind's verb, then the time series."""
    kind = int(e["kind"])
    if E.ENTERS_KERNEL[kind]:
        k.c.kernel_entries += 1
        k.c.tlb_flush_full += k.policy.cr3_reloads_per_entry
    (VI_STEPS if k.vi else STEPS)[kind](k, e)
    k.c.events += 1
    k.observe()


def run_batch(k: Kernel, batch: np.ndarray) -> None:
    for e in batch:
        step(k, e)
