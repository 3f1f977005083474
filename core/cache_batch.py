"""The cache of ``core.cache`` over a batch of operations at once (the fast engine).

The scalar model is a state machine per cache line, coupled to its frame's memory version. Its
outcome has a closed form in "the last operation of some kind before time t" queries, each a
sort and a binary search:

- a line (pfn, colour) holds data at time t iff some load or store on it came after its last
  invalidation (a flush, purge or DMA at that colour, or a whole-cache flush);
- it is dirty iff a store came after that invalidation; its version is then the last store's;
  a clean line holds what the load that filled it read;
- memory's version at t is the last DMA or write-back before t; write-backs are flushes of dirty
  lines (the version of the line's last store) and, for a whole-cache flush, every line dirty at
  that moment, in key order;
- a read is stale iff what it returns differs from the frame's last write before it.

The write-backs depend only on stores and invalidations, never on loads, so memory's history is
known before any load is looked at and nothing has to be iterated. Lines from earlier batches join
as LOAD operations at the batch's start: all of them when the batch flushes the whole cache, else
those of the frames the batch touches.
"""

from __future__ import annotations

import numpy as np

# Operation codes. The line operations (W..D) come first: ``typ <= OP_D`` selects them. Whole-cache
# flushes are not operations here but a separate array of times; LOAD is a line carried in from an
# earlier batch.
OP_W, OP_R, OP_F, OP_P, OP_D, OP_DEV, LOAD = range(7)


class Runs:
    """Runs of equal keys in a sorted array, and 'the previous marked element of my run'
    over them: one running max each, compared against the run's start."""

    def __init__(self, g: np.ndarray) -> None:
        n = g.size
        self.n = n
        self.at = np.arange(n)
        new = np.ones(n, dtype=bool)
        new[1:] = g[1:] != g[:-1]
        self.start = np.maximum.accumulate(np.where(new, self.at, 0)) if n else self.at  # my run's first
        self.last = np.append(new[1:], True) if n else new  # am I my run's last element
        self.ends = np.flatnonzero(self.last)

    def exclusive_sum(self, delta: np.ndarray) -> np.ndarray:
        """Sum of ``delta`` over the earlier elements of my run."""
        total = np.cumsum(delta) - delta
        return total - total[self.start] if self.n else total

    def prev(self, mark: np.ndarray) -> np.ndarray:
        """Index of the last marked element of my run before me, else -1."""
        prev = np.full(self.n, -1, dtype=np.int64)
        if self.n:  # shifted by one, then a running max: the last marked index before me
            np.copyto(prev[1:], self.at[:-1], where=mark[:-1])
            np.maximum.accumulate(prev, out=prev)
            prev[prev < self.start] = -1
        return prev


class _Lookup:
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
        if not self.pfn.size:
            return self.pfn, self.value
        end = np.flatnonzero(np.append(self.pfn[1:] != self.pfn[:-1], True))
        return self.pfn[end], self.value[end]


