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

from core.cache import CURRENT
from core.cache_queries import (
    Flushes,
    Lookup,
    Runs,
    Versions,
    first_colour,
    last_per_key,
    memory_at_start,
    run_index,
    settle,
)
from core.vec import merge_order, run_first, run_last

# Operation codes. The line operations (W..D) come first: ``typ <= OP_D`` selects them. Whole-cache
# flushes are not operations here but a separate array of times; LOAD is a line carried in from an
# earlier batch.
OP_W, OP_R, OP_F, OP_P, OP_D, OP_DEV, LOAD = range(7)


class _ClosedForms:
    """The frames of a batch whose line history has a closed form, found in one pass.

    - single-line frames: every store and flush at one colour, no read or DMA, and no line carried
      in at another colour (purges elsewhere then find nothing). Nothing is read, so nothing can
      be stale (``play_single``). Most frames are like this: a page zeroed and handed out, a page
      table written.
    - store-free frames: reads and DMA writes through one colour (the DMA's coherence index),
      flushes and purges anywhere, device reads, and no line carried in. No line is ever dirty, so
      memory and the latest version move only at DMA writes, together (``play_read_only``): a page
      read by the kernel, an I/O into the page cache.

    The general pass is left the rest. ``single`` and ``reads``: which operations belong to each
    kind; ``line``: which carried lines the single-line frames take; ``colour``: each operation's
    frame's line colour (-1: a store-free frame that reads nothing)."""

    SINGLE_OUT, READS_OUT = 1, 2  # bits of "this operation rules its frame out of that kind"

    def __init__(self, cache, typ: np.ndarray, pfn: np.ndarray, col: np.ndarray, keys: np.ndarray,
                 shift: int, start: np.ndarray) -> None:
        n, C = typ.size, cache.colours
        self.single, self.reads = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        self.line, self.colour = np.zeros(keys.size, dtype=bool), np.zeros(n, dtype=np.int64)
        if not n:
            return
        # (start: each frame's first operation, run_first(pfn)); per-frame facts are spread over
        # the operations by repeats, several times cheaper than gathers through frame_of
        length = np.diff(start, append=n)
        frame_of = np.repeat(np.arange(start.size), length)  # (run_index)
        is_r, is_d = typ == OP_R, typ == OP_D
        # single-line: out at a read, a DMA or a device read, or a store or flush at another colour
        # than the first; store-free: out at a store, a read or DMA with no colour, or one at
        # another colour than the first
        out = (is_r | (typ >= OP_D)).astype(np.uint8)  # (SINGLE_OUT is bit 0, READS_OUT bit 1)
        out |= ((typ == OP_W) | ((is_r | is_d) & (col < 0))).view(np.uint8) << 1
        single_colour = first_colour((typ == OP_W) | (typ == OP_F), frame_of, col, start.size, out, self.SINGLE_OUT)
        read_colour = first_colour(is_r | is_d, frame_of, col, start.size, out, self.READS_OUT)
        # per frame, whether an operation rules it out of each kind: the frames of those that do,
        # marked (a weighted bincount or an or-reduction over runs reads every operation's frame)
        single = single_colour >= 0
        single[frame_of[np.flatnonzero(out & self.SINGLE_OUT)]] = False
        reads = np.ones(start.size, dtype=bool)
        reads[frame_of[np.flatnonzero(out & self.READS_OUT)]] = False
        reads &= ~single
        # carried lines: a single-line frame may have one at its own colour, a store-free one none
        # (C, what it wants, is no line's colour). Each line finds its frame among the batch's,
        # which are in order (a binary search: per-frame marks would cost 4 bytes a frame)
        frames = pfn[start]
        want = np.where(single, single_colour, np.where(reads, C, -1))  # -1: no closed form
        line_frame = keys >> shift
        at = np.minimum(np.searchsorted(frames, line_frame), frames.size - 1)
        wanted = np.where(frames[at] == line_frame, want[at], -1)  # (-1 too: a frame not in the batch)
        kept = np.ones(frames.size, dtype=bool)
        kept[at[(wanted >= 0) & (wanted != (keys & (C - 1)))]] = False
        self.line = (wanted >= 0) & kept[at]
        single &= kept
        reads &= kept
        self.single, self.reads = np.repeat(single, length), np.repeat(reads, length)
        self.colour = np.repeat(np.where(single, single_colour, read_colour), length)


