"""Events: what a workload asks of the kernel, as batches of a structured NumPy dtype.

A stream is an iterator of ``EVENT`` arrays (batches), so a run holds one batch at a time however
long the stream is. Pages are named by *handles*: small integers the workload chooses, bounded by
the stream's ``max_handles``, so the kernel state can keep a flat handle -> pfn table.

Fields:
  kind    one of the ``K_*`` codes below
  order   allocation order (2**order pages) for the ALLOC kinds; a direction or context flag for
          K_IO (1 = memory to device), K_COPY (1 = into the page), K_USER (1 = store) and K_FREE (1 = the page goes
          with an address space torn down by exit or exec); else 0
  cpu     the CPU the event runs on (kmap_atomic slots and local flushes are per CPU)
  handle  the page (block head) the event is about, or -1
  addr    user virtual page number where one exists (congruence on VI machines); for K_RUN the
          nanoseconds the task ran in user mode; for K_FORK the PTEs the parent maps; else 0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

EVENT = np.dtype([("kind", "u1"), ("order", "u1"), ("cpu", "u2"), ("handle", "i4"), ("addr", "u4")])

K_SYSCALL = 0  # a system call: one kernel entry and exit
K_FORK = 1  # fork(): a kernel entry plus dup_mm's base work; addr = PTEs copy_page_range copies
K_EXEC = 2
K_EXIT = 3
K_ALLOC_ANON = 4  # user page fault: GFP_HIGHUSER page for an anonymous mapping
K_ALLOC_PAGECACHE = 5  # GFP_HIGHUSER page for the page cache (no kernel entry of its own)
K_ALLOC_SLAB = 6  # GFP_KERNEL page for a slab cache (dentries, inodes, buffer_heads...)
K_ALLOC_STACK = 7  # GFP_KERNEL block for a kernel stack (order 1 with 8 KiB stacks)
K_ALLOC_PGTABLE = 8  # a user PTE page: GFP_KERNEL, plus __GFP_HIGHMEM with CONFIG_HIGHPTE
K_FREE = 9  # __free_pages of the block a handle holds
K_KMAP = 10  # kmap(): a persistent mapping, may sleep
K_KUNMAP = 11
K_KMAP_ATOMIC = 12  # kmap_atomic + kunmap_atomic pair on this CPU
K_PTE_UPDATE = 13  # the kernel edits a PTE page (pte_offset_map when the page is in highmem)
K_IO = 14  # one page of block I/O (DMA)
K_COPY = 15  # copy one page between kernel and user (copy_to_user / copy_from_user)
K_USER = 16  # a user load (order 0) or store (order 1) through the process's mapping of the page
K_IRQ = 17  # an interrupt taken in user mode (the timer tick): a kernel entry and exit, no syscall
K_RUN = 18  # the task runs in user mode for ``addr`` nanoseconds: wall-clock time no kernel path owns
K_COW = 19  # do_wp_page copies the page (handle) into the one K_ALLOC_ANON just gave the faulting task
NKINDS = 20

KIND_NAMES = ("syscall", "fork", "exec", "exit", "alloc_anon", "alloc_pagecache", "alloc_slab",
              "alloc_stack", "alloc_pgtable", "free", "kmap", "kunmap", "kmap_atomic",
              "pte_update", "io", "copy", "user", "irq", "run", "cow")

# GFP classes of the allocating kinds.
GFP_NONE, GFP_HIGHUSER, GFP_KERNEL, GFP_PGTABLE = 0, 1, 2, 3
GFP_OF_KIND = np.zeros(NKINDS, dtype=np.uint8)
GFP_OF_KIND[[K_ALLOC_ANON, K_ALLOC_PAGECACHE]] = GFP_HIGHUSER
GFP_OF_KIND[[K_ALLOC_SLAB, K_ALLOC_STACK]] = GFP_KERNEL
GFP_OF_KIND[K_ALLOC_PGTABLE] = GFP_PGTABLE
IS_ALLOC = GFP_OF_KIND != GFP_NONE

# Kinds that enter the kernel from user mode (4G/4G pays a cr3 reload on entry and on exit).
ENTERS_KERNEL = np.zeros(NKINDS, dtype=bool)
ENTERS_KERNEL[[K_SYSCALL, K_FORK, K_EXEC, K_EXIT, K_ALLOC_ANON, K_IRQ]] = True

# Kinds that take a handle.
NEEDS_HANDLE = IS_ALLOC.copy()
NEEDS_HANDLE[[K_FREE, K_KMAP, K_KUNMAP, K_KMAP_ATOMIC, K_PTE_UPDATE, K_IO, K_COPY, K_USER, K_COW]] = True

# Kinds whose order field is a 0/1 flag (see the module docstring).
HAS_FLAG = np.zeros(NKINDS, dtype=bool)
HAS_FLAG[[K_FREE, K_IO, K_COPY, K_USER]] = True

MAX_ORDER = 11  # orders 0..10, as the kernel's free_area[MAX_ORDER]
# check_batch's per-kind facts in one byte, so one gather reads both: the low 7 bits the largest
# order field the kind may carry (1 for a flag, else MAX_ORDER-1), the top bit NEEDS_HANDLE.
CHECK_BITS = (np.where(HAS_FLAG, 1, MAX_ORDER - 1) | (NEEDS_HANDLE << 7)).astype(np.uint8)


@dataclass
class Stream:
    """An event stream: its batches and the bounds the kernel state is sized from."""

    batches: Iterable[np.ndarray]
    max_handles: int
    source: str = "built"
    params: dict[str, object] = field(default_factory=dict)
    setup_events: int = 0  # events before the workload's first episode (its prologue)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)


def make_batch(rows: Iterable[tuple[int, int, int, int, int]] | list) -> np.ndarray:
    """A batch from (kind, order, cpu, handle, addr) tuples; convenient in tests."""
    return np.array(list(rows), dtype=EVENT)


def ev(kind: int, handle: int = -1, order: int = 0, cpu: int = 0, addr: int = 0) -> tuple:
    """One event as a tuple for ``make_batch``."""
    return (kind, order, cpu, handle, addr)


def _field_error(batch: np.ndarray, kind: np.ndarray, ncpus: int) -> None:
    """Raise check_batch's error for the first of order, cpu and flag that is out of range."""
    from core.errors import StreamError

    if int(batch["order"].max()) >= MAX_ORDER:
        raise StreamError(f"order {int(batch['order'].max())} is larger than MAX_ORDER-1 = {MAX_ORDER - 1}")
    if int(batch["cpu"].max()) >= ncpus:
        raise StreamError(f"cpu {int(batch['cpu'].max())} does not exist (machine has {ncpus})")
    flags = np.compress(HAS_FLAG[kind], batch["order"])
    raise StreamError(f"flag {int(flags.max())} in the order field of a free, io, copy or user event (0 or 1)")


