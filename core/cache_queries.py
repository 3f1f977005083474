"""The queries ``core.cache_batch`` answers its closed forms with, over one batch's operations
sorted by (frame, colour, time): runs of equal keys and "the previous marked element of my run",
"the last value before t" lookups, the times of whole-cache flushes, and the batch's versions
(what memory and each frame's latest write hold at its end) with the settling that turns them
into ``core.cache``'s CURRENT / STALE between batches. Each is a sort, a running max or a binary
search: nothing here iterates over operations.
"""

from __future__ import annotations

import numpy as np

from core.cache import CURRENT, STALE
from core.vec import merge_order, run_last


class Runs:
    """Runs of equal keys in a sorted array, and 'the previous marked element of my run'
    over them: one running max each, compared against the run's start."""

    def __init__(self, g: np.ndarray) -> None:
        n = g.size
        self.n = n
        first = np.flatnonzero(np.append(True, g[1:] != g[:-1])) if n else np.zeros(0, dtype=np.int64)
        # each run's first index, repeated over the run (a repeat is several times cheaper than a
        # running max, whose every step waits on the one before)
        length = np.empty_like(first)
        length[:-1] = first[1:] - first[:-1]
        length[-1:] = n - first[-1:]
        self.start = np.repeat(first, length)  # my run's first
        self.ends = first + length - 1  # each run's last
        self.length = length  # each run's (per-run values spread over runs: np.repeat(v, length))

    def exclusive_sum(self, delta: np.ndarray) -> np.ndarray:
        """Sum of ``delta`` over the earlier elements of my run."""
        total = np.cumsum(delta) - delta
        return total - total[self.start] if self.n else total

    def prev(self, mark: np.ndarray) -> np.ndarray:
        """Index of the last marked element of my run before me, else -1."""
        if not self.n:
            return np.zeros(0, dtype=np.int64)
        # the last marked index before me, plus one, over the whole array: a step function that
        # rises at each mark, laid out by repeating each step (a repeat is several times cheaper
        # than a running max, whose every step waits on the one before); then cut at my run's
        # start. Arithmetic, not masked stores: marks come in no pattern a branch predictor
        # could follow, and masked copies are several times slower.
        at = np.flatnonzero(mark)
        if not at.size:
            return np.full(self.n, -1, dtype=np.int64)
        steps = np.empty(at.size + 1, dtype=np.int64)  # elements at each step: up to the first mark, ...
        steps[0] = at[0] + 1
        steps[1:-1] = at[1:] - at[:-1]
        steps[-1] = self.n - 1 - at[-1]
        value = np.empty(at.size + 1, dtype=np.int64)
        value[0] = 0
        value[1:] = at + 1
        prev = np.repeat(value, steps)
        prev *= prev > self.start
        prev -= 1
        return prev


class Lookup:
    """'The last event of frame f before time t' over (pfn, time, tie, value) events."""

    def __init__(self, pfn: np.ndarray, time: np.ndarray, tie: np.ndarray | None, value: np.ndarray,
                 span: int, ties: int = 1, presorted: bool = False) -> None:
        # events come in a few runs already sorted by (frame, time): a stable sort of the combined
        # key merges them in about one pass
        key = pfn * span + time
        order = np.arange(pfn.size) if presorted else np.argsort(key if tie is None else key * ties + tie,
                                                                  kind="stable")
        self.pfn, self.value, self.span = pfn[order], value[order], span
        self.key = pfn[order] * span + time[order]

    def before(self, pfn: np.ndarray, time: np.ndarray, default: np.ndarray) -> np.ndarray:
        if not self.key.size:
            return default
        j = np.searchsorted(self.key, pfn * self.span + time, side="left") - 1
        ok = j >= 0
        ok[ok] = self.pfn[j[ok]] == pfn[ok]
        return np.where(ok, self.value[np.maximum(j, 0)], default)

    def last_per_frame(self) -> tuple[np.ndarray, np.ndarray]:
        return last_per_key(self.pfn, self.value)


def run_index(start: np.ndarray, n: int) -> np.ndarray:
    """Which run each of ``n`` elements is in, given the runs' first indices (each run's number
    repeated over its length: several times cheaper than a prefix sum of run starts)."""
    if not start.size:
        return np.zeros(n, dtype=np.int64)
    length = np.empty_like(start)
    length[:-1] = start[1:] - start[:-1]
    length[-1] = n - start[-1]
    return np.repeat(np.arange(start.size), length)


