"""A virtually indexed data cache at page x colour granularity (arch/parisc/kernel/cache.c, 2.6.11).

What the flushes exist for is data, so the model follows data versions, not bytes:

  lines       {pfn * colours + colour: [version, dirty]}: which colours hold a copy of the
              frame's data, of which version, and whether it is newer than memory (dirty)
  mem_version per frame, the version memory holds
  latest      per frame, the version of the most recent write (CPU or DMA)

Versions are the sequence numbers of the operations that wrote them (``clock`` ticks once per
operation), so they only grow; boot content is version 0 everywhere. A read returns the copy at its
colour if there is one, else memory (and leaves a clean copy); any read that returns something
other than ``latest`` is a **stale read**, the corruption the flushes prevent. A device reading
memory (DMA to a disk) is checked the same way.

Verbs, one per primitive: ``flush_page`` (fdc loop: write back if dirty, invalidate: one colour),
``purge_page`` (pdc: invalidate without write back), ``dma_write`` (memory takes a new version;
the line at the coherence index is invalidated, the others are not: that is the point),
``device_read``, and ``flush_all`` (fdce on every CPU: every dirty line written back, in pfn then
colour order, then everything invalidated).

Simplifications: no capacity (lines are never evicted, so a dirty copy stays until flushed), no
instruction cache, and one cache for all CPUs (PA8800 L1s are per core, but the kernel's flushes
are broadcast, so what is coherent is decided by the same primitives).
"""

from __future__ import annotations

import numpy as np


class Cache:
    """The lines, memory versions and latest versions of every frame.

    The lines live in one of two forms: a dict (the reference's verbs, one line at a time) or
    three sorted arrays (the batched engine: ``cache_batch``). Whichever form an engine asks for
    is made from the other on demand, so a run could even switch engines between batches."""

    def __init__(self, frames: int, colours: int) -> None:
        self.colours = colours
        self._lines: dict[int, list] | None = {}
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.mem_version = np.zeros(frames, dtype=np.int64)
        self.latest = np.zeros(frames, dtype=np.int64)
        self.clock = 0
        self.stale_reads = 0
        # cache_batch's per-frame marks, all False (-1) between batches
        self.scratch = np.zeros(frames, dtype=bool)
        self.colour_mark = np.full(frames, -1, dtype=np.int32)

    @property
    def lines(self) -> dict[int, list]:
        if self._lines is None:
            keys, version, dirty = self._arrays
            self._lines = {int(key): [int(v), bool(d)] for key, v, d in zip(keys, version, dirty, strict=True)}
            self._arrays = None
        return self._lines

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lines as (key, version, dirty), sorted by key = pfn * colours + colour."""
        if self._arrays is None:
            lines = self._lines
            keys = np.fromiter(lines.keys(), dtype=np.int64, count=len(lines))
            version = np.fromiter((v for v, _ in lines.values()), dtype=np.int64, count=len(lines))
            dirty = np.fromiter((d for _, d in lines.values()), dtype=bool, count=len(lines))
            order = np.argsort(keys)
            self._arrays = (keys[order], version[order], dirty[order])
            self._lines = None
        return self._arrays

    def set_arrays(self, keys: np.ndarray, version: np.ndarray, dirty: np.ndarray) -> None:
        self._arrays, self._lines = (keys, version, dirty), None

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lines as sorted arrays without changing which form is kept (tests, invariants)."""
        if self._arrays is not None:
            return self._arrays
        keep = self._lines
        out = self.arrays()
        self._lines, self._arrays = keep, None
        return out

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _key(self, pfn: int, colour: int) -> int:
        return pfn * self.colours + colour

    def write(self, pfn: int, colour: int) -> None:
        """A CPU store through a translation of this colour."""
        v = self._tick()
        self.lines[self._key(pfn, colour)] = [v, True]
        self.latest[pfn] = v

    def read(self, pfn: int, colour: int) -> None:
        """A CPU load through a translation of this colour."""
        self._tick()
        line = self.lines.get(self._key(pfn, colour))
        if line is None:
            v = int(self.mem_version[pfn])
            self.lines[self._key(pfn, colour)] = [v, False]
        else:
            v = line[0]
        if v != self.latest[pfn]:
            self.stale_reads += 1

    def flush_page(self, pfn: int, colour: int) -> None:
        self._tick()
        line = self.lines.pop(self._key(pfn, colour), None)
        if line is not None and line[1]:
            self.mem_version[pfn] = line[0]

    def purge_page(self, pfn: int, colour: int) -> None:
        self._tick()
        self.lines.pop(self._key(pfn, colour), None)

    def dma_write(self, pfn: int, colour: int) -> None:
        """The device writes memory; colour is the coherence index (-1: none is invalidated)."""
        v = self._tick()
        self.mem_version[pfn] = v
        self.latest[pfn] = v
        if colour >= 0:
            self.lines.pop(self._key(pfn, colour), None)

    def device_read(self, pfn: int) -> None:
        self._tick()
        if self.mem_version[pfn] != self.latest[pfn]:
            self.stale_reads += 1

    def flush_all(self) -> None:
        self._tick()
        for key in sorted(self.lines):
            version, dirty = self.lines[key]
            if dirty:
                self.mem_version[key // self.colours] = version
        self.lines.clear()
