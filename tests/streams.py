"""Valid random event streams for differential and property tests.

``interpret`` turns a list of (op, a, b) integer triples (what hypothesis draws and shrinks) into
a valid stream: allocations go to free handles, frees and kmaps to live ones, kunmaps only to
handles this interpreter kmapped. Allocations may still fail inside the kernel; the kernel skips
later operations on such handles, which the streams exercise too.
"""

from __future__ import annotations

import numpy as np

from core import events as E
from core.events import EVENT, Stream

ALLOC_KINDS = (E.K_ALLOC_ANON, E.K_ALLOC_PAGECACHE, E.K_ALLOC_SLAB, E.K_ALLOC_STACK, E.K_ALLOC_PGTABLE)
PLAIN = (E.K_SYSCALL, E.K_FORK, E.K_EXEC, E.K_EXIT)
TOUCH = (E.K_KMAP_ATOMIC, E.K_PTE_UPDATE, E.K_IO, E.K_COPY, E.K_USER)
NOPS = 6


def interpret(ops: list[tuple[int, int, int]], max_handles: int, cpus: int = 2,
              max_order: int = 3) -> np.ndarray:
    rows = []
    live: list[int] = []
    free = list(range(max_handles - 1, -1, -1))
    kmapped: dict[int, int] = {}
    for op, a, b in ops:
        op %= NOPS
        cpu = b % cpus
        if op in (0, 1) and free:  # allocate (twice as likely as anything else)
            h = free.pop()
            kind = ALLOC_KINDS[a % len(ALLOC_KINDS)]
            order = 0 if (b % 4) else (a // 7) % (max_order + 1)
            if kind == E.K_ALLOC_STACK:
                order = 1
            rows.append((kind, order, cpu, h, a % 4096))
            live.append(h)
        elif op == 2 and live:  # free a handle nobody holds kmapped
            h = live[a % len(live)]
            if h in kmapped:
                continue
            live.remove(h)
            free.append(h)
            rows.append((E.K_FREE, (a >> 4) & 1, cpu, h, 0))  # 1: a teardown free
        elif op == 3 and live:  # kmap
            h = live[a % len(live)]
            kmapped[h] = kmapped.get(h, 0) + 1
            rows.append((E.K_KMAP, 0, cpu, h, 0))
        elif op == 4 and kmapped:  # kunmap
            h = list(kmapped)[a % len(kmapped)]
            kmapped[h] -= 1
            if not kmapped[h]:
                del kmapped[h]
            rows.append((E.K_KUNMAP, 0, cpu, h, 0))
        elif op == 5:
            if live and b % 2:
                kind = TOUCH[a % len(TOUCH)]
                flag = (a >> 4) & 1 if E.HAS_FLAG[kind] else 0  # direction of io, copy, user access
                rows.append((kind, flag, cpu, live[a % len(live)], 0))
            else:
                rows.append((PLAIN[a % len(PLAIN)], 0, cpu, -1, 0))
    return np.array(rows, dtype=EVENT)


def batched(events: np.ndarray, cuts: list[int], max_handles: int) -> Stream:
    """The events split at the given cut points (batch boundaries are part of what is tested)."""
    points = sorted({c % (events.size + 1) for c in cuts})
    parts = np.split(events, points) if events.size else [events]
    return Stream([p for p in parts if p.size], max_handles, source="test")


def random_ops(rng: np.random.Generator, n: int, weights: tuple[float, ...] | None = None) -> list:
    w = np.array(weights or (1, 1, 1.6, 0.6, 0.6, 1.0), dtype=float)
    ops = rng.choice(NOPS, size=n, p=w / w.sum())
    ab = rng.integers(0, 1 << 20, size=(n, 2))
    return [(int(o), int(a), int(b)) for o, (a, b) in zip(ops, ab, strict=True)]


# -- process-shaped streams: what a well-behaved kernel's users do --------------------------------

SHM_BASE = 1 << 18  # attach address of the shared segment, in pages: SHMLBA-aligned
NPROC_OPS = 8


class _Procs:
    """The state ``processes`` keeps: processes with private pages, a shared segment, a page cache."""

    def __init__(self, max_handles: int, shm_pages: int) -> None:
        self.rows: list[tuple] = []
        self.free = list(range(max_handles - 1, -1, -1))
        self.procs: list[dict] = []
        self.cache: list[int] = []
        self.shm = [self.get() for _ in range(shm_pages)]
        for i, h in enumerate(self.shm):
            self.add(E.K_ALLOC_PAGECACHE, h, addr=SHM_BASE + i)
            self.add(E.K_USER, h, flag=1)  # the creator fills it

    def get(self) -> int:
        return self.free.pop()

    def add(self, kind: int, handle: int = -1, flag: int = 0, cpu: int = 0, addr: int = 0) -> None:
        self.rows.append((kind, flag, cpu, handle, addr))

    def fork(self, a: int, cpu: int) -> None:
        self.add(E.K_FORK, cpu=cpu)
        stack, pte = self.get(), self.get()
        self.rows.append((E.K_ALLOC_STACK, 1, cpu, stack, 0))
        self.add(E.K_EXEC, cpu=cpu)
        self.add(E.K_ALLOC_PGTABLE, pte, cpu=cpu)
        self.add(E.K_PTE_UPDATE, pte, cpu=cpu)
        self.procs.append({"cpu": cpu, "heap": a % 4096, "anon": [], "stack": stack, "pte": pte})

    def exit(self, p: dict) -> None:
        cpu = p["cpu"]
        self.add(E.K_EXIT, cpu=cpu)
        for h in p["anon"]:
            self.add(E.K_FREE, h, flag=1, cpu=cpu)  # torn down with the address space
        for h in p["anon"] + [p["stack"], p["pte"]]:
            if h not in p["anon"]:
                self.add(E.K_FREE, h, cpu=cpu)
            self.free.append(h)
        self.procs.remove(p)


def processes(ops: list[tuple[int, int, int]], max_handles: int = 96, cpus: int = 2,
              shm_pages: int = 4) -> np.ndarray:
    """A stream in which every page is used as a kernel's users use it: private pages are faulted
    in, touched, unmapped or torn down after exit; file pages are read from disk before they are
    copied out, written back after they are copied into; the shared segment is mapped by all.
    ``ops`` are (op, a, b) triples as for ``interpret``."""
    s = _Procs(max_handles, shm_pages)
    for op, a, b in ops:
        op %= NPROC_OPS
        cpu = b % cpus
        if op == 0 or not s.procs:
            if len(s.procs) < 6 and len(s.free) > 8:
                s.fork(a, cpu)
            continue
        p = s.procs[a % len(s.procs)]
        cpu = p["cpu"]
        if op == 1 and len(s.free) > 8:  # page fault
            h = s.get()
            s.add(E.K_ALLOC_ANON, h, cpu=cpu, addr=p["heap"] + len(p["anon"]) + 1)
            p["anon"].append(h)
        elif op == 2:  # load or store by the process
            pages = p["anon"] + s.shm
            s.add(E.K_USER, pages[b % len(pages)], flag=(a >> 3) & 1, cpu=cpu)
        elif op == 3:  # read(): from the page cache, or O_DIRECT into a private page
            if p["anon"] and b % 3 == 0:
                s.add(E.K_IO, p["anon"][a % len(p["anon"])], cpu=cpu)
            else:
                page = _file_page(s, a, cpu)
                if page is not None:
                    kmap = b % 4 == 1
                    s.add(E.K_KMAP if kmap else E.K_KMAP_ATOMIC, page, cpu=cpu)
                    s.add(E.K_COPY, page, cpu=cpu)
                    if kmap:
                        s.add(E.K_KUNMAP, page, cpu=cpu)
            if p["anon"]:
                s.add(E.K_USER, p["anon"][b % len(p["anon"])], cpu=cpu)
        elif op == 4:  # write(): into the page cache or the shared segment, then written back
            page = s.shm[a % len(s.shm)] if b % 2 else _file_page(s, a, cpu)
            if page is not None:
                s.add(E.K_COPY, page, flag=1, cpu=cpu)
                s.add(E.K_IO, page, flag=1, cpu=cpu)
        elif op == 5 and p["anon"]:  # munmap one private page
            h = p["anon"].pop(a % len(p["anon"]))
            s.add(E.K_FREE, h, cpu=cpu)
            s.free.append(h)
        elif op == 6:
            s.exit(p)
        elif op == 7 and s.cache:  # reclaim a file page
            h = s.cache.pop(a % len(s.cache))
            s.add(E.K_FREE, h, cpu=cpu)
            s.free.append(h)
    return np.array(s.rows, dtype=EVENT)


def _file_page(s: _Procs, a: int, cpu: int) -> int | None:
    """A page-cache page: a hit, or a miss read from disk first."""
    if s.cache and a % 3:
        return s.cache[a % len(s.cache)]
    if len(s.free) <= 8:
        return None
    h = s.get()
    s.add(E.K_ALLOC_PAGECACHE, h, cpu=cpu)
    s.add(E.K_IO, h, cpu=cpu)
    s.cache.append(h)
    return h
