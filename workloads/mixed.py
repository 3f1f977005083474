"""``mixed``: a moderate blend of what a busy 2.6-era server asks of its memory manager.

A shared segment (an SGA-style shm of ``shm`` bytes) mapped by every process, so each process
needs a PTE page per 2 MiB of it (PAE); process churn (fork, exec, exit with kernel stacks, task
structs and page tables); file reads through the page cache (DMA into a page-cache page, then a
copy to the user through kmap_atomic, or through a sleeping kmap held for a while); a dentry and
inode cache that grows with the files touched; anonymous faults; some reads are O_DIRECT (DMA
straight into a user buffer), some are writes (copy_from_user into the page cache, later written
back to disk); processes load from and store to their own pages and the shared segment.

User addresses matter on virtually indexed machines: the segment is attached at an SHMLBA-aligned
address, so shm page i has colour i mod the colour count; each process's private pages sit at a
page-aligned heap base of its own. Pages freed by exit go with an address space teardown (the
``K_FREE`` flag), pages freed while the process lives go by munmap. It is the built-in default
until the workloads issue brings the full set.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from core import events as E
from core.events import Stream
from core.units import GiB, MiB
from workloads.base import Batcher, HandlePool, Param, Workload, cut

PAGE = 4096
PTE_SPAN = 2 * MiB  # one PAE PTE page maps 512 x 4 KiB
SHM_BASE = 0x40000000 // PAGE  # shmat address, in pages: a multiple of SHMLBA (4 MiB) on every arch
HEAP_PAGES = 1 << 20  # private mappings start at a page of [0, 4 GiB) drawn per process

# objects per 4 KiB slab page (2.6.11 i386 object sizes, rounded)
PER_PAGE = {"dentry": 29, "inode": 7, "buffer_head": 78, "task_struct": 2}

PARAMS = (
    Param("events", 1_000_000, "stream length in events"),
    Param("processes", 192, "processes alive at once (192 mapping 1 GiB of shm need more PTE pages "
                            "than stock lowmem holds at 64 GB)"),
    Param("shm", 1 * GiB, "shared segment every process maps (PTE pages per process = shm / 2 MiB)", "size"),
    Param("anon_pages", 128, "private pages each process faults in at start"),
    Param("pagecache", 256 * MiB, "page cache size before reclaim frees the oldest pages", "size"),
    Param("miss_rate", 0.5, "fraction of file reads that miss the page cache", "float"),
    Param("new_file_rate", 0.3, "fraction of misses that open a new file (dentry + inode)", "float"),
    Param("kmap_fraction", 0.25, "fraction of user copies done under kmap rather than kmap_atomic", "float"),
    Param("kmap_hold", 64, "kmaps held at once by sleeping holders before the oldest is released"),
    Param("churn", 0.002, "per step, chance a process exits and a new one forks and execs", "float"),
    Param("direct_io", 0.1, "fraction of reads that DMA straight into the user's buffer (O_DIRECT)", "float"),
    Param("write_fraction", 0.2, "fraction of file operations that are writes (copy in, write back)", "float"),
    Param("touch_rate", 0.3, "per step, chance the process loads or stores one of its pages or the shm",
          "float"),
    Param("batch", 65536, "events per batch"),
)


class Slab:
    """A slab cache reduced to its page count: a page per PER_PAGE objects, freed when empty."""

    def __init__(self, name: str) -> None:
        self.per_page = PER_PAGE[name]
        self.objects = 0
        self.pages: list[int] = []

    def alloc(self, out: Batcher, handles: HandlePool, cpu: int) -> None:
        if self.objects == len(self.pages) * self.per_page:
            h = handles.get()
            self.pages.append(h)
            out.add(E.K_ALLOC_SLAB, h, cpu=cpu)
        self.objects += 1

    def free(self, out: Batcher, handles: HandlePool, cpu: int) -> None:
        self.objects -= 1
        if self.objects <= (len(self.pages) - 1) * self.per_page:
            h = self.pages.pop()
            out.add(E.K_FREE, h, cpu=cpu)
            handles.put(h)


class Mixed:
    """The generator's state: processes, caches and outstanding kmaps."""

    def __init__(self, p: dict[str, object], seed: int) -> None:
        self.p = p
        self.rng = np.random.default_rng(seed)
        self.out = Batcher(int(p["batch"]))
        self.handles = HandlePool(max_handles(p))
        self.slabs = {name: Slab(name) for name in PER_PAGE}
        self.procs: list[dict[str, object]] = []
        self.cache: deque[int] = deque()
        self.held: deque[int] = deque()
        self.held_set: dict[int, int] = {}
        self.shm_ptes = int(p["shm"]) // PTE_SPAN

    # -- processes -----------------------------------------------------------------------------

    def fork_exec(self, cpu: int) -> dict[str, object]:
        out, hp = self.out, self.handles
        out.add(E.K_FORK, cpu=cpu)
        self.slabs["task_struct"].alloc(out, hp, cpu)
        stack = hp.get()
        out.add(E.K_ALLOC_STACK, stack, order=int(self.p.get("stack_order", 1)), cpu=cpu)  # the machine's
        out.add(E.K_EXEC, cpu=cpu)
        anon = int(self.p["anon_pages"])
        ptes = [hp.get() for _ in range(self.shm_ptes + 1 + anon // 512)]
        for h in ptes:
            out.add(E.K_ALLOC_PGTABLE, h, cpu=cpu)
            out.add(E.K_PTE_UPDATE, h, cpu=cpu)
        proc = {"cpu": cpu, "stack": stack, "ptes": ptes, "anon": [], "heap": int(self.rng.integers(HEAP_PAGES))}
        for _ in range(anon):
            self.fault(proc)
        return proc

    def fault(self, proc: dict) -> None:
        h = self.handles.get()
        cpu = proc["cpu"]
        self.out.add(E.K_ALLOC_ANON, h, cpu=cpu, addr=proc["heap"] + len(proc["anon"]))
        self.out.add(E.K_KMAP_ATOMIC, h, cpu=cpu)  # clear_user_highpage zeroes it through a fixmap slot
        self.out.add(E.K_PTE_UPDATE, proc["ptes"][-1], cpu=cpu)
        proc["anon"].append(h)

    def exit(self, proc: dict) -> None:
        out, hp, cpu = self.out, self.handles, proc["cpu"]
        out.add(E.K_EXIT, cpu=cpu)
        for h in proc["anon"]:
            out.add(E.K_FREE, h, order=1, cpu=cpu)  # torn down with the address space
            hp.put(h)
        for h in proc["ptes"]:
            out.add(E.K_PTE_UPDATE, h, cpu=cpu)
            out.add(E.K_FREE, h, cpu=cpu)
            hp.put(h)
        out.add(E.K_FREE, proc["stack"], cpu=cpu)
        hp.put(proc["stack"])
        self.slabs["task_struct"].free(out, hp, cpu)

    # -- file reads ----------------------------------------------------------------------------

    def read(self, cpu: int, u: np.ndarray, proc: dict | None = None) -> None:
        out, hp, p = self.out, self.handles, self.p
        out.add(E.K_SYSCALL, cpu=cpu)
        if proc is not None and proc["anon"] and u[4] < p["direct_io"]:  # O_DIRECT into a user buffer
            buf = proc["anon"][int(u[5] * len(proc["anon"]))]
            out.add(E.K_IO, buf, order=int(u[6] < p["write_fraction"]), cpu=cpu)
            out.add(E.K_USER, buf, cpu=cpu)
            return
        if u[6] < p["write_fraction"] and self.cache:  # write(): copy into the page, write back
            page = self.cache[int(u[2] * len(self.cache))]
            out.add(E.K_KMAP_ATOMIC, page, cpu=cpu)
            out.add(E.K_COPY, page, order=1, cpu=cpu)
            out.add(E.K_IO, page, order=1, cpu=cpu)
            return
        if not self.cache or u[0] < p["miss_rate"]:
            page = hp.get()
            out.add(E.K_ALLOC_PAGECACHE, page, cpu=cpu)
            out.add(E.K_IO, page, cpu=cpu)
            self.slabs["buffer_head"].alloc(out, hp, cpu)
            if u[1] < p["new_file_rate"]:
                self.slabs["dentry"].alloc(out, hp, cpu)
                self.slabs["inode"].alloc(out, hp, cpu)
            self.reclaim(cpu)  # before the new page joins the cache, so it is never the one freed
            self.cache.append(page)
        else:
            page = self.cache[int(u[2] * len(self.cache))]
        if u[3] < p["kmap_fraction"]:
            self.kmap_copy(page, cpu)
        else:
            out.add(E.K_KMAP_ATOMIC, page, cpu=cpu)
            out.add(E.K_COPY, page, cpu=cpu)
        if proc is not None and proc["anon"]:  # the user reads what was copied into its buffer
            out.add(E.K_USER, proc["anon"][int(u[5] * len(proc["anon"]))], cpu=cpu)

    def kmap_copy(self, page: int, cpu: int) -> None:
        self.out.add(E.K_KMAP, page, cpu=cpu)
        self.out.add(E.K_COPY, page, cpu=cpu)
        self.held.append(page)
        self.held_set[page] = self.held_set.get(page, 0) + 1
        while len(self.held) > int(self.p["kmap_hold"]):
            old = self.held.popleft()
            self.out.add(E.K_KUNMAP, old, cpu=cpu)
            self.held_set[old] -= 1
            if not self.held_set[old]:
                del self.held_set[old]

    def reclaim(self, cpu: int) -> None:
        """Free the oldest page-cache pages beyond the target, skipping pages someone holds kmapped."""
        limit = int(self.p["pagecache"]) // PAGE
        for _ in range(2):
            if len(self.cache) <= limit:
                return
            page = self.cache.popleft()
            if page in self.held_set:
                self.cache.append(page)
                continue
            self.out.add(E.K_FREE, page, cpu=cpu)
            self.handles.put(page)
            self.slabs["buffer_head"].free(self.out, self.handles, cpu)

    # -- the stream ----------------------------------------------------------------------------

    def batches(self) -> Iterator[np.ndarray]:
        p, out = self.p, self.out
        ncpu = max(int(p.get("cpus", 1)), 1)  # the machine's CPU count, set by the runner
        self.shm = []
        for i in range(int(p["shm"]) // PAGE):
            self.shm.append(self.handles.get())
            out.add(E.K_ALLOC_PAGECACHE, self.shm[-1], cpu=i % ncpu, addr=SHM_BASE + i)
            if out.full():
                yield out.take()
        for i in range(int(p["processes"])):
            self.procs.append(self.fork_exec(i % ncpu))
            if out.full():
                yield out.take()
        while True:
            for u in self.rng.random((4096, 12)):
                self.step(u, ncpu)
            while out.full():
                yield out.take(out.size)

    def step(self, u: np.ndarray, ncpu: int) -> None:
        if not self.procs:
            self.read(0, u[2:])
            return
        i = int(u[0] * len(self.procs))
        proc = self.procs[i]
        cpu = proc["cpu"]
        if u[1] < self.p["churn"]:
            self.exit(proc)
            self.procs[i] = proc = self.fork_exec(cpu)
        elif u[1] < 0.7:
            self.read(cpu, u[2:], proc)
        elif u[1] < 0.85:
            if len(proc["anon"]) < 2 * int(self.p["anon_pages"]) and len(proc["anon"]) < 512:
                self.fault(proc)
            else:
                h = proc["anon"].pop()
                self.out.add(E.K_FREE, h, cpu=cpu)
                self.out.add(E.K_PTE_UPDATE, proc["ptes"][-1], cpu=cpu)
                self.handles.put(h)
        else:
            self.out.add(E.K_SYSCALL, cpu=cpu)
        if u[10] < self.p["touch_rate"]:
            self.touch(proc, u[11], u[9] < 0.5)

    def touch(self, proc: dict, u: float, store: bool) -> None:
        """A load or store by the process: one of its own pages or a page of the shared segment."""
        pages = proc["anon"] if u < 0.5 or not self.shm else self.shm
        if pages:
            page = pages[int((u * 2) % 1 * len(pages))]
            self.out.add(E.K_USER, page, order=int(store), cpu=proc["cpu"])


def max_handles(p: dict[str, object]) -> int:
    """Live handles never exceed the static structures plus one new slab page per event."""
    per_proc = 1 + int(p["shm"]) // PTE_SPAN + 2 + 2 * int(p["anon_pages"]) + 512
    static = int(p["shm"]) // PAGE + int(p["pagecache"]) // PAGE + 4 + int(p["processes"]) * per_proc
    return static + int(p["events"])


def build(p: dict[str, object], seed: int) -> Stream:
    gen = Mixed(p, seed)
    return Stream(cut(gen.batches(), int(p["events"])), max_handles(p), source="mixed", params=dict(p))


MIXED = Workload("mixed", "moderate blend: shm + process churn + page-cache reads + kmaps", PARAMS, build)