def play(cache, typ: np.ndarray, pfn: np.ndarray, col: np.ndarray, rel: np.ndarray, fa: np.ndarray,
         ticks: int) -> None:
    """Apply a batch's operations to ``cache``: stale reads counted, lines and versions updated.

    The operations come frame-major (by pfn, then time); ``rel`` is each one's time in the batch
    (its version is clock + rel), ``fa`` the sorted times of the whole-cache flushes, ``ticks`` how
    far the clock moves in all (operations that change nothing may have been left out). Every
    sort below is then of nearly sorted keys, which a stable sort merges in about one pass."""
    if not ticks:
        return
    C, t0 = cache.colours, cache.clock
    shift = C.bit_length() - 1  # colours is a power of two: key >> shift is the frame, key & (C-1) the colour
    span = ticks + 2
    keys, lver, ldirty = cache.arrays()
    if fa.size:
        take = np.ones(keys.size, dtype=bool)
    else:  # the lines of the frames this batch touches, through a scratch mark per frame
        touched = pfn[pfn >= 0]
        cache.scratch[touched] = True
        take = cache.scratch[keys >> shift]
        cache.scratch[touched] = False
    # -- line operations, grouped by line and in time order within a line -----------------------
    li = np.flatnonzero((typ <= OP_D) & (col >= 0))
    nl = int(np.count_nonzero(take))
    g = np.concatenate([keys[take], (pfn[li] << shift) + col[li]])
    t = np.concatenate([np.zeros(nl, dtype=np.int64), rel[li]])
    ty = np.concatenate([np.full(nl, LOAD), typ[li]])
    ver = np.concatenate([lver[take] - t0, rel[li]])  # versions relative to t0 too (may be <= 0)
    dl = np.concatenate([ldirty[take], np.zeros(li.size, dtype=bool)])
    o = np.argsort(g * span + t, kind="stable")  # frame-major input: only a frame's colours interleave
    g, t, ty, ver, dl = g[o], t[o], ty[o], ver[o], dl[o]
    is_inv = (ty == OP_F) | (ty == OP_P) | (ty == OP_D)
    is_set = (ty == OP_W) | (ty == OP_R) | (ty == LOAD)
    is_w = (ty == OP_W) | ((ty == LOAD) & dl)
    runs = Runs(g)
    prev_inv, prev_set, prev_w = runs.prev(is_inv), runs.prev(is_set), runs.prev(is_w)
    # whole-cache flushes by time: the last one before each time, and the first one after it
    fa_at = np.zeros(span + 1, dtype=np.int64)
    fa_at[fa] = 1
    fa_count = np.cumsum(fa_at)  # flushes at times <= i
    fa_last = np.concatenate([[-1], fa])[fa_count]  # the last flush at a time <= i, or -1
    fa_first = np.concatenate([fa, [span]])[fa_count]  # the first flush at a time > i, or span
    fa_before = fa_last[np.maximum(t - 1, 0)] * (t > 0) - (t == 0)  # before t (LOADs at 0: none)
    t_inv = np.maximum(np.where(prev_inv >= 0, t[prev_inv], -1), fa_before)
    present = (prev_set >= 0) & (t[np.maximum(prev_set, 0)] > t_inv)
    dirty = (prev_w >= 0) & (t[np.maximum(prev_w, 0)] > t_inv)
    w_version = ver[np.maximum(prev_w, 0)]
    # -- memory's history: DMA writes and write-backs ---------------------------------------------
    wb_f = (ty == OP_F) & dirty
    # a store's line is written back by the first whole-cache flush after it, unless another store
    # or an invalidation of the line comes first
    if fa.size:
        nxt_fa = fa_first[t]  # first FA after t, or span
        wb_fa = _written_back_by_fa(runs, t, is_w, is_inv, np.maximum(prev_inv, prev_w), nxt_fa, span)
    else:
        nxt_fa, wb_fa = t, np.zeros(t.size, dtype=bool)
    d = np.flatnonzero(typ == OP_D)
    mem = _Lookup(np.concatenate([pfn[d], g[wb_f] >> shift, g[wb_fa] >> shift]),
                  np.concatenate([rel[d], t[wb_f], nxt_fa[wb_fa]]),
                  np.concatenate([np.zeros(d.size + int(wb_f.sum()), dtype=np.int64), g[wb_fa] & (C - 1)]),
                  np.concatenate([rel[d], w_version[wb_f], ver[wb_fa]]), span, C)
    wd = np.flatnonzero((typ == OP_W) | (typ == OP_D))
    latest = _Lookup(pfn[wd], rel[wd], None, rel[wd], span, presorted=True)
    # -- what every load returns ----------------------------------------------------------------
    frame = g >> shift
    fill = is_set & ~present
    value = np.where(ty == LOAD, ver, 0)
    absent_r = (ty == OP_R) & ~present
    value[absent_r] = mem.before(frame[absent_r], t[absent_r], cache.mem_version[frame[absent_r]] - t0)
    prev_fill = runs.prev(fill)
    hit = (ty == OP_R) & present
    value[hit] = np.where(dirty[hit], w_version[hit], value[np.maximum(prev_fill[hit], 0)])
    stores = ty == OP_W
    value[stores] = ver[stores]
    r = ty == OP_R
    stale = int(np.count_nonzero(value[r] != latest.before(frame[r], t[r], cache.latest[frame[r]] - t0)))
    dev = np.flatnonzero(typ == OP_DEV)
    seen = mem.before(pfn[dev], rel[dev], cache.mem_version[pfn[dev]] - t0)
    stale += int(np.count_nonzero(seen != latest.before(pfn[dev], rel[dev], cache.latest[pfn[dev]] - t0)))
    cache.stale_reads += stale
    # -- the state after the batch --------------------------------------------------------------
    prev = {"inv": prev_inv, "set": prev_set, "w": prev_w}
    _write_back(cache, runs, g, t, ver, value, (is_inv, is_set, is_w), prev, fa, (keys, lver, ldirty), take,
                mem, latest)
    cache.clock = t0 + ticks


