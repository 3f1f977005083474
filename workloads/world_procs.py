"""Processes and their address spaces in the generators' world (after Linux 2.6.11's
kernel/fork.c, fs/exec.c, kernel/exit.c and mm/memory.c): fork, exec and exit, a private page
unmapped and faulted back, and a process's loads and stores of its own pages and the shm.

A *process slot* holds a kernel stack, its PTE pages and ``anon_pages`` private pages at a heap
base of its own (``world_layout``); a fork/exec in the slot tears the old process down (teardown
frees, flag 1) and builds the new one in the same handles, so the number of processes never
changes. Simplified: task_structs come from a slab that keeps its pages (a real slab rarely
frees a page on a fork or an exit), so they are not churned; one process exits for each that
forks, the child's copy-on-write pages are its first ``cow_pages`` private pages, and a fault
goes through the slot's last PTE page, whichever page it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core import events as E
from workloads.episodes import TOUCH, WIDTH
from workloads.world_layout import Layout

if TYPE_CHECKING:
    from workloads.world import Episodes


def fork_template(lay: Layout, stack_order: int, teardown: bool) -> tuple[np.ndarray, ...]:
    """A fork+exec in one slot: kinds, handle offsets in the slot, orders/flags and user-page
    offsets (-1: no address). With ``teardown`` the slot's process forks (copy_page_range copies
    a PTE for each page it maps: K_FORK's addr), the child writes ``cow_pages`` of its pages
    before it execs (each a fault, a new page and do_wp_page's copy), execs (its copies go with
    the old mm), and the parent exits; the child's new program then faults ``exec_pages`` pages
    of its cached binary (a kernel entry and a PTE write each) and zeroes its private pages. At
    boot (no ``teardown``) init's children fork with nothing to copy."""
    k: list[int] = []
    h: list[int] = []
    o: list[int] = []
    a: list[int] = []

    def add(kind: int, off: int = -1, order: int = 0, addr: int = -1) -> None:
        k.append(kind)
        h.append(off)
        o.append(order)
        a.append(addr)

    anon0, ptes = 1 + lay.ptes, range(1, 1 + lay.ptes)
    cow0 = anon0 + lay.anon
    if teardown:
        # every process maps its private pages, the whole shm and the shared file: 2.6.11's
        # copy_page_range copies the PTEs of shared mappings too (addr: a count here)
        add(E.K_FORK, addr=lay.anon + lay.shm + lay.mapped)
        for j in range(lay.cow):
            add(E.K_ALLOC_ANON, cow0 + j, 0, j)  # the write fault: a new page at the same address
            add(E.K_COW, anon0 + j)  # copy_user_highpage from the parent's page ...
            add(E.K_KMAP_ATOMIC, cow0 + j)  # ... into the new one, through a fixmap slot
            add(E.K_PTE_UPDATE, lay.ptes)
        add(E.K_EXEC)
        for j in range(lay.cow):
            add(E.K_FREE, cow0 + j, 1)  # the child's old mm goes with exec
        add(E.K_EXIT)
        for j in range(lay.anon):
            add(E.K_FREE, anon0 + j, 1)  # torn down with the address space
        for pte in ptes:
            add(E.K_PTE_UPDATE, pte)
            add(E.K_FREE, pte)
        add(E.K_FREE, 0)
    else:
        add(E.K_FORK)
    add(E.K_ALLOC_STACK, 0, stack_order)
    if not teardown:
        add(E.K_EXEC)
    for pte in ptes:
        add(E.K_ALLOC_PGTABLE, pte)
        add(E.K_PTE_UPDATE, pte)
    if teardown:
        for _ in range(lay.exec_pages):
            add(E.K_SYSCALL)  # a minor fault on a text page of the cached binary ...
            add(E.K_PTE_UPDATE, lay.ptes)  # ... mapped by one PTE write
    for j in range(lay.anon):
        add(E.K_ALLOC_ANON, anon0 + j, 0, j)
        add(E.K_KMAP_ATOMIC, anon0 + j)  # clear_user_highpage zeroes it through a fixmap slot
        add(E.K_PTE_UPDATE, lay.ptes)
    return tuple(np.array(x, dtype=np.int64) for x in (k, h, o, a))


def churn(e: Episodes, span: int) -> None:
    """churn episodes: the world's fork template (``World.churn_t``) written into each one's
    ``span`` rows, at its slot's handles and heap."""
    ep = e.of("churn")
    if not ep.size:
        return
    k, h, o, a = e.w.churn_t
    width = span * WIDTH
    kind = np.full(width, -1, dtype=np.int64)
    kind[1:1 + k.size] = k
    off = np.zeros(width, dtype=np.int64)
    off[1:1 + k.size] = h
    order = np.zeros(width, dtype=np.int64)
    order[1:1 + k.size] = o
    aoff = np.full(width, -1, dtype=np.int64)
    aoff[1:1 + k.size] = a
    s = e.slot[ep]
    handle = np.where(off >= 0, e.lay.slot_base(s)[:, None] + off, 0)
    # user pages at the slot's heap (no ASLR in 2.6); a fork's addr is its PTE count, not a page
    addr = np.where(aoff >= 0, np.where(kind == E.K_FORK, 0, e.w.heap[s][:, None]) + aoff, 0)
    e.g.put_flat(e.g.first[ep], kind, handle, order, addr, np.broadcast_to(e.cpu[ep][:, None], (ep.size, width)))


def fault(e: Episodes) -> None:
    """fault episodes: munmap of a private page, then a fault that brings a new one, zeroed."""
    ep = e.of("fault")
    if not ep.size:
        return
    g, lay = e.g, e.lay
    r, c, s = g.first[ep], e.cpu[ep], e.slot[ep]
    jj = e.rng.integers(lay.anon, size=ep.size)
    h, pte = lay.anon_handle(s, jj), lay.last_pte(s)
    g.put(r, 1, E.K_FREE, h, cpu=c)
    g.put(r, 2, E.K_PTE_UPDATE, pte, cpu=c)
    g.put(r, 3, E.K_ALLOC_ANON, h, addr=e.w.heap[s] + jj, cpu=c)
    g.put(r, 4, E.K_KMAP_ATOMIC, h, cpu=c)
    g.put(r, 5, E.K_PTE_UPDATE, pte, cpu=c)


def touch(e: Episodes) -> None:
    """A user load or store by each episode's process (``touch_rate``), in the last row's
    reserved slot: one of its private pages or a page of the shm, each as likely when it has both."""
    p, lay, g = e.p, e.lay, e.g
    n = e.typ.size
    u = e.rng.random((n, 4))  # touch or not, own page or shm, which page, store or load
    on = u[:, 0] < p["touch_rate"]
    if not on.any() or not (lay.anon or lay.shm):
        return
    own = (u[:, 1] < 0.5) if (lay.anon and lay.shm) else np.full(n, bool(lay.anon))
    anon = lay.anon_handle(e.slot, (u[:, 2] * max(lay.anon, 1)).astype(np.int64))
    shm = lay.base["shm"] + (u[:, 2] * max(lay.shm, 1)).astype(np.int64)
    store = (u[:, 3] < p["store_fraction"]).astype(np.uint8)
    g.put(g.last, TOUCH, E.K_USER, np.where(own, anon, shm), order=store, cpu=e.cpu, where=on)
