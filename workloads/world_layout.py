"""Where every structure of the generators' world sits: its page handles in one static layout,
and the user addresses its mappings start at.

Every handle belongs to exactly one structure, at a fixed place, from the prologue to the end of
the stream; a structure's handles are one contiguous range, in the order shm, process slots, page
cache, the pools, the mapped file. A page that an episode replaces is freed and allocated again
under the same handle, so the layout, and the table a stream needs (``handles``), never grows.

Addresses are user virtual page numbers of i386 (``layout.PAGE`` pages); only what the cache
colour of a user page needs is modelled: shm and the shared file at SHMLBA-aligned bases the same
in every process, private pages at a heap base drawn per process slot (2.6 has no ASLR, so a new
process in a slot maps its heap where the last one did).
"""

from __future__ import annotations

import numpy as np

from workloads.layout import PAGE, PER_PAGE, PTE_SPAN, PTRS_PER_PTE

SHM_BASE = 0x40000000 // PAGE  # shmat address, in pages: a multiple of SHMLBA (4 MiB) on every arch
FILE_BASE = 0x80000000 // PAGE  # where every process maps the shared file, also SHMLBA-aligned
HEAP_PAGES = 1 << 20  # private mappings start at a page of [0, 4 GiB) drawn per process slot


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

    # a process slot: its kernel stack, its PTE pages, its private pages, then the COW copies

    def slot_base(self, slot: np.ndarray) -> np.ndarray:
        return self.base["procs"] + slot * self.per_slot

    def anon_handle(self, slot: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.slot_base(slot) + 1 + self.ptes + j

    def last_pte(self, slot: np.ndarray) -> np.ndarray:
        return self.slot_base(slot) + self.ptes