def check_batch(batch: np.ndarray, max_handles: int, ncpus: int) -> None:
    """Reject a malformed batch before it touches any state."""
    from core.errors import StreamError

    if batch.dtype != EVENT:
        raise StreamError(f"batch dtype is {batch.dtype}, expected the EVENT dtype")
    if batch.size == 0:
        return
    kind = batch["kind"].astype(np.intp)  # table lookups with an intp index are the fast ones
    # (the max of the contiguous copy: a third of the strided field's, 0.2 ms per 2 M events against 0.9)
    top = int(kind.max())
    if top >= NKINDS:
        raise StreamError(f"event kind {top} is unknown (0..{NKINDS - 1})")
    # one gather of CHECK_BITS and one pass over the orders check the orders' bound, the flags and
    # which kinds need a handle (check_batch: 5.0 ms per 2 M events against 7.7 with a max of the orders, a
    # compress of the flags and a gather of NEEDS_HANDLE). The messages, in their order, only once
    # one fails
    bits = CHECK_BITS[kind]
    if (batch["order"] > (bits & 0x7F)).any() or int(batch["cpu"].max()) >= ncpus:
        _field_error(batch, kind, ncpus)
    # as unsigned, a negative handle is 2**31 or more: out of range too (handles are int32, so no
    # bound above 2**31 admits more). One compare, no copy of the handles
    out = (bits >= 0x80) & (batch["handle"].view(np.uint32) >= min(max_handles, 1 << 31))
    if out.any():
        raise StreamError(f"handle out of range 0..{max_handles - 1}")
