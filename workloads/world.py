"""The world every generator draws from: processes, a page cache, slab and kernel-block pools, a
shared mapped file, and the episodes that act on them.

Every handle belongs to exactly one structure, at a fixed place in a static layout, and keeps a
page from the prologue to the end of the stream: an episode that replaces a page frees it and
allocates the handle again in the same row. That is what makes a chunk of episodes independent
of the order they are drawn in, so a chunk is built with array arithmetic (``episodes.Grid``):

- a *process slot* holds a kernel stack, its PTE pages and ``anon_pages`` private pages at a heap
  base of its own; a fork/exec in the slot tears the old process down (teardown frees, flag 1)
  and builds the new one in the same handles. task_structs come from a slab that keeps its pages
  (a real slab rarely frees a page on a fork or an exit), so they are not churned;
- the *page cache* is a ring of ``pagecache`` pages: the n-th miss takes slot n mod size and
  evicts what the miss one ring earlier put there (FIFO reclaim). A hit picks a resident page. A
  page kmapped by a sleeping holder is released ``kmap_hold`` episodes later, and is chosen among
  pages young enough that no miss can reach them before that (checked: ``check_kmap_guard``);
- *pools* (buffer_head, dentry and inode slab pages, kernel blocks of orders 0..4, page tables)
  are allocated in the prologue and churned by replacement: free a random member, allocate it
  again, possibly at another order;
- the *mapped file* is shared by every process at one file offset, so a page has the same user
  colour in every process (MAP_SHARED is SHMLBA-aligned on parisc).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core import events as E
from core.errors import ConfigError
from workloads.episodes import BODY, RELEASE, RUN, TICK, TOUCH, WIDTH, Grid, flat
from workloads.layout import PAGE, PER_PAGE, PTE_SPAN, PTRS_PER_PTE

SHM_BASE = 0x40000000 // PAGE  # shmat address, in pages: a multiple of SHMLBA (4 MiB) on every arch
FILE_BASE = 0x80000000 // PAGE  # where every process maps the shared file, also SHMLBA-aligned
HEAP_PAGES = 1 << 20  # private mappings start at a page of [0, 4 GiB) drawn per process slot

# Episode types, in the order their weights are given.
EPISODES = ("read", "write", "direct", "fault", "syscall", "churn", "kalloc", "pgtable", "open",
            "mapped_touch", "mapped_read", "mapped_write", "msync", "evict")
CHUNK_ROWS = 1 << 15  # grid rows per chunk: episodes drawn at once = this over the mean rows per episode
TOUCH_BURST = 4  # user accesses per mapped_touch episode
MIN_CHUNK = 64  # episodes drawn at once at least (the kmap hold queue carries across chunks of any size)
MAX_KMAP_HOLD = 1024


class Layout:
    """Where every structure's handles start, and how many there are."""

    def __init__(self, p: dict[str, object]) -> None:
        self.procs = int(p["processes"])
        self.anon = int(p["anon_pages"])
        self.shm = int(p["shm"]) // PAGE
        self.ptes = int(p["shm"]) // PTE_SPAN + 1 + self.anon // PTRS_PER_PTE
        self.cow = min(int(p.get("cow_pages", 0)), self.anon)  # a child's copies of its parent's first pages
        self.exec_pages = int(p.get("exec_pages", 0))
        self.per_slot = 1 + self.ptes + self.anon + self.cow  # stack, PTE pages, private pages, COW copies
        self.pc = int(p["pagecache"]) // PAGE
        self.files = int(p["files"])
        self.pools = {
            "buffer_head": -(-self.pc // PER_PAGE["buffer_head"]) if self.pc else 0,
            "dentry": -(-self.files // PER_PAGE["dentry"]),
            "inode": -(-self.files // PER_PAGE["inode"]),
            "kalloc": int(p["kalloc_blocks"]),
            "pgtable": int(p["pgtables"]),
        }
        self.mapped = int(p["mapped_file"]) // PAGE
        at = 0
        self.base: dict[str, int] = {}
        sizes = {"shm": self.shm, "procs": self.procs * self.per_slot, "pc": self.pc, **self.pools,
                 "mapped": self.mapped}
        for name, size in sizes.items():
            self.base[name] = at
            at += size
        self.handles = at

    def slot_base(self, slot: np.ndarray) -> np.ndarray:
        return self.base["procs"] + slot * self.per_slot

    def anon_handle(self, slot: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.slot_base(slot) + 1 + self.ptes + j

    def last_pte(self, slot: np.ndarray) -> np.ndarray:
        return self.slot_base(slot) + self.ptes


def io_pages(p: dict[str, object]) -> int:
    return max(1, int(p["io_size"]) // PAGE)


def check_kmap_guard(p: dict[str, object], lay: Layout) -> int:
    """Misses that may happen while a kmap is held; the ring must be larger than that."""
    guard = (int(p["kmap_hold"]) + 1) * io_pages(p)
    if float(p["kmap_fraction"]) > 0 and lay.pc <= guard:
        need = (guard + 1) * PAGE
        raise ConfigError("pagecache", f"more than (kmap_hold + 1) x io_size = {need} bytes, so no page "
                          "held by a sleeping kmap is reclaimed (or set kmap_fraction=0)", p["pagecache"])
    return guard


def _fork_template(lay: Layout, stack_order: int, teardown: bool) -> tuple[np.ndarray, ...]:
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


class World:
    """One stream's state and its chunks of episodes."""

    def __init__(self, p: dict[str, object], weights: dict[str, float], seed: int) -> None:
        self.p = p
        self.lay = lay = Layout(p)
        self.rng = np.random.default_rng(seed)
        self.ncpu = max(int(p.get("cpus", 1)), 1)
        self.stack_order = int(p.get("stack_order", 1))
        self.kmax = io_pages(p)
        self.weights = self._usable(weights)
        reads = self.weights[EPISODES.index("read")] > 0
        self.guard = check_kmap_guard(p, lay) if reads else 0
        self.heap = self.rng.integers(HEAP_PAGES, size=max(lay.procs, 1))
        self.misses = 0  # page-cache misses so far: the ring's next slot
        self.hold = int(p["kmap_hold"])
        self.held = np.full(self.hold, -1, dtype=np.int64)  # kmaps of the last kmap_hold episodes
        self.held_cpu = np.zeros(self.hold, dtype=np.int64)
        self.churn_t = _fork_template(lay, self.stack_order, True)
        self.boot_t = _fork_template(lay, self.stack_order, False)
        self.churn_rows = -(-(self.churn_t[0].size + 4) // WIDTH)  # slot 0 and the last three stay free
        # user mode: every episode's process runs user_time after its kernel work; the timer
        # interrupts it every 1/hz of user time (the remainder carries over, so the count is exact)
        self.run_ns = int(round(float(p.get("user_time", 0.0)) * 1000))
        self.tick_ns = 1_000_000_000 // max(int(p.get("hz", 1000)), 1)
        self.user_ns = 0  # user time since the last tick
        # expected rows per episode (a read takes about 1.5 x 2^e pages in octave e, each octave as
        # likely), in plain arithmetic: no libm function decides how the stream is cut into chunks
        octaves = self.kmax.bit_length()
        io_rows = sum(min((3 * (1 << e) - 1) / 2, self.kmax) for e in range(octaves)) / octaves
        w = self.weights
        mean = 1.0 + float(w[:3].sum()) * (io_rows - 1) + float(w[EPISODES.index("churn")]) * (self.churn_rows - 1)
        self.per_chunk = int(min(max(CHUNK_ROWS // mean, MIN_CHUNK), CHUNK_ROWS))

    def _usable(self, weights: dict[str, float]) -> np.ndarray:
        """Episode probabilities, with types whose structure is empty folded away."""
        lay = self.lay
        w = {name: float(weights.get(name, 0.0)) for name in EPISODES}
        if not lay.anon:  # no user buffers: O_DIRECT goes through the page cache, nothing to fault
            w["read"] += w.pop("direct")
            w["fault"] = 0.0
        if not lay.pc:
            w["read"] = w["write"] = 0.0
        if not lay.mapped:
            for name in ("mapped_touch", "mapped_read", "mapped_write", "msync", "evict"):
                w[name] = 0.0
        for pool, name in (("kalloc", "kalloc"), ("pgtable", "pgtable"), ("dentry", "open")):
            if not lay.pools[pool]:
                w[name] = 0.0
        if lay.procs == 0:
            raise ConfigError("processes", "an integer >= 1", 0)
        vec = np.array([w.get(name, 0.0) for name in EPISODES])
        if vec.sum() <= 0:
            vec[EPISODES.index("syscall")] = 1.0
        return vec / vec.sum()

    # -- the stream ----------------------------------------------------------------------------

    @property
    def setup_events(self) -> int:
        """Events of the prologue, from the layout alone (what ``prologue`` yields): a stream no
        longer than this never reaches an episode, so every seed gives the same record."""
        lay = self.lay
        pools = lay.pools
        return (lay.shm + lay.procs * self.boot_t[0].size + pools["buffer_head"] + pools["dentry"]
                + pools["inode"] + pools["kalloc"] + 2 * pools["pgtable"] + 2 * lay.mapped)

    def chunks(self) -> Iterator[np.ndarray]:
        yield self.prologue()
        while True:
            yield self.chunk(self.per_chunk)

    def prologue(self) -> np.ndarray:
        """Everything that exists before the first episode: shm, processes, pools, the mapped file."""
        lay, ncpu = self.lay, self.ncpu
        parts = []
        i = np.arange(lay.shm)
        parts.append(flat(E.K_ALLOC_PAGECACHE, lay.base["shm"] + i, 0, SHM_BASE + i, i % ncpu))
        k, h, o, a = self.boot_t
        slots = np.arange(lay.procs)
        handle = lay.slot_base(slots)[:, None] + h
        addr = np.where(a >= 0, self.heap[slots][:, None] + a, 0)
        parts.append(flat(np.broadcast_to(k, handle.shape).ravel(), handle.ravel(),
                          np.broadcast_to(o, handle.shape).ravel(), addr.ravel(),
                          np.repeat(slots % ncpu, k.size)))
        for pool in ("buffer_head", "dentry", "inode"):
            i = np.arange(lay.pools[pool])
            parts.append(flat(E.K_ALLOC_SLAB, lay.base[pool] + i, 0, 0, i % ncpu))
        i = np.arange(lay.pools["kalloc"])
        parts.append(flat(E.K_ALLOC_SLAB, lay.base["kalloc"] + i, self._kalloc_orders(i.size), 0, i % ncpu))
        i = np.repeat(np.arange(lay.pools["pgtable"]), 2)
        parts.append(flat(np.tile([E.K_ALLOC_PGTABLE, E.K_PTE_UPDATE], lay.pools["pgtable"]),
                          lay.base["pgtable"] + i, 0, 0, i % ncpu))
        i = np.repeat(np.arange(lay.mapped), 2)
        parts.append(flat(np.tile([E.K_ALLOC_PAGECACHE, E.K_IO], lay.mapped), lay.base["mapped"] + i, 0,
                          np.tile([1, 0], lay.mapped) * (FILE_BASE + i), i % ncpu))
        return np.concatenate(parts)

    def _kalloc_orders(self, n: int) -> np.ndarray:
        """Kernel block orders 0..kalloc_max_order, each half as likely as the one below."""
        top = int(self.p["kalloc_max_order"])
        w = 0.5 ** np.arange(top + 1)
        return np.searchsorted(np.cumsum(w / w.sum()), self.rng.random(n), side="right").clip(0, top)

    def chunk(self, n: int) -> np.ndarray:
        rng, lay = self.rng, self.lay
        typ = np.searchsorted(np.cumsum(self.weights), rng.random(n), side="right").clip(0, len(EPISODES) - 1)
        slot = rng.integers(lay.procs, size=n)
        cpu = slot % self.ncpu
        io = (typ == 0) | (typ == 1) | (typ == 2)
        pages = np.where(io, self._sizes(n), 1)
        churn_rows = self.churn_rows
        rows = np.where(typ == EPISODES.index("churn"), churn_rows, pages)
        g = Grid(rows)
        e = Episodes(self, g, typ, slot, cpu, pages)
        kmapped = e.page_io()
        e.simple()
        e.churn(churn_rows)
        self._release(g, kmapped, cpu)
        self._user_mode(g, cpu)
        e.touch()
        return g.events()

    def _user_mode(self, g: Grid, cpu: np.ndarray) -> None:
        """K_RUN after each episode's kernel work, and K_IRQ where its run crosses a tick."""
        if not self.run_ns:
            return
        n = cpu.size
        g.put(g.last, RUN, E.K_RUN, addr=np.full(n, self.run_ns, dtype=np.int64), cpu=cpu)
        elapsed = self.user_ns + self.run_ns * np.arange(1, n + 1, dtype=np.int64)
        ticks = elapsed // self.tick_ns  # ticks up to each episode's end; run_ns <= tick_ns: one at most each
        tick = np.diff(ticks, prepend=self.user_ns // self.tick_ns) > 0
        g.put(g.last, TICK, E.K_IRQ, cpu=cpu, where=tick)
        self.user_ns = int(elapsed[-1] % self.tick_ns)

    def _sizes(self, n: int) -> np.ndarray:
        """Pages per read or write, log-uniform from 1 to kmax: an octave 2^e .. 2^(e+1)-1 drawn
        uniformly, then a size within it (integer arithmetic, the same on every machine)."""
        if self.kmax == 1:
            return np.ones(n, dtype=np.int64)
        u = self.rng.random((2, n))
        e = (u[0] * self.kmax.bit_length()).astype(np.int64)
        return np.minimum((1 << e) + (u[1] * (1 << e)).astype(np.int64), self.kmax)

    def _release(self, g: Grid, kmapped: np.ndarray, cpu: np.ndarray) -> None:
        """kunmap, at the start of each episode, the kmap taken kmap_hold episodes before. The
        queue holds the last kmap_hold episodes' kmaps (-1: none), whatever the chunks' sizes."""
        if not self.hold:
            return
        handles = np.concatenate([self.held, kmapped])
        cpus = np.concatenate([self.held_cpu, cpu])
        due, due_cpu = handles[:kmapped.size], cpus[:kmapped.size]
        g.put(g.first, RELEASE, E.K_KUNMAP, due, cpu=due_cpu, where=due >= 0)
        self.held, self.held_cpu = handles[kmapped.size:], cpus[kmapped.size:]


class Episodes:
    """One chunk's episodes written into its grid, type by type."""

    def __init__(self, w: World, g: Grid, typ: np.ndarray, slot: np.ndarray, cpu: np.ndarray,
                 pages: np.ndarray) -> None:
        self.w, self.g, self.typ, self.slot, self.cpu, self.pages = w, g, typ, slot, cpu, pages
        self.p, self.lay, self.rng = w.p, w.lay, w.rng

    def of(self, name: str) -> np.ndarray:
        """The episodes of one type, in order (one stable sort by type serves every type)."""
        if not hasattr(self, "_by_type"):
            self._by_type = np.argsort(self.typ.astype(np.uint8), kind="stable")  # a radix sort
            self._type_end = np.cumsum(np.bincount(self.typ, minlength=len(EPISODES)))
        t = EPISODES.index(name)
        return self._by_type[(self._type_end[t - 1] if t else 0):self._type_end[t]]

    def buffer(self, slot: np.ndarray) -> np.ndarray:
        """A private page of the slot's process, standing for a syscall's user buffer."""
        return self.lay.anon_handle(slot, self.rng.integers(max(self.lay.anon, 1), size=slot.size))

    # -- reads and writes, one row per page ------------------------------------------------------

    def page_io(self) -> np.ndarray:
        """read, write and direct episodes; returns each episode's held kmap handle (or -1)."""
        p, g = self.p, self.g
        kmapped = np.full(self.typ.size, -1, dtype=np.int64)
        ep = np.flatnonzero(self.typ <= 2)
        if not ep.size:
            return kmapped
        k = self.pages[ep]
        row_ep = np.repeat(ep, k)
        j = np.arange(row_ep.size) - np.repeat(np.cumsum(k) - k, k)  # page index within the episode
        row = g.first[row_ep] + j
        typ, cpu, slot = self.typ[row_ep], self.cpu[row_ep], self.slot[row_ep]
        first = j == 0
        g.put(row, 1, E.K_SYSCALL, cpu=cpu, where=first)
        direct = typ == 2
        self._direct(row[direct], cpu[direct], slot[direct], self.rng.random(int(direct.sum())) < p["write_fraction"])
        cached = ~direct
        held = self._cached(row[cached], row_ep[cached], typ[cached] == 1, first[cached], cpu[cached],
                            slot[cached])
        kmapped[row_ep[cached][held >= 0]] = held[held >= 0]
        return kmapped

    def _direct(self, row, cpu, slot, write) -> None:
        """O_DIRECT: DMA between the device and the user's own page."""
        buf = self.buffer(slot)
        self.g.put(row, 2, E.K_USER, buf, order=1, cpu=cpu, where=write)  # the data, written by the user
        self.g.put(row, 3, E.K_IO, buf, order=write.astype(np.uint8), cpu=cpu)
        self.g.put(row, 4, E.K_USER, buf, order=0, cpu=cpu, where=~write)  # the user reads what came in

    def _cached(self, row, row_ep, write, first, cpu, slot) -> np.ndarray:
        """Page-cache rows: the ring's miss or hit, the copy, the user's buffer."""
        p, g, lay, rng, w = self.p, self.g, self.lay, self.rng, self.w
        n = row.size
        u = rng.random((n, 6))  # miss, kmap, age, buffer_head, which buffer_head page, which buffer
        # sequential reads hit or miss as a whole (readahead); random reads page by page
        per_ep = rng.random((self.typ.size, 2))
        seq = per_ep[row_ep, 0] < p["sequential"]
        miss = np.where(seq, per_ep[row_ep, 1], u[:, 0]) < p["miss_rate"]
        if n and w.misses == 0:
            miss[0] = True  # nothing is cached yet
        before = w.misses + np.cumsum(miss) - miss
        w.misses += int(miss.sum())
        kmap = first & ~write & (u[:, 1] < p["kmap_fraction"])
        resident = np.minimum(before, lay.pc)
        limit = np.where(kmap, np.minimum(resident, lay.pc - w.guard), resident).clip(1)
        age = (u[:, 2] * limit).astype(np.int64)
        ring = np.where(miss, before, before - 1 - age) % lay.pc
        h = lay.base["pc"] + ring
        g.put(row, 2, E.K_FREE, h, cpu=cpu, where=miss & (before >= lay.pc))  # FIFO reclaim of the slot
        g.put(row, 3, E.K_ALLOC_PAGECACHE, h, cpu=cpu, where=miss)
        g.put(row, 4, E.K_IO, h, cpu=cpu, where=miss & ~write)  # a partial write would read first; a page does not
        bh = np.flatnonzero(miss & (u[:, 3] < 1.0 / PER_PAGE["buffer_head"]))  # the slab turns a page over
        bh_h = lay.base["buffer_head"] + (u[bh, 4] * lay.pools["buffer_head"]).astype(np.int64)
        g.put(row[bh], 5, E.K_FREE, bh_h, cpu=cpu[bh])
        g.put(row[bh], 6, E.K_ALLOC_SLAB, bh_h, cpu=cpu[bh])
        buf = lay.anon_handle(slot, (u[:, 5] * max(lay.anon, 1)).astype(np.int64))
        g.put(row, 7, E.K_USER, buf, cpu=cpu, where=write & (lay.anon > 0))  # copy_from_user reads it
        g.put(row, 8, np.where(kmap, E.K_KMAP, E.K_KMAP_ATOMIC), h, cpu=cpu)
        g.put(row, 9, E.K_COPY, h, order=write.astype(np.uint8), cpu=cpu)
        g.put(row, 11, E.K_IO, h, order=1, cpu=cpu, where=write)  # written back
        g.put(row, 10, E.K_USER, buf, cpu=cpu, where=~write & (lay.anon > 0))  # the user reads its copy
        return np.where(kmap, h, -1)

    # -- one-row episodes ----------------------------------------------------------------------

    def simple(self) -> None:
        g, lay, rng = self.g, self.lay, self.rng
        ep = self.of("syscall")
        g.put(g.first[ep], 1, E.K_SYSCALL, cpu=self.cpu[ep])
        ep = self.of("fault")  # munmap of a private page, then a fault that brings a new one
        if ep.size:
            r, c, s = g.first[ep], self.cpu[ep], self.slot[ep]
            jj = rng.integers(lay.anon, size=ep.size)
            h, pte = lay.anon_handle(s, jj), lay.last_pte(s)
            g.put(r, 1, E.K_FREE, h, cpu=c)
            g.put(r, 2, E.K_PTE_UPDATE, pte, cpu=c)
            g.put(r, 3, E.K_ALLOC_ANON, h, addr=self.w.heap[s] + jj, cpu=c)
            g.put(r, 4, E.K_KMAP_ATOMIC, h, cpu=c)
            g.put(r, 5, E.K_PTE_UPDATE, pte, cpu=c)
        ep = self.of("kalloc")  # a kernel block of some order freed and another allocated
        if ep.size:
            r, c = g.first[ep], self.cpu[ep]
            h = lay.base["kalloc"] + rng.integers(lay.pools["kalloc"], size=ep.size)
            g.put(r, 1, E.K_SYSCALL, cpu=c)
            g.put(r, 2, E.K_FREE, h, cpu=c)
            g.put(r, 3, E.K_ALLOC_SLAB, h, order=self.w._kalloc_orders(ep.size), cpu=c)
        ep = self.of("pgtable")  # a mapping torn down and another made: its PTE page replaced
        if ep.size:
            r, c = g.first[ep], self.cpu[ep]
            h = lay.base["pgtable"] + rng.integers(lay.pools["pgtable"], size=ep.size)
            for col, kind in enumerate((E.K_SYSCALL, E.K_PTE_UPDATE, E.K_FREE, E.K_ALLOC_PGTABLE, E.K_PTE_UPDATE), 1):
                g.put(r, col, kind, h if kind != E.K_SYSCALL else 0, cpu=c)
        ep = self.of("open")  # a new file: dentry and inode objects, a slab page turning over now and then
        if ep.size:
            r, c = g.first[ep], self.cpu[ep]
            g.put(r, 1, E.K_SYSCALL, cpu=c)
            u = rng.random((ep.size, 2))
            for col, pool, x in ((2, "dentry", u[:, 0]), (4, "inode", u[:, 1])):
                h = lay.base[pool] + rng.integers(lay.pools[pool], size=ep.size)
                turn = x < 1.0 / PER_PAGE[pool]
                g.put(r, col, E.K_FREE, h, cpu=c, where=turn)
                g.put(r, col + 1, E.K_ALLOC_SLAB, h, cpu=c, where=turn)
        self._mapped()

    def _mapped(self) -> None:
        """The shared mapped file: loads and stores through the mapping, read() and write() of its
        pages, msync write-back, and reclaim of a page that the next access faults back in."""
        g, lay, rng, p = self.g, self.lay, self.rng, self.p
        if not lay.mapped:
            return
        for name in ("mapped_touch", "mapped_read", "mapped_write", "msync", "evict"):
            ep = self.of(name)
            if not ep.size:
                continue
            r, c = g.first[ep], self.cpu[ep]
            if name == "mapped_touch":  # a burst of loads and stores over a few pages of the file
                u = rng.random((ep.size, 2 * TOUCH_BURST))
                f = (u[:, :TOUCH_BURST] * lay.mapped).astype(np.int64)
                g.put(r, 1, E.K_USER, lay.base["mapped"] + f, cpu=c,
                      order=(u[:, TOUCH_BURST:] < p["store_fraction"]).astype(np.uint8))
                continue
            f = rng.integers(lay.mapped, size=ep.size)
            h = lay.base["mapped"] + f
            if name == "evict":
                g.put(r, 1, E.K_FREE, h, cpu=c)
                g.put(r, 2, E.K_ALLOC_PAGECACHE, h, addr=FILE_BASE + f, cpu=c)
                g.put(r, 3, E.K_IO, h, cpu=c)
            elif name == "msync":
                g.put(r, 1, E.K_SYSCALL, cpu=c)
                g.put(r, 2, E.K_IO, h, order=1, cpu=c)
            else:
                into = name == "mapped_write"
                g.put(r, 1, E.K_SYSCALL, cpu=c)
                g.put(r, 2, E.K_KMAP_ATOMIC, h, cpu=c)
                g.put(r, 3, E.K_COPY, h, order=int(into), cpu=c)
                if lay.anon:
                    g.put(r, 4, E.K_USER, self.buffer(self.slot[ep]), cpu=c)

    # -- fork/exec, many rows ------------------------------------------------------------------

    def churn(self, span: int) -> None:
        ep = self.of("churn")
        if not ep.size:
            return
        k, h, o, a = self.w.churn_t
        width = span * WIDTH
        kind = np.full(width, -1, dtype=np.int64)
        kind[1:1 + k.size] = k
        off = np.zeros(width, dtype=np.int64)
        off[1:1 + k.size] = h
        order = np.zeros(width, dtype=np.int64)
        order[1:1 + k.size] = o
        aoff = np.full(width, -1, dtype=np.int64)
        aoff[1:1 + k.size] = a
        s = self.slot[ep]
        handle = np.where(off >= 0, self.lay.slot_base(s)[:, None] + off, 0)
        # user pages at the slot's heap (no ASLR in 2.6); a fork's addr is its PTE count, not a page
        addr = np.where(aoff >= 0, np.where(kind == E.K_FORK, 0, self.w.heap[s][:, None]) + aoff, 0)
        self.g.put_flat(self.g.first[ep], kind, handle, order, addr, np.broadcast_to(self.cpu[ep][:, None],
                                                                                     (ep.size, width)))

    # -- a user load or store by the episode's process -----------------------------------------

    def touch(self) -> None:
        p, lay, rng, g = self.p, self.lay, self.rng, self.g
        n = self.typ.size
        u = rng.random((n, 4))  # touch or not, own page or shm, which page, store or load
        on = u[:, 0] < p["touch_rate"]
        if not on.any() or not (lay.anon or lay.shm):
            return
        own = (u[:, 1] < 0.5) if (lay.anon and lay.shm) else np.full(n, bool(lay.anon))
        anon = lay.anon_handle(self.slot, (u[:, 2] * max(lay.anon, 1)).astype(np.int64))
        shm = lay.base["shm"] + (u[:, 2] * max(lay.shm, 1)).astype(np.int64)
        store = (u[:, 3] < p["store_fraction"]).astype(np.uint8)
        g.put(g.last, TOUCH, E.K_USER, np.where(own, anon, shm), order=store, cpu=self.cpu, where=on)


assert BODY >= 11  # the page-cache row uses template slots 1..11
