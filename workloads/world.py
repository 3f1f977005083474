"""The world every generator draws from: processes, a page cache, slab and kernel-block pools, a
shared mapped file, and the episodes that act on them. This module is its public entry: the
``World`` that makes a stream's prologue and its chunks of episodes, and the kernel-block and
page-table pools; the structures the episodes act on have modules of their own.

Every handle belongs to exactly one structure, at a fixed place in a static layout
(``world_layout``), and keeps a page from the prologue to the end of the stream: an episode that
replaces a page frees it and allocates the handle again in the same row. That is what makes a
chunk of episodes independent of the order they are drawn in, so a chunk is built with array
arithmetic (``episodes.Grid``):

- *process slots*, their fork/exec/exit, faults and user accesses (``world_procs``);
- the *page cache* ring, O_DIRECT, the *mapped file* and the dentry, inode and buffer_head slab
  pages (``world_files``);
- the *pools* (here) of kernel blocks of orders 0..``kalloc_max_order`` (2.6.11's kmalloc and
  __get_free_pages) and of the page tables of mappings that come and go are allocated in the
  prologue and churned by replacement: free a random member, allocate it again, possibly at
  another order. A kernel block is one K_ALLOC_SLAB of its order; what it holds is not modelled.

Around each episode's kernel work the world keeps what crosses episodes: the kunmap of a kmap
taken ``kmap_hold`` episodes before, and the process's run in user mode with the timer ticks
it takes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core import events as E
from core.errors import ConfigError
from workloads import world_files, world_procs
from workloads.episodes import BODY, RELEASE, RUN, TICK, WIDTH, Grid, flat
from workloads.world_files import MAPPED, check_kmap_guard, io_pages
from workloads.world_layout import FILE_BASE, HEAP_PAGES, SHM_BASE, Layout

# Episode types, in the order their weights are given.
EPISODES = ("read", "write", "direct", "fault", "syscall", "churn", "kalloc", "pgtable", "open",
            "mapped_touch", "mapped_read", "mapped_write", "msync", "evict")
CHUNK_ROWS = 1 << 15  # grid rows per chunk: episodes drawn at once = this over the mean rows per episode
MIN_CHUNK = 64  # episodes drawn at once at least (the kmap hold queue carries across chunks of any size)
MAX_KMAP_HOLD = 1024

__all__ = ["EPISODES", "FILE_BASE", "MAX_KMAP_HOLD", "SHM_BASE", "Episodes", "Layout", "World"]


class World:
    """One stream's state and its chunks of episodes: the one rng, each slot's heap base, the
    page-cache ring's miss count, the kmap hold queue and the user time since the last tick."""

    def __init__(self, p: dict[str, object], weights: dict[str, float], seed: int) -> None:
        self.p = p
        self.lay = lay = Layout(p)
        self.rng = np.random.default_rng(seed)
        self.ncpu = max(int(p.get("cpus", 1)), 1)
        self.stack_order = int(p.get("stack_order", 1))
        self.kmax = io_pages(p)
        self.weights = self._usable(weights)
        reads = self.weights[EPISODES.index("read")] > 0
        self.guard = check_kmap_guard(p, lay) if reads else 0  # misses a kmap's hold may see
        self.heap = self.rng.integers(HEAP_PAGES, size=max(lay.procs, 1))
        self.misses = 0  # page-cache misses so far: the ring's next slot
        self.hold = int(p["kmap_hold"])
        self.held = np.full(self.hold, -1, dtype=np.int64)  # kmaps of the last kmap_hold episodes
        self.held_cpu = np.zeros(self.hold, dtype=np.int64)
        self.churn_t = world_procs.fork_template(lay, self.stack_order, True)
        self.boot_t = world_procs.fork_template(lay, self.stack_order, False)
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
            for name in MAPPED:
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
        # the types in this order, each drawing from the one rng: the order is the stream's
        kmapped = world_files.page_io(e)
        e.syscall()
        world_procs.fault(e)
        e.kalloc()
        e.pgtable()
        world_files.open_file(e)
        world_files.mapped(e)
        world_procs.churn(e, churn_rows)
        self._release(g, kmapped, cpu)
        self._user_mode(g, cpu)
        world_procs.touch(e)
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
    """One chunk's episodes written into its grid, type by type: what every type's writer (here,
    in ``world_procs`` and in ``world_files``) reads, the world's state and the chunk's draws."""

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

    # -- one-row episodes: a bare syscall, and the kernel's own pools -------------------------------

    def syscall(self) -> None:
        """syscall episodes: a bare kernel entry."""
        ep = self.of("syscall")
        self.g.put(self.g.first[ep], 1, E.K_SYSCALL, cpu=self.cpu[ep])

    def _pool_episodes(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The ``name`` episodes' rows and CPUs, each with a handle drawn from that pool, and
        their indices (empty when there are none)."""
        ep = self.of(name)
        h = self.lay.base[name] + self.rng.integers(self.lay.pools[name], size=ep.size) if ep.size else ep
        return self.g.first[ep], self.cpu[ep], h, ep

    def kalloc(self) -> None:
        """kalloc episodes: a kernel block of some order freed and another allocated."""
        r, c, h, ep = self._pool_episodes("kalloc")
        if not ep.size:
            return
        self.g.put(r, 1, E.K_SYSCALL, cpu=c)
        self.g.put(r, 2, E.K_FREE, h, cpu=c)
        self.g.put(r, 3, E.K_ALLOC_SLAB, h, order=self.w._kalloc_orders(ep.size), cpu=c)

    def pgtable(self) -> None:
        """pgtable episodes: a mapping torn down and another made: its PTE page replaced."""
        r, c, h, ep = self._pool_episodes("pgtable")
        if not ep.size:
            return
        for col, kind in enumerate((E.K_SYSCALL, E.K_PTE_UPDATE, E.K_FREE, E.K_ALLOC_PGTABLE, E.K_PTE_UPDATE), 1):
            self.g.put(r, col, kind, h if kind != E.K_SYSCALL else 0, cpu=c)


assert BODY >= 11  # the page-cache row uses template slots 1..11 (world_files._cached)
