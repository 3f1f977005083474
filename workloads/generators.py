"""The built-in workloads: one world (``workloads.world``), six mixes of its episodes.

Every workload takes the same parameters, so a sweep can move any of them on any workload; what
differs is their defaults, which say what the workload is about:

- ``io``: file reads and writes of one page to a megabyte, sequential and random, through the
  page cache (DMA into a cache page, then a copy to the user) and O_DIRECT (DMA into the user's
  own page);
- ``forkexec``: shell-script churn: short-lived processes fork, exec, make a few syscalls and
  faults, touch their pages and exit;
- ``kalloc``: kernel allocation churn: slab pages (dentries, inodes, buffer_heads), kernel blocks
  of orders 0-4, page tables, beside a large user memory that fills highmem;
- ``pagecache``: a file mapped shared by many processes, loaded and stored through the mapping,
  read() and write(), written back by msync, its pages reclaimed and faulted back;
- ``stress``: all of it at once, with many processes;
- ``mixed`` (the default): a moderate blend, the busy 2.6-era server of the paper: a 1 GiB SGA
  style shm mapped by 192 processes, page-cache reads, some O_DIRECT and writes, slow churn.

Episode rates are fractions of all episodes; file I/O takes what the other rates leave.
"""

from __future__ import annotations

from core.errors import ConfigError
from core.events import Stream
from core.units import GiB, KiB, MiB
from workloads.base import Param, Workload
from workloads.episodes import rebatch
from workloads.layout import PAGE
from workloads.world import MAX_KMAP_HOLD, Layout, World

MAX_HANDLES = 1 << 26  # what a trace may hold, and 512 MiB of handle table in the kernel model
MAX_SLOT_PAGES = 1 << 20
MAX_IO_SIZE = 64 << 20  # a chunk holds at least MIN_CHUNK episodes of up to io_size / 4 KiB rows each

# name, help, kind; defaults come per workload
PARAM_HELP: tuple[tuple[str, str, str], ...] = (
    ("events", "stream length in events", "int"),
    ("batch", "events per batch handed to the simulator", "int"),
    ("processes", "processes alive at once (each a slot: stack, PTE pages, private pages)", "int"),
    ("anon_pages", "private pages per process (its working set; also its syscall buffers)", "int"),
    ("shm", "shared segment every process maps (PTE pages per process = shm / 2 MiB)", "size"),
    ("pagecache", "page cache size: the ring of cached file pages, FIFO reclaim", "size"),
    ("files", "dentries and inodes cached (their slab pages are allocated at start)", "int"),
    ("mapped_file", "file mapped MAP_SHARED by every process", "size"),
    ("kalloc_blocks", "kernel blocks (kmalloc / __get_free_pages) held at once", "int"),
    ("kalloc_max_order", "largest kernel block order (each order half as likely as the one below)", "int"),
    ("pgtables", "page tables of mappings that come and go (churned by pgtable_rate)", "int"),
    ("io_size", "largest read or write (up to 64 MiB); sizes are log-uniform from one page to this", "size"),
    ("sequential", "fraction of reads and writes that are sequential (hit or miss as a whole)", "float"),
    ("miss_rate", "fraction of page-cache lookups that miss", "float"),
    ("direct_io", "fraction of file I/O that is O_DIRECT (DMA straight into the user's page)", "float"),
    ("write_fraction", "fraction of file I/O that is writes (copy into the page, write back)", "float"),
    ("kmap_fraction", "fraction of reads that copy under a sleeping kmap rather than kmap_atomic", "float"),
    ("kmap_hold", "episodes a sleeping kmap is held before its kunmap (1..1024)", "int"),
    ("touch_rate", "per episode, chance the process loads or stores one of its pages or the shm", "float"),
    ("store_fraction", "fraction of user accesses that are stores", "float"),
    ("syscall_rate", "fraction of episodes that are a bare syscall", "float"),
    ("churn", "fraction of episodes where a process exits and a new one forks and execs", "float"),
    ("fault_rate", "fraction of episodes that munmap a private page and fault a new one", "float"),
    ("open_rate", "fraction of episodes that open a new file (dentry, inode)", "float"),
    ("kalloc_rate", "fraction of episodes that free a kernel block and allocate another", "float"),
    ("pgtable_rate", "fraction of episodes that replace a page table", "float"),
    ("mapped_rate", "fraction of episodes on the mapped file: 70% bursts of 4 loads/stores, 20% read(), 10% write()",
     "float"),
    ("msync_rate", "fraction of episodes that write a mapped page back (msync)", "float"),
    ("evict_rate", "fraction of episodes where a mapped page is reclaimed and faulted back", "float"),
    ("user_time", "microseconds each episode's process runs in user mode after its kernel work (0: kernel "
                  "time only; at most one tick, 1e6 / hz)", "us"),
    ("hz", "timer interrupts per second of user time, each a kernel entry (2.6 i386: 1000)", "int"),
    ("cow_pages", "pages a forked child writes before it execs: copy-on-write faults, each a new page and a "
                  "copy (at most anon_pages)", "int"),
    ("exec_pages", "pages of its cached binary a new program faults in after exec (a kernel entry and a PTE "
                   "write each)", "int"),
)

