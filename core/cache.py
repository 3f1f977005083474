"""A virtually indexed data cache at page x colour granularity (arch/parisc/kernel/cache.c, 2.6.11).

What the flushes exist for is data, so the model follows data versions, not bytes:

  lines       {pfn * colours + colour: [version, dirty]}: which colours hold a copy of the
              frame's data, of which version, and whether it is newer than memory (dirty)
  mem_stale   per frame, whether memory holds anything but the frame's latest write

Within a batch a version is the sequence number of the operation that wrote it (``clock`` ticks
once per operation from 0), and a frame's memory version and latest write (CPU or DMA) are kept
for the frames the batch touches. A read returns the copy at its colour if there is one, else
memory (and leaves a clean copy); any read that returns something other than the latest write is
a **stale read**, the corruption the flushes prevent. A device reading memory (DMA to a disk) is
checked the same way.

Between batches the cache is **settled** (``settle``): every version is CURRENT (equal to its
frame's latest write) or STALE, and the clock is back at 0. Nothing is lost: a read compares what
it returns only with the latest write, new versions are always newer than every old one, so a
copy that is stale stays stale until overwritten and two stale versions are never compared. So
versions never wrap, and a frame costs one bool of memory state and one int8 per line, where
absolute versions cost three int32s per frame.

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

MANY = -2  # FrameLines.colour of a frame with several lines: they are in ``more``
CURRENT, STALE = 0, -1  # a settled version: the frame's latest write, or anything older
VERSION = np.int8  # the dtype of the table's settled versions


class FrameLines:
    """The lines as the batched engine keeps them: a row per frame. A frame almost always has at
    most one line (a page's kernel and user translations are congruent, or the kernel's is
    flushed), so a batch reads and replaces the lines of the frames it touches without going
    over all the others: under ``unmapped`` nothing flushes the whole cache, and the lines
    carried between batches outnumber a batch's operations several times.

      colour          per frame: its only line's colour, -1 for none, MANY for several
      version, dirty  per frame: that line's
      more            (keys, version, dirty) of the lines of frames with several, in no order
      holders         frames that may hold a line, as a list of arrays with repeats (what a
                      whole-cache flush reaches): every frame that holds one is in it. Cheaper
                      to append to than to keep exact; compacted when it has grown
    """

    def __init__(self, frames: int, colours: int) -> None:
        self.shift = colours.bit_length() - 1  # colours is a power of two
        # the smallest type that holds a colour, -1 and MANY: every page of these arrays is
        # written in a run, and a fresh page costs a fault
        self.colour = np.full(frames, -1, dtype=np.int16 if colours < 1 << 15 else np.int32)
        self.version = np.zeros(frames, dtype=VERSION)
        self.dirty = np.zeros(frames, dtype=bool)
        self.more = _no_lines()
        self.holders: list[np.ndarray] = []
        self._held = 0  # entries in holders
        self._compact_at = 1 << 16

    def holding(self, scratch: np.ndarray | None = None) -> np.ndarray:
        """The frames that hold a line, each once, in no particular order; ``scratch``, if given,
        a per-frame bool array, all False, left so."""
        h = np.concatenate(self.holders) if self.holders else np.zeros(0, dtype=np.int64)
        h = h[self.colour[h] != -1]
        # each once: marked in the scratch and read back, which costs a pass over a bool per
        # frame; a sort costs more once the holders are a few per cent of the frames
        if scratch is None or h.size * 64 < self.colour.size:
            h = np.unique(h)
        else:
            scratch[h] = True
            h = np.flatnonzero(scratch)
            scratch[h] = False
        self.holders, self._held = [h], h.size
        return h

    def lines_of(self, frames: np.ndarray, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lines (keys, versions, dirty) of ``frames`` (each once), in no particular order;
        ``scratch`` is a per-frame bool array, all False, left so."""
        c = self.colour[frames]
        one = np.flatnonzero(c >= 0)
        f = frames[one]
        lines = ((f << self.shift) + c[one], self.version[f], self.dirty[f])
        many = frames[c == MANY]
        if not many.size:
            return lines
        scratch[many] = True
        i = np.flatnonzero(scratch[self.more[0] >> self.shift])
        scratch[many] = False
        return tuple(np.concatenate([a, b[i]]) for a, b in zip(lines, self.more, strict=True))

    def replace(self, frames: np.ndarray, lines: tuple[np.ndarray, np.ndarray, np.ndarray],
                scratch: np.ndarray, everything: bool) -> None:
        """The lines of ``frames`` (each once) become ``lines``, every one of them a line of one
        of those frames; ``everything``: ``frames`` are all that held lines."""
        keys, version, dirty = lines
        many = frames[self.colour[frames] == MANY]
        if many.size:  # their lines leave ``more``
            scratch[many] = True
            i = np.flatnonzero(~scratch[self.more[0] >> self.shift])
            scratch[many] = False
            self.more = tuple(a[i] for a in self.more)
        self.colour[frames] = -1
        f, c = keys >> self.shift, (keys & ((1 << self.shift) - 1)).astype(self.colour.dtype)
        self.colour[f] = c
        self.version[f], self.dirty[f] = version, dirty
        clash = f[self.colour[f] != c]  # a frame given two lines keeps the last one written
        if clash.size:
            self.colour[clash] = MANY
            i = np.flatnonzero(self.colour[f] == MANY)
            self.more = tuple(np.concatenate([a, b[i]]) for a, b in zip(self.more, lines, strict=True))
        if everything:
            self.holders, self._held = [], 0
        self.holders.append(f)
        self._held += f.size
        if self._held > self._compact_at:  # repeats and frames since emptied: drop them
            self._compact_at = 4 * self.holding(scratch).size + (1 << 16)

    def sorted_lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every line, sorted by key (a pass over every frame: conversions and checks only)."""
        f = np.flatnonzero(self.colour >= 0)
        keys = np.concatenate([(f << self.shift) + self.colour[f], self.more[0]])
        order = np.argsort(keys, kind="stable")
        return (keys[order], np.concatenate([self.version[f], self.more[1]])[order],
                np.concatenate([self.dirty[f], self.more[2]])[order])

    @classmethod
    def of(cls, frames: int, colours: int, keys: np.ndarray, version: np.ndarray,
           dirty: np.ndarray) -> FrameLines:
        table = cls(frames, colours)
        held = np.unique(keys >> table.shift)
        table.replace(held, (keys, version, dirty), np.zeros(frames, dtype=bool), everything=True)
        return table


def _no_lines() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, np.zeros(0, dtype=bool)


class Cache:
    """The lines and the memory state of every frame.

    The lines live in one of two forms: a dict (the reference's verbs, one line at a time) or
    a ``FrameLines`` table (the batched engine: ``cache_batch``). Whichever form an engine asks
    for is made from the other on demand, so a run could even switch engines between batches.
    The verbs keep this batch's memory versions and latest writes in ``_mem`` and ``_latest``
    (frames absent from them hold what the settled state says) until ``settle``."""

    def __init__(self, frames: int, colours: int) -> None:
        self.frames = frames
        self.colours = colours
        self._lines: dict[int, list] | None = {}
        self._table: FrameLines | None = None
        self.mem_stale = np.zeros(frames, dtype=bool)
        self._mem: dict[int, int] = {}
        self._latest: dict[int, int] = {}
        self.clock = 0
        self.stale_reads = 0

    @property
    def lines(self) -> dict[int, list]:
        if self._lines is None:
            keys, version, dirty = self._table.sorted_lines()
            self._lines = {int(key): [int(v), bool(d)] for key, v, d in zip(keys, version, dirty, strict=True)}
            self._table = None
        return self._lines

    def table(self) -> FrameLines:
        """The lines as a per-frame table (the batched form, which holds settled versions only)."""
        if self._table is None:
            self.settle()
            self._table = FrameLines.of(self.frames, self.colours, *self._sorted_dict())
            self._lines = None
        return self._table

    def _sorted_dict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lines = self._lines
        keys = np.fromiter(lines.keys(), dtype=np.int64, count=len(lines))
        version = np.fromiter((v for v, _ in lines.values()), dtype=np.int64, count=len(lines))
        dirty = np.fromiter((d for _, d in lines.values()), dtype=bool, count=len(lines))
        order = np.argsort(keys)
        return keys[order], version[order], dirty[order]

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every line as (key, version, dirty) sorted by key = pfn * colours + colour, without
        changing which form is kept (tests, invariants)."""
        return self._table.sorted_lines() if self._table is not None else self._sorted_dict()

    def settle(self) -> None:
        """End of a batch: every version becomes CURRENT or STALE against its frame's latest write
        and the clock goes back to 0 (see the module's docstring for why nothing is lost). Only the
        frames whose latest write moved have anything to change: elsewhere every version is still
        a settled one (a new version is only ever made by a write, which moves the latest)."""
        latest, mem = self._latest, self._mem
        if latest or mem:
            stale = self.mem_stale
            for pfn, v in mem.items():
                stale[pfn] = v != latest.get(pfn, CURRENT)
            for pfn in latest.keys() - mem.keys():
                stale[pfn] = True  # memory still holds a settled version, older than this write
            if latest:
                colours = self.colours
                for key, line in self.lines.items():
                    v = latest.get(key // colours)
                    if v is not None:
                        line[0] = CURRENT if line[0] == v else STALE
            mem.clear()
            latest.clear()
        self.clock = 0

    def settled(self) -> bool:
        return self.clock == 0 and not self._mem and not self._latest

    def line_versions(self) -> np.ndarray:
        """Every line's version, in the order the lines are held (the table's frames, then its
        frames with several; or the dict's order): what the invariants check."""
        table = self._table
        if table is not None:
            return np.concatenate([table.version[table.colour >= 0], table.more[1]])
        return np.fromiter((v for v, _ in self._lines.values()), dtype=np.int64, count=len(self._lines))

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _key(self, pfn: int, colour: int) -> int:
        return pfn * self.colours + colour

    def _memory(self, pfn: int) -> int:
        v = self._mem.get(pfn)
        return v if v is not None else STALE if self.mem_stale[pfn] else CURRENT

    def write(self, pfn: int, colour: int) -> None:
        """A CPU store through a translation of this colour."""
        v = self._tick()
        self.lines[self._key(pfn, colour)] = [v, True]
        self._latest[pfn] = v

    def read(self, pfn: int, colour: int) -> None:
        """A CPU load through a translation of this colour."""
        self._tick()
        line = self.lines.get(self._key(pfn, colour))
        if line is None:
            v = self._memory(pfn)
            self.lines[self._key(pfn, colour)] = [v, False]
        else:
            v = line[0]
        if v != self._latest.get(pfn, CURRENT):
            self.stale_reads += 1

    def flush_page(self, pfn: int, colour: int) -> None:
        self._tick()
        line = self.lines.pop(self._key(pfn, colour), None)
        if line is not None and line[1]:
            self._mem[pfn] = line[0]

    def purge_page(self, pfn: int, colour: int) -> None:
        self._tick()
        self.lines.pop(self._key(pfn, colour), None)

    def dma_write(self, pfn: int, colour: int) -> None:
        """The device writes memory; colour is the coherence index (-1: none is invalidated)."""
        v = self._tick()
        self._mem[pfn] = v
        self._latest[pfn] = v
        if colour >= 0:
            self.lines.pop(self._key(pfn, colour), None)

    def device_read(self, pfn: int) -> None:
        self._tick()
        if self._memory(pfn) != self._latest.get(pfn, CURRENT):
            self.stale_reads += 1

    def flush_all(self) -> None:
        self._tick()
        for key in sorted(self.lines):
            version, dirty = self.lines[key]
            if dirty:
                self._mem[key // self.colours] = version
        self.lines.clear()