def _written_back_by_fa(runs, t, is_w, is_inv, prev_mark, nxt_fa, span):
    """Stores written back by a whole-cache flush: those with a flush after them and before the
    next store or invalidation of their line. Each store or invalidation looks back at the one
    before it (``prev_mark``), and each line's last one at the end of the batch: a running max
    forward instead of a running min backward."""
    marked = is_w | is_inv
    wb = np.zeros(t.size, dtype=bool)
    j = np.flatnonzero(marked & (prev_mark >= 0))
    p = prev_mark[j]
    wb[p] = is_w[p] & (nxt_fa[p] < t[j])  # flush and operation times never coincide
    end = runs.ends
    last = np.where(marked[end], end, prev_mark[end])
    last = last[last >= 0]
    wb[last] = is_w[last] & (nxt_fa[last] < span)
    return wb


def _write_back(cache, runs, g, t, ver, value, marks, prev, fa, lines, take, mem, latest):
    """Memory and latest versions per touched frame; the lines as they stand after the batch."""
    t0 = cache.clock
    keys, lver, ldirty = lines
    for lookup, target in ((mem, cache.mem_version), (latest, cache.latest)):
        frames, values = lookup.last_per_frame()
        target[frames] = values + t0
    if g.size:
        end = runs.ends
        last_fa = fa[-1] if fa.size else -1
        # the last marked element of each run: its end if marked, else the one before it
        inv, s, w = (np.where(mark[end], end, prev[name][end]) for mark, name in zip(marks, ("inv", "set", "w"),
                                                                                         strict=True))
        t_inv = np.maximum(np.where(inv >= 0, t[np.maximum(inv, 0)], -1), last_fa)
        present = (s >= 0) & (t[np.maximum(s, 0)] > t_inv)
        dirty = present & (w >= 0) & (t[np.maximum(w, 0)] > t_inv)
        version = np.where(dirty, ver[np.maximum(w, 0)], value[np.maximum(s, 0)])
        new_keys, new_ver, new_dirty = g[end][present], version[present] + t0, dirty[present]
    else:
        new_keys = new_ver = np.zeros(0, dtype=np.int64)
        new_dirty = np.zeros(0, dtype=bool)
    keep = ~take
    if not keep.any():  # every carried line took part (a batch with a whole-cache flush): g is sorted
        cache.set_arrays(new_keys, new_ver, new_dirty)
        return
    all_keys = np.concatenate([keys[keep], new_keys])
    order = np.argsort(all_keys, kind="stable")  # two sorted runs: a stable sort merges them in one pass
    cache.set_arrays(all_keys[order], np.concatenate([lver[keep], new_ver])[order],
                     np.concatenate([ldirty[keep], new_dirty])[order])