BASE: dict[str, object] = {
    "events": 1_000_000, "batch": 65536, "processes": 64, "anon_pages": 64, "shm": 0, "pagecache": 64 * MiB,
    "files": 16384, "mapped_file": 0, "kalloc_blocks": 0, "kalloc_max_order": 4, "pgtables": 0,
    "io_size": 4 * KiB, "sequential": 0.0, "miss_rate": 0.5, "direct_io": 0.0, "write_fraction": 0.2,
    "kmap_fraction": 0.0, "kmap_hold": 64, "touch_rate": 0.3, "store_fraction": 0.5, "syscall_rate": 0.15,
    "churn": 0.0, "fault_rate": 0.1, "open_rate": 0.0, "kalloc_rate": 0.0, "pgtable_rate": 0.0,
    "mapped_rate": 0.0, "msync_rate": 0.0, "evict_rate": 0.0, "user_time": 0.0, "hz": 1000,
    "cow_pages": 2, "exec_pages": 16,  # [est]: a shell's child dirties its stack and one data page; a small program
}

RATES = ("syscall_rate", "churn", "fault_rate", "open_rate", "kalloc_rate", "pgtable_rate", "mapped_rate",
         "msync_rate", "evict_rate")


def weights(p: dict[str, object]) -> dict[str, float]:
    """Episode probabilities from the rates; file I/O takes the rest."""
    taken = sum(float(p[name]) for name in RATES)
    if taken > 1.0 + 1e-9:
        raise ConfigError(" + ".join(RATES), f"a total <= 1 (the rest is file I/O; got {taken:.3f})")
    io = 1.0 - taken
    direct = io * float(p["direct_io"])
    write = (io - direct) * float(p["write_fraction"])
    mapped = float(p["mapped_rate"])
    return {
        "read": io - direct - write, "write": write, "direct": direct,
        "syscall": float(p["syscall_rate"]), "churn": float(p["churn"]), "fault": float(p["fault_rate"]),
        "open": float(p["open_rate"]), "kalloc": float(p["kalloc_rate"]), "pgtable": float(p["pgtable_rate"]),
        "mapped_touch": 0.7 * mapped, "mapped_read": 0.2 * mapped, "mapped_write": 0.1 * mapped,
        "msync": float(p["msync_rate"]), "evict": float(p["evict_rate"]),
    }


def _check(p: dict[str, object]) -> None:
    if int(p["processes"]) < 1:
        raise ConfigError("processes", "an integer >= 1", p["processes"])
    if int(p["batch"]) < 1:
        raise ConfigError("batch", "an integer >= 1", p["batch"])
    if not 1 <= int(p["kmap_hold"]) <= MAX_KMAP_HOLD:
        raise ConfigError("kmap_hold", f"an integer from 1 to {MAX_KMAP_HOLD}", p["kmap_hold"])
    if int(p["kalloc_max_order"]) > 10:
        raise ConfigError("kalloc_max_order", "an order from 0 to 10", p["kalloc_max_order"])
    if not PAGE <= int(p["io_size"]) <= MAX_IO_SIZE:
        raise ConfigError("io_size", f"from one page ({PAGE} bytes) to {MAX_IO_SIZE >> 20} MiB", p["io_size"])
    if not 1 <= int(p["hz"]) <= 10_000:
        raise ConfigError("hz", "an integer from 1 to 10000", p["hz"])
    if not 0.0 <= float(p["user_time"]) <= 1e6 / int(p["hz"]):
        raise ConfigError("user_time", f"microseconds from 0 to one tick ({1e6 / int(p['hz']):g} at hz={p['hz']})",
                          p["user_time"])
    lay = Layout(p)
    if lay.per_slot > MAX_SLOT_PAGES:  # a fork's template holds about 5 events per page of the slot
        raise ConfigError("anon_pages", f"a process of at most {MAX_SLOT_PAGES} pages with its page tables "
                          f"(shm / 2 MiB + anon_pages / 512 + anon_pages + 2; got {lay.per_slot})", p["anon_pages"])
    if lay.handles > MAX_HANDLES:
        raise ConfigError("processes", f"structures of at most {MAX_HANDLES} pages in all (processes x their pages "
                          f"+ shm + pagecache + pools + mapped_file; got {lay.handles})", p["processes"])


