"""Files in the generators' world (after Linux 2.6.11's mm/filemap.c, fs/direct-io.c, mm/msync.c,
fs/dcache.c and fs/inode.c): read() and write() through the page cache or O_DIRECT, the shared
mapped file, and the dentries and inodes of opened files.

- The *page cache* is a ring of ``pagecache`` pages: the n-th miss takes slot n mod size and
  evicts what the miss one ring earlier put there (FIFO reclaim, standing for the LRU lists). A
  hit picks a resident page. A page kmapped by a sleeping holder is released ``kmap_hold``
  episodes later (``World._release``), and is chosen among pages young enough that no miss can
  reach them before that (checked: ``check_kmap_guard``). Sequential reads and writes hit or miss
  as a whole (readahead), random ones page by page; a whole-page write reads nothing first.
  Each miss turns over a buffer_head slab page with the chance of one object in a page.
- *O_DIRECT* is DMA between the device and the user's own page, no cache page involved.
- The *mapped file* is separate from the ring, allocated in the prologue and shared by every
  process at one file offset, so a page has the same user colour in every process (MAP_SHARED is
  SHMLBA-aligned on parisc); its pages are written back by msync, and reclaimed one at a time
  (``evict``) and read back in the same episode, standing for the next access's fault.
- Opening a file takes a dentry and an inode object; only their slab pages are modelled, one of
  each turning over with the chance of one object in a page.

A syscall's user buffer is a random private page of the calling process (``Episodes.buffer``);
with no private pages (``anon_pages=0``) O_DIRECT goes through the page cache (``World._usable``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core import events as E
from core.errors import ConfigError
from workloads.layout import PAGE, PER_PAGE
from workloads.world_layout import FILE_BASE, Layout

if TYPE_CHECKING:
    from workloads.world import Episodes

TOUCH_BURST = 4  # user accesses per mapped_touch episode
MAPPED = ("mapped_touch", "mapped_read", "mapped_write", "msync", "evict")  # episodes on the mapped file


def io_pages(p: dict[str, object]) -> int:
    """The largest read or write, in pages."""
    return max(1, int(p["io_size"]) // PAGE)


def check_kmap_guard(p: dict[str, object], lay: Layout) -> int:
    """Misses that may happen while a kmap is held; the ring must be larger than that."""
    guard = (int(p["kmap_hold"]) + 1) * io_pages(p)
    if float(p["kmap_fraction"]) > 0 and lay.pc <= guard:
        need = (guard + 1) * PAGE
        raise ConfigError("pagecache", f"more than (kmap_hold + 1) x io_size = {need} bytes, so no page "
                          "held by a sleeping kmap is reclaimed (or set kmap_fraction=0)", p["pagecache"])
    return guard


# -- reads and writes, one row per page ----------------------------------------------------------

def page_io(e: Episodes) -> np.ndarray:
    """read, write and direct episodes; returns each episode's held kmap handle (or -1)."""
    p, g = e.p, e.g
    kmapped = np.full(e.typ.size, -1, dtype=np.int64)
    ep = np.flatnonzero(e.typ <= 2)
    if not ep.size:
        return kmapped
    k = e.pages[ep]
    row_ep = np.repeat(ep, k)
    j = np.arange(row_ep.size) - np.repeat(np.cumsum(k) - k, k)  # page index within the episode
    row = g.first[row_ep] + j
    typ, cpu, slot = e.typ[row_ep], e.cpu[row_ep], e.slot[row_ep]
    first = j == 0
    g.put(row, 1, E.K_SYSCALL, cpu=cpu, where=first)
    direct = typ == 2
    _direct(e, row[direct], cpu[direct], slot[direct], e.rng.random(int(direct.sum())) < p["write_fraction"])
    cached = ~direct
    held = _cached(e, row[cached], row_ep[cached], typ[cached] == 1, first[cached], cpu[cached], slot[cached])
    kmapped[row_ep[cached][held >= 0]] = held[held >= 0]
    return kmapped


def _direct(e: Episodes, row, cpu, slot, write) -> None:
    """O_DIRECT: DMA between the device and the user's own page."""
    buf = e.buffer(slot)
    e.g.put(row, 2, E.K_USER, buf, order=1, cpu=cpu, where=write)  # the data, written by the user
    e.g.put(row, 3, E.K_IO, buf, order=write.astype(np.uint8), cpu=cpu)
    e.g.put(row, 4, E.K_USER, buf, order=0, cpu=cpu, where=~write)  # the user reads what came in


def _cached(e: Episodes, row, row_ep, write, first, cpu, slot) -> np.ndarray:
    """Page-cache rows: the ring's miss or hit, the copy, the user's buffer."""
    p, g, lay, rng, w = e.p, e.g, e.lay, e.rng, e.w
    n = row.size
    u = rng.random((n, 6))  # miss, kmap, age, buffer_head, which buffer_head page, which buffer
    # sequential reads hit or miss as a whole (readahead); random reads page by page
    per_ep = rng.random((e.typ.size, 2))
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


# -- one-row episodes ----------------------------------------------------------------------------

def open_file(e: Episodes) -> None:
    """open episodes: a new file's dentry and inode objects, a slab page turning over now and then."""
    ep = e.of("open")
    if not ep.size:
        return
    g, lay, rng = e.g, e.lay, e.rng
    r, c = g.first[ep], e.cpu[ep]
    g.put(r, 1, E.K_SYSCALL, cpu=c)
    u = rng.random((ep.size, 2))
    for col, pool, x in ((2, "dentry", u[:, 0]), (4, "inode", u[:, 1])):
        h = lay.base[pool] + rng.integers(lay.pools[pool], size=ep.size)
        turn = x < 1.0 / PER_PAGE[pool]
        g.put(r, col, E.K_FREE, h, cpu=c, where=turn)
        g.put(r, col + 1, E.K_ALLOC_SLAB, h, cpu=c, where=turn)


def mapped(e: Episodes) -> None:
    """The shared mapped file: loads and stores through the mapping, read() and write() of its
    pages, msync write-back, and reclaim of a page that the next access faults back in."""
    g, lay, rng, p = e.g, e.lay, e.rng, e.p
    if not lay.mapped:
        return
    for name in MAPPED:
        ep = e.of(name)
        if not ep.size:
            continue
        r, c = g.first[ep], e.cpu[ep]
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
                g.put(r, 4, E.K_USER, e.buffer(e.slot[ep]), cpu=c)