def play_single(out: Versions, lane: _ClosedForms, ops: tuple, lines: tuple, flushes: Flushes,
                shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single-line frames (``_ClosedForms``): each a sequence of stores, flushes and purges on
    one line, after the line carried in (if any). A dirty line is written back iff the next thing
    to reach it is a flush or a whole-cache flush: then memory gets its version. Memory ends with
    the last write-back, the latest version is the last store's, and the line survives, dirty, if
    the frame's last operation is a store with no whole-cache flush after it (a carried line never
    survives as it was: a store or flush always follows it). Memory's and the latest versions go
    to ``out``; returns the lines left (keys, versions, dirty), their versions settled already:
    each holds its frame's last store, the latest write, so each is CURRENT."""
    typ, pfn, col, rel = ops
    keys, lver, ldirty = lines
    span = flushes.span
    i = np.flatnonzero(lane.single & ((typ != OP_P) | (col == lane.colour)))  # purges elsewhere find no line
    if not i.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    f, ty, t = pfn[i], typ[i], rel[i]
    same = f[1:] == f[:-1]
    next_t = np.append(np.where(same, t[1:], span), span)
    next_flush = np.append(same & (ty[1:] == OP_F), False)
    fa_after = flushes.after(t)
    is_w = ty == OP_W
    # the carried lines first: a dirty one is written back if the frame's first operation is a
    # flush or a whole-cache flush comes before it (write-backs of the stores come later, and win)
    j = np.flatnonzero(lane.line)
    if j.size:
        start = run_first(f)
        line_frame = keys[j] >> shift
        first = start[np.searchsorted(f[start], line_frame)]  # (both in frame order)
        wb = np.flatnonzero(ldirty[j] & ((ty[first] == OP_F) | (flushes.first < t[first])))
        out.memory(line_frame[wb], lver[j[wb]])
    wb = np.flatnonzero(is_w & (next_flush | (fa_after < next_t)))  # flush and operation times never coincide
    out.memory(*last_per_key(f[wb], t[wb]))  # each frame's last write-back is memory's
    w = np.flatnonzero(is_w)
    out.latest(*last_per_key(f[w], t[w]))
    stays = np.flatnonzero(np.append(~same, True) & is_w & (fa_after == span))
    left = stays.size
    return (f[stays] << shift) + col[i[stays]], np.full(left, CURRENT, dtype=np.int64), np.ones(left, dtype=bool)