def _builder(name: str):
    def build(p: dict[str, object], seed: int) -> Stream:
        _check(p)
        world = World(p, weights(p), seed)
        stream = rebatch(world.chunks(), int(p["batch"]), int(p["events"]))
        return Stream(stream, world.lay.handles, source=name, params=dict(p), setup_events=world.setup_events)
    return build


def workload(name: str, summary: str, **defaults: object) -> Workload:
    unknown = set(defaults) - set(BASE)
    assert not unknown, unknown
    values = {**BASE, **defaults}
    params = tuple(Param(n, values[n], text, kind) for n, text, kind in PARAM_HELP)
    return Workload(name, summary, params, _builder(name))


IO = workload("io", "file reads and writes, 1 page to 1 MiB, sequential and random, page cache and O_DIRECT",
              processes=16, anon_pages=256, pagecache=512 * MiB, io_size=1 * MiB, sequential=0.5,
              direct_io=0.2, write_fraction=0.3, kmap_fraction=0.1, kmap_hold=16, syscall_rate=0.1,
              fault_rate=0.02, open_rate=0.01, touch_rate=0.2)
FORKEXEC = workload("forkexec", "shell-script churn: fork, exec, a short run, exit",
                    processes=32, anon_pages=64, churn=0.05, syscall_rate=0.5, fault_rate=0.2, touch_rate=0.5,
                    open_rate=0.02)
KALLOC = workload("kalloc", "kernel allocation churn: slab pages, blocks of orders 0-4, page tables, "
                  "beside 1 GiB of user memory", processes=32, anon_pages=8192, events=2_000_000,
                  kalloc_blocks=4096, pgtables=1024, files=65536, kalloc_rate=0.4, pgtable_rate=0.2,
                  open_rate=0.2, syscall_rate=0.1, fault_rate=0.05, churn=0.0005, touch_rate=0.1)
PAGECACHE = workload("pagecache", "a file mapped shared by many processes: loads, stores, read(), write(), "
                     "msync, reclaim", processes=64, anon_pages=32, mapped_file=256 * MiB, mapped_rate=0.8,
                     msync_rate=0.03, evict_rate=0.02, store_fraction=0.3, syscall_rate=0.05, fault_rate=0.02,
                     touch_rate=0.1)
STRESS = workload("stress", "everything at once with many processes", processes=256, anon_pages=256,
                  shm=512 * MiB, pagecache=512 * MiB, files=262144, mapped_file=128 * MiB, kalloc_blocks=8192,
                  pgtables=4096, io_size=256 * KiB, sequential=0.3, direct_io=0.2, write_fraction=0.3,
                  kmap_fraction=0.3, kmap_hold=128, touch_rate=0.5, churn=0.01, fault_rate=0.1, syscall_rate=0.1,
                  kalloc_rate=0.1, pgtable_rate=0.05, open_rate=0.05, mapped_rate=0.2, msync_rate=0.01,
                  evict_rate=0.01, events=4_000_000)
MIXED = workload("mixed", "moderate blend: 1 GiB shm in 192 processes, page-cache reads, kmaps, slow churn",
                 processes=192, anon_pages=128, shm=1 * GiB, pagecache=256 * MiB, miss_rate=0.5,
                 kmap_fraction=0.25, kmap_hold=64, direct_io=0.1, write_fraction=0.2, touch_rate=0.3,
                 churn=0.002, fault_rate=0.15, syscall_rate=0.15, open_rate=0.1)

ALL = (MIXED, IO, FORKEXEC, KALLOC, PAGECACHE, STRESS)
