"""``from-strace``: a real program's ``strace -f -tt`` log turned into an event stream.

strace shows the system calls a program makes, not what the kernel does inside them, so the
conversion is a model, kept simple and following the synthetic workloads' conventions (slab pages,
kernel stacks, PTE pages, kmap_atomic copies, teardown frees). It is built in three parts, each
module's docstring saying what it models and where it simplifies:

  ``strace_log``     reading the log: line prefixes, unfinished/resumed joins, quoted strings and
                     return values, malformed lines;
  ``strace_calls``   what each completed call means, as the events it produces: the dispatch, the
                     memory and process calls; ``strace_files`` the fd table and file I/O calls;
  ``strace_model``   the state those calls act on: tasks, address spaces, fd tables, the page
                     cache, slabs and page handles, and the kernel verbs that change it.

This module is the public entry: ``convert`` (a log to a ``Conversion``), ``Conversion.stream``
(its events for a machine) and ``bench_strace``. A call the log completes is one kernel entry,
whatever else it does; signal lines (``--- SIG... ---``) are not syscalls and are skipped; a line
of no known shape is malformed: skipped and listed (or ``StraceError`` with ``strict``).

The stream is valid whatever the log says: the converter tracks every handle (page held or not,
kmapped or not) and checks each use, and ``max_handles`` is its exact high-water mark plus 8.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from core import events as E
from core.events import Stream
from core.units import MiB
from workloads.errors import StraceError
from workloads.strace_calls import Syscalls
from workloads.strace_log import LogReader, Pending

HANDLE_MARGIN = 8

__all__ = ["Conversion", "StraceError", "bench_strace", "convert"]


@dataclass
class Conversion:
    """A converted log: its events in EVENT batches, and what the converter saw.

    ``max_handles``: the high-water mark of live handles plus a margin; ``lines``: lines read;
    ``skipped``: (line number, reason) of malformed lines; ``syscalls``: completed calls per name
    that the model knows (handlers and ``PLAIN``), ``unknown``: the others (each still a kernel
    entry); ``processes``: tasks (pids) created; ``capped_pages``: pages of I/O beyond
    ``max_pages`` per call, left out; ``kinds``: events per kind name (``E.KIND_NAMES``)."""

    batches: list[np.ndarray]
    max_handles: int
    lines: int
    skipped: list[tuple[int, str]]
    syscalls: dict[str, int]
    unknown: dict[str, int]
    processes: int
    path: str = ""
    capped_pages: int = 0
    events: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)

    def stream(self, cpus: int) -> Stream:
        """The events for a machine of ``cpus`` CPUs: each task's cpu folded modulo ``cpus``."""
        if cpus < 1:
            raise StraceError(f"strace:{self.path}: cpus must be >= 1 (got {cpus})")
        top = max((int(b["cpu"].max()) for b in self.batches if b.size), default=0)
        batches = self.batches if top < cpus else list(_fold(self.batches, cpus))
        return Stream(batches, self.max_handles, source=f"strace:{self.path}",
                      params={**self.params, "cpus": cpus})


def _fold(batches: list[np.ndarray], cpus: int) -> Iterator[np.ndarray]:
    for b in batches:
        out = b.copy()
        out["cpu"] %= cpus
        yield out


def convert(path: str, strict: bool = False, *, stack_order: int = 1, pagecache: int = 64 * MiB,
            max_pages: int = 256, fault_pages: int = 16, batch: int = 65536) -> Conversion:
    """Convert the ``strace -f -tt`` log at ``path`` (see the module docstring for the model).

    Malformed lines are skipped and listed in ``skipped`` (``strict``: the first raises
    StraceError naming its line). A log in which no line is an strace line raises StraceError."""
    pending = Pending()  # the reader's unfinished calls, where a new pid finds its parent's clone
    c = Syscalls(pending, stack_order, pagecache, max_pages, fault_pages)
    r = LogReader(path, strict, batch, c, pending)
    r.run()
    if r.lines - r.ignored - len(r.skipped) == 0:  # not one line of strace output
        if not r.skipped:
            raise StraceError(f"{path}: empty strace log")
        first, reason = r.skipped[0]
        raise StraceError(f"{path}:{first}: not an strace log: {reason}")
    counts = np.zeros(E.NKINDS, dtype=np.int64)
    for b in c.batches:
        counts += np.bincount(b["kind"], minlength=E.NKINDS)
    params = {"log": path, "stack_order": stack_order, "pagecache": pagecache, "max_pages": max_pages,
              "fault_pages": fault_pages}
    return Conversion(batches=c.batches, max_handles=c.hp.next + HANDLE_MARGIN, lines=r.lines,
                      skipped=r.skipped, syscalls=c.syscalls, unknown=c.unknown, processes=c.created,
                      path=path, capped_pages=c.capped, events=int(counts.sum()),
                      kinds={name: int(counts[k]) for k, name in enumerate(E.KIND_NAMES)}, params=params)


def bench_strace(path: str) -> dict[str, float | int]:
    """Conversion speed on one log: lines, seconds, lines per second, events."""
    start = time.perf_counter()
    conv = convert(path)
    seconds = time.perf_counter() - start
    return {"lines": conv.lines, "seconds": seconds, "lines_per_s": conv.lines / seconds if seconds else 0.0,
            "events": conv.events}