def play_read_only(cache, out: Versions, lane: _ClosedForms, ops: tuple, flushes: Flushes,
                   shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The store-free frames (``_ClosedForms``). A read or device read before the frame's first
    DMA is stale iff memory and the latest version differed at the start of the batch (after it
    they are equal); the last DMA sets both; the read colour's line survives, clean, holding
    memory as it then stands, if its last fill has nothing after it. Returns the lines left."""
    typ, pfn, col, rel = ops
    i = np.flatnonzero(lane.reads)
    empty = np.zeros(0, dtype=np.int64)
    if not i.size:
        return empty, empty, np.zeros(0, dtype=bool)
    ty, f, c, t = typ[i], pfn[i], lane.colour[i], rel[i]
    start = run_first(f)
    frame_of = run_index(start, f.size)
    frames = f[start]
    is_d = ty == OP_D
    d_before = np.cumsum(is_d) - is_d  # DMAs before each operation, in the batch so far
    d_seen = d_before > d_before[start][frame_of]  # ... and in its own frame
    reads = (ty == OP_R) | (ty == OP_DEV)
    memory = memory_at_start(cache, frames)  # memory (and the latest version) at the end of the batch
    cache.stale_reads += int(np.count_nonzero(reads & ~d_seen & (memory != CURRENT)[frame_of]))
    d = np.flatnonzero(is_d)
    if d.size:
        end = d[run_last(f[d])]  # each frame's last DMA
        dma = frame_of[end]
        memory[dma] = t[end]
        out.memory(frames[dma], memory[dma])
        out.latest(frames[dma], memory[dma])
    # the read colour's line: the frame's last operation on it is a read with no flush after it
    on_line = np.flatnonzero((ty == OP_R) | is_d | (((ty == OP_F) | (ty == OP_P)) & (col[i] == c)))
    if not on_line.size:
        return empty, empty, np.zeros(0, dtype=bool)
    last = on_line[run_last(f[on_line])]
    stays = last[(ty[last] == OP_R) & (flushes.after(t[last]) == flushes.span)]
    return (f[stays] << shift) + c[stays], memory[frame_of[stays]], np.zeros(stays.size, dtype=bool)


def play(cache, typ: np.ndarray, pfn: np.ndarray, col: np.ndarray, rel: np.ndarray, fa: np.ndarray,
         ticks: int) -> None:
    """Apply a batch's operations to ``cache``: stale reads counted, lines and memory updated, and
    the cache left settled (``Cache.settle``).

    The operations come frame-major (by pfn, then time); ``rel`` is each one's time in the batch
    (1 .. ticks: its version), ``fa`` the sorted times of the whole-cache flushes, ``ticks`` how
    far the clock moves in all (operations that change nothing may have been left out)."""
    if not ticks:
        return
    cache.settle()  # (the scalar verbs may have run since the last batch: tests do that)
    C = cache.colours
    shift = C.bit_length() - 1  # colours is a power of two: key >> shift is the frame, key & (C-1) the colour
    span = ticks + 2
    # the lines carried in: those of the frames the batch touches, and every line when it flushes
    # the whole cache
    table = cache.table()
    # a per-frame mark for this batch, all False between uses (not kept between batches: it
    # would be a byte of state per frame)
    scratch = np.zeros(cache.frames, dtype=bool)
    start = run_first(pfn)  # each frame's first operation
    frames = pfn[start]
    if fa.size:
        held = table.holding(scratch)
        scratch[frames] = True
        frames = np.concatenate([frames, held[~scratch[held]]])
        scratch[frames] = False
    keys, lver, ldirty = table.lines_of(frames, scratch)
    # frames with a closed form first; the general pass below takes the rest, and every carried
    # line the single-line frames do not
    lane = _ClosedForms(cache, typ, pfn, col, keys, shift, start)
    ops, flushes, out = (typ, pfn, col, rel), Flushes(fa, span), Versions()
    single = play_single(out, lane, ops, (keys, lver, ldirty), flushes, shift)
    extra = [play_read_only(cache, out, lane, ops, flushes, shift)]
    rest = np.flatnonzero(~lane.single & ~lane.reads)
    if rest.size < typ.size:
        typ, pfn, col, rel = typ[rest], pfn[rest], col[rest], rel[rest]
    take = np.flatnonzero(~lane.line)
    # -- line operations, grouped by line and in time order within a line -----------------------
    li = np.flatnonzero((typ <= OP_D) & (col >= 0))
    nl = take.size
    g = np.concatenate([keys[take], (pfn[li] << shift) + col[li]])
    t = np.concatenate([np.zeros(nl, dtype=np.int64), rel[li]])
    ty = np.concatenate([np.full(nl, LOAD, dtype=typ.dtype), typ[li]])
    ver = np.concatenate([lver[take], rel[li]])  # (the carried lines' are settled: <= 0)
    dl = np.concatenate([ldirty[take], np.zeros(li.size, dtype=bool)])
    # by line, then time: the carried lines (time 0) come first and the operations are frame-major
    # in time order, so a stable sort by line alone is enough; and the operations' keys, frame-major,
    # are nearly sorted already
    o = merge_order(g)
    g, t, ty, ver, dl = g[o], t[o], ty[o], ver[o], dl[o]
    is_inv = (ty == OP_F) | (ty == OP_P) | (ty == OP_D)
    is_set = (ty == OP_W) | (ty == OP_R) | (ty == LOAD)
    is_w = (ty == OP_W) | ((ty == LOAD) & dl)
    runs = Runs(g)
    prev_inv, prev_set, prev_w = runs.prev(is_inv), runs.prev(is_set), runs.prev(is_w)
    t_inv = np.where(prev_inv >= 0, t[prev_inv], -1)
    if fa.size:  # whole-cache flushes by time: the last one before each time, the first one after it
        fa_first = flushes.first_after
        fa_before = flushes.last_upto[np.maximum(t - 1, 0)] * (t > 0) - (t == 0)  # before t (LOADs at 0: none)
        t_inv = np.maximum(t_inv, fa_before)
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
    mem = Lookup(np.concatenate([pfn[d], g[wb_f] >> shift, g[wb_fa] >> shift]),
                  np.concatenate([rel[d], t[wb_f], nxt_fa[wb_fa]]),
                  np.concatenate([np.zeros(d.size + int(np.count_nonzero(wb_f)), dtype=np.int64), g[wb_fa] & (C - 1)]),
                  np.concatenate([rel[d], w_version[wb_f], ver[wb_fa]]), span, C)
    wd = np.flatnonzero((typ == OP_W) | (typ == OP_D))
    latest = Lookup(pfn[wd], rel[wd], None, rel[wd], span, presorted=True)
    # -- what every load returns ----------------------------------------------------------------
    # (index arrays, not masks: these masks follow no pattern and applying one costs several times more)
    frame = g >> shift
    fill = is_set & ~present
    value = np.where(ty == LOAD, ver, 0)
    is_r = ty == OP_R
    absent_r = np.flatnonzero(is_r & ~present)
    f_absent = frame[absent_r]
    value[absent_r] = mem.before(f_absent, t[absent_r], memory_at_start(cache, f_absent))
    prev_fill = runs.prev(fill)
    hit = np.flatnonzero(is_r & present)
    value[hit] = np.where(dirty[hit], w_version[hit], value[np.maximum(prev_fill[hit], 0)])
    stores = np.flatnonzero(ty == OP_W)
    value[stores] = ver[stores]
    r = np.flatnonzero(is_r)
    f_r = frame[r]
    stale = int(np.count_nonzero(value[r] != latest.before(f_r, t[r], np.full(r.size, CURRENT))))
    dev = np.flatnonzero(typ == OP_DEV)
    seen = mem.before(pfn[dev], rel[dev], memory_at_start(cache, pfn[dev]))
    stale += int(np.count_nonzero(seen != latest.before(pfn[dev], rel[dev], np.full(dev.size, CURRENT))))
    cache.stale_reads += stale
    # -- the state after the batch --------------------------------------------------------------
    prev = {"inv": prev_inv, "set": prev_set, "w": prev_w}
    for lookup, keep in ((mem, out.memory), (latest, out.latest)):
        keep(*lookup.last_per_frame())
    lines = _lines_left(runs, g, t, ver, value, (is_inv, is_set, is_w), prev, fa, extra)
    settle(cache, out, frames, lines, single, shift, scratch, everything=bool(fa.size))


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


def _lines_left(runs, g, t, ver, value, marks, prev, fa, extra):
    """The lines of the frames carried in as they stand after the batch: those the general pass
    leaves, and ``extra``, those the frames with a closed form leave (each keys, versions, dirty)."""
    parts = [e for e in extra if e[0].size]
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
        left = np.flatnonzero(present)
        parts.append((g[end[left]], version[left], dirty[left]))
    if len(parts) == 1:
        return parts[0]
    if parts:
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