class Flushes:
    """The batch's whole-cache flushes by time: ``first_after[t]`` is the time of the first one
    after t (``span`` if none), ``last_upto[t]`` that of the last one at or before t (-1 if none).
    Both are step functions of t, laid out once over the batch's times by repeating each step
    (the times are distinct and rise); lookups are then gathers, where binary searches from
    operations in frame order would cost several times more."""

    def __init__(self, fa: np.ndarray, span: int) -> None:
        self.any, self.span = bool(fa.size), span
        self.first = int(fa[0]) if fa.size else span  # the batch's first whole-cache flush
        if self.any:
            steps = np.diff(np.concatenate([[0], fa, [span + 1]]))  # times 0 .. fa[0]-1, fa[0] .. fa[1]-1, ...
            self.first_after = np.repeat(np.append(fa, span), steps)
            self.last_upto = np.repeat(np.append(-1, fa), steps)

    def after(self, t: np.ndarray) -> np.ndarray:
        return self.first_after[t] if self.any else np.full(t.size, self.span, dtype=np.int64)


def first_colour(kind: np.ndarray, frame_of: np.ndarray, col: np.ndarray, frames: int,
                  out: np.ndarray, bit: int) -> np.ndarray:
    """The colour of each frame's first operation of ``kind`` (-1: none); ``bit`` is set in
    ``out`` at any later one of the frame at another colour."""
    at = np.flatnonzero(kind)
    at_frame, at_col = frame_of[at], col[at]
    same = at_frame[1:] == at_frame[:-1]
    out[at[1:][same & (at_col[1:] != at_col[:-1])]] |= bit
    first = np.flatnonzero(np.append(True, ~same)) if at.size else at
    colour = np.full(frames, -1, dtype=col.dtype)
    colour[at_frame[first]] = at_col[first]
    return colour


class Versions:
    """The batch's memory versions and latest writes of the frames it touches, as (frames,
    versions) parts in the order they happened: a frame's last part is its final value."""

    def __init__(self) -> None:
        self.mem: list[tuple[np.ndarray, np.ndarray]] = []
        self.last: list[tuple[np.ndarray, np.ndarray]] = []

    def memory(self, frames: np.ndarray, versions: np.ndarray) -> None:
        self.mem.append((frames, versions))

    def latest(self, frames: np.ndarray, versions: np.ndarray) -> None:
        self.last.append((frames, versions))

    @staticmethod
    def final(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Each frame once, sorted, with its last version."""
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        f = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        o = merge_order(f)  # (each part is sorted by frame)
        return last_per_key(f[o], v[o])


def last_per_key(frame: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's last element (``frame`` grouped into runs, in time order within each)."""
    end = run_last(frame)
    return frame[end], value[end]


def memory_at_start(cache, frames: np.ndarray) -> np.ndarray:
    return np.where(cache.mem_stale[frames], STALE, CURRENT)


def settle(cache, out: Versions, frames: np.ndarray, lines: tuple, settled: tuple, shift: int,
           scratch: np.ndarray, everything: bool) -> None:
    """``Cache.settle`` for the batch's results: memory is stale where it is not the latest write
    (a frame written and not written back holds an older, settled version), a line is CURRENT iff
    it holds its frame's latest write (an untouched frame's latest is CURRENT); then the lines of
    ``frames`` become ``settled`` (lines whose versions are settled already: no lookup) and
    ``lines``."""
    wf, wv = out.final(out.last)
    mf, mv = out.final(out.mem)

    def latest_of(f: np.ndarray) -> np.ndarray:
        if not wf.size:
            return np.full(f.size, CURRENT)
        j = np.minimum(np.searchsorted(wf, f), wf.size - 1)
        return np.where(wf[j] == f, wv[j], CURRENT)

    cache.mem_stale[wf] = True
    cache.mem_stale[mf] = mv != latest_of(mf)
    keys, version, dirty = lines
    version = np.where(version == latest_of(keys >> shift), CURRENT, STALE)
    lines = (keys, version, dirty)
    if settled[0].size:
        lines = tuple(np.concatenate(pair) for pair in zip(settled, lines, strict=True))
    cache.table().replace(frames, lines, scratch, everything)
