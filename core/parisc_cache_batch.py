"""The cache operations of a batch's page events: ``core.parisc``'s flush verbs over a batch at once.

Models what ``core.parisc`` models (arch/parisc/kernel/cache.c and include/asm-parisc/cacheflush.h
of 2.6.11, and the paper's kernel), with the same verb names: each verb below lays out, for all the
events of one kind, the operations the scalar verb of that name issues, in a (timeline event, slot)
grid, in the order the scalar verb issues them (at most four per event). ``issue`` gives every
operation its time in the batch and plays the grid against the cache with ``cache_batch.play``.
The per-event state the verbs read (user colour, kernel translation, pool colours) is
``parisc_batch``'s.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from core import events as E
from core.cache_batch import LOAD, OP_D, OP_DEV, OP_F, OP_P, OP_R, OP_W, play
from core.parisc import COPY_INTO_PAGE, FREE_TEARDOWN, IO_TO_DEVICE
from core.policy import Policy

if TYPE_CHECKING:
    from core.fast import Columns
    from core.kernel import Kernel
    from core.parisc_batch import Colours, Timeline

SLOTS = 5  # slot positions per event; an event fills at most four (copy: 0/1/2/4 or 0/2/3/4)
UNSEEN = LOAD + 1  # a grid operation the clock counts but the cache pass need not see


class Ops:
    """The batch's cache operations in a (timeline event, slot) grid, as the scalar verbs issue
    them. Read row by row it is frame-major order, which is time order within each frame;
    ``op_times`` gives each operation its place in the batch's global order (the cache clock)."""

    def __init__(self, n: int) -> None:
        self.typ = np.full((n, SLOTS), -1, dtype=np.int8)
        self.col = np.empty((n, SLOTS), dtype=np.int32)  # colours: half the traffic of int64
        self.flush_page = 0
        self.tmpalias = 0
        self.io_flushes = 0
        self.aliases = 0

    def put(self, rows: np.ndarray, slot: int, typ: int | np.ndarray, col: np.ndarray) -> None:
        self.typ[:, slot][rows] = typ  # through the column's view: a third faster than [rows, slot]
        self.col[:, slot][rows] = col

    def _flush_page(self, rows: np.ndarray, slot: int, col: np.ndarray, io: bool) -> None:
        """core.parisc._flush_page: the fdc loop over one page at one colour, per row."""
        self.put(rows, slot, OP_F, col)
        self.flush_page += rows.size
        self.io_flushes += rows.size if io else 0

    def flush_kernel_dcache_page(self, rows: np.ndarray, slot: int, col: np.ndarray, io: bool = False) -> None:
        """flush_kernel_dcache_page (core.parisc's): the pages through kernel mappings of ``col``."""
        self._flush_page(rows, slot, col, io)

    def flush_user_dcache_page(self, rows: np.ndarray, slot: int, u: np.ndarray, io: bool = False) -> None:
        """flush_cache_page / flush_user_dcache_page (core.parisc's): the pages at their user
        colours ``u``."""
        self._flush_page(rows, slot, u, io)

    def flush_dcache_page(self, rows: np.ndarray, slot: int, u: np.ndarray, col: np.ndarray,
                          io: bool = False) -> None:
        """flush_dcache_page (core.parisc's): the kernel alias ``col`` at ``slot``, then the user
        alias at the next slot."""
        self.flush_kernel_dcache_page(rows, slot, col, io)
        self.flush_user_dcache_page(rows, slot + 1, u, io)

    def flush_tmpalias(self, rows: np.ndarray, slot: int, u: np.ndarray) -> None:
        """The tmpalias flush (core.parisc.flush_tmpalias): freed user pages at their user colours."""
        self.put(rows, slot, OP_F, u)
        self.tmpalias += rows.size


def _aliases(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> int:
    """How many of these (kernel, user, access) colour triples (-1: none) are not all equivalent:
    those whose largest colour is not also their smallest, of the colours present. Read as
    unsigned, -1 is above every colour, so the smallest present is an unsigned minimum, and
    with none present both are -1 (four passes where pairwise tests take fifteen)."""
    a, b, c = (x.astype(np.int32, copy=False) for x in (a, b, c))
    top = np.maximum(np.maximum(a, b), c).view(np.uint32)
    low = np.minimum(np.minimum(a.view(np.uint32), b.view(np.uint32)), c.view(np.uint32))
    return int(np.count_nonzero(top != low))


class _View:
    """The timeline facts of one kind's events: index arrays instead of masks over the batch.
    Each fact is gathered when a kind first asks for it: no kind uses them all."""

    def __init__(self, t: Timeline, c: Colours, i: np.ndarray) -> None:
        self.i = self.row = i
        self._t, self._c = t, c

    @cached_property
    def u(self) -> np.ndarray:
        return self._t.u[self.i]

    @cached_property
    def kc(self) -> np.ndarray:
        return self._c.kernel[self.i]

    @cached_property
    def eq(self) -> np.ndarray:
        return self._c.eq[self.i]

    @cached_property
    def flag(self) -> np.ndarray:
        return self._t.flag(self.i)

    @cached_property
    def transient(self) -> np.ndarray:
        return self._c.transient[self.i]

    @cached_property
    def x(self) -> np.ndarray:
        """The colour the kernel touches the page through (while the offset map gives every page
        its kernel address, that address: no transient mappings)."""
        return self.kc if self._c.offset else np.where(self.kc >= 0, self.kc, self._c.kmap[self.i])

    @cached_property
    def tr_flush(self) -> np.ndarray:
        """kunmap_atomic of a non-congruent mapping (lines it may leave for later excepted)."""
        if self._c.offset:
            return np.zeros(self.i.size, dtype=bool)
        return self.transient & (self.x != self.u) & ~deferred(self._c.defer, self.u, self.x, self.eq)


def deferred(defer: bool, u: np.ndarray, colour: np.ndarray, eq: np.ndarray) -> np.ndarray:
    """core.parisc.deferred: a page no process maps, unmapped at its equivalent colour."""
    if not defer:
        return np.zeros(u.size, dtype=bool)
    return (u < 0) & (colour == eq)


def expand(p: Policy, t: Timeline, c: Colours, n: int) -> Ops:
    """The cache operations and flush counts of every page event (see core.parisc)."""
    ops = Ops(n)
    # each kind's events, in time order: one radix sort of the kinds, not a pass per kind
    by_kind = np.argsort(t.kind.astype(np.uint8), kind="stable")
    end = np.cumsum(np.bincount(t.kind, minlength=E.NKINDS))
    of = {kind: by_kind[end[kind - 1] if kind else 0:end[kind]] for kind in range(E.NKINDS)}
    clear_user_page(p, _View(t, c, of[E.K_ALLOC_ANON]), t, ops)
    before_free(p, _View(t, c, of[E.K_FREE]), t, c, ops)
    if not p.offset_maps_lowmem:  # kunmap_kernel's flush, as kunmap_atomic's
        left = deferred(c.defer, t.u, c.kmap_before, c.eq)
        last = np.flatnonzero(c.last & (c.kmap_before != t.u) & ~left)  # kunmap of a non-congruent slot
        ops.flush_kernel_dcache_page(last, 0, c.kmap_before[last])
    pte_update(_View(t, c, of[E.K_PTE_UPDATE]), ops)
    filemap_copy(p, _View(t, c, of[E.K_COPY]), ops)
    copy_user_page(p, _View(t, c, of[E.K_COW]), ops)
    user_access(_View(t, c, of[E.K_USER]), ops)
    io(p, _View(t, c, of[E.K_IO]), ops)
    return ops


def clear_user_page(p: Policy, v: _View, t: Timeline, ops: Ops) -> None:
    """core.parisc.clear_user_page: purge the kernel alias, then zero the page through tmpalias."""
    u = t.u_set[v.i]
    kcol = v.eq if p.offset_maps_lowmem else np.full(v.i.size, -1, dtype=v.eq.dtype)  # the kernel's translation
    lines = v.eq if p.offset_maps_lowmem or p.defer_dcache_flush else kcol  # where its lines may be
    purge = (lines >= 0) & (lines != u)
    ops.put(v.row[purge], 0, OP_P, lines[purge])
    ops.flush_page += int(np.count_nonzero(purge))
    ops.put(v.row, 1, OP_W, u)
    ops.aliases += _aliases(kcol, u, u)


def before_free(p: Policy, v: _View, t: Timeline, c: Colours, ops: Ops) -> None:
    """core.parisc.before_free: the user colour (tmpalias, or munmap's flush), then the
    allocation mapping."""
    user = v.row[(v.u >= 0) & (p.flush_on_free | (v.flag != FREE_TEARDOWN))]
    if p.flush_on_free:
        ops.flush_tmpalias(user, 0, t.u[user])
    else:
        ops.flush_user_dcache_page(user, 0, t.u[user])
    if not p.offset_maps_lowmem:
        mapped = t.amapped[v.i]
        ops.flush_kernel_dcache_page(v.row[mapped], 1, c.alloc_before[v.i][mapped])


def pte_update(v: _View, ops: Ops) -> None:
    """core.parisc.pte_update: the store, kunmap_atomic, the TLB miss handler's absolute read."""
    ops.put(v.row, 0, OP_W, v.x)
    ops.aliases += _aliases(v.kc, v.u, v.x)
    ops.flush_kernel_dcache_page(v.row[v.tr_flush], 1, v.x[v.tr_flush])
    ops.put(v.row, 2, OP_R, v.eq)


def filemap_copy(p: Policy, v: _View, ops: Ops) -> None:
    """core.parisc.filemap_copy: flush_dcache_page before a read through a colour not the user's,
    its user half before and its kernel half after such a write; then kunmap_atomic."""
    into = v.flag == COPY_INTO_PAGE
    coherent = (v.u >= 0) & (v.x != v.u) & p.flush_dcache_page
    read = coherent & ~into
    ops.flush_dcache_page(v.row[read], 0, v.u[read], v.x[read])
    write = coherent & into
    ops.flush_user_dcache_page(v.row[write], 0, v.u[write])
    ops.put(v.row, 2, np.where(into, OP_W, OP_R), v.x)
    ops.aliases += _aliases(v.kc, v.u, v.x)
    ops.flush_kernel_dcache_page(v.row[write], 3, v.x[write])
    ops.flush_kernel_dcache_page(v.row[v.tr_flush], 4, v.x[v.tr_flush])


def copy_user_page(p: Policy, v: _View, ops: Ops) -> None:
    """core.parisc.copy_user_page: flush the user's colour first when fork did not flush the cache
    and the copy reads through another colour; then the read; then kunmap_atomic."""
    first = (v.u >= 0) & (v.x != v.u) & p.flush_on_free
    ops.flush_user_dcache_page(v.row[first], 0, v.u[first])
    ops.put(v.row, 1, OP_R, v.x)
    ops.aliases += _aliases(v.kc, v.u, v.x)
    ops.flush_kernel_dcache_page(v.row[v.tr_flush], 2, v.x[v.tr_flush])


def user_access(v: _View, ops: Ops) -> None:
    """core.parisc.user_access: at the user's colour, else the physical one."""
    ux = np.where(v.u >= 0, v.u, v.eq)
    ops.put(v.row, 0, np.where(v.flag == 1, OP_W, OP_R), ux)
    ops.aliases += _aliases(v.kc, v.u, ux)


def io(p: Policy, v: _View, ops: Ops) -> None:
    """core.parisc.io: flush_dcache_page at the kernel's index (stock) or a flush at the index
    alone; the transfer; kunmap_atomic of a mapping made to learn the index."""
    user_index = p.user_coherence_index & (v.u >= 0)
    left = v.eq if p.defer_dcache_flush else -1  # where the kunmaps left a page's lines
    index = np.where(user_index, v.u, np.where(v.kc >= 0, v.kc, np.where(v.transient, v.x,
                                                                         np.where(v.u < 0, left, -1))))
    both = ~user_index & (v.u >= 0) & p.flush_dcache_page  # (then the index is the kernel's)
    ops.flush_dcache_page(v.row[both], 0, v.u[both], index[both], io=True)
    alone = (index >= 0) & ~both
    ops.flush_kernel_dcache_page(v.row[alone], 1, index[alone], io=True)
    ops.put(v.row, 2, np.where(v.flag == IO_TO_DEVICE, OP_DEV, OP_D), index)
    ops.flush_kernel_dcache_page(v.row[v.tr_flush], 3, v.x[v.tr_flush], io=True)


def flush_cache_mm(p: Policy, cols: Columns) -> np.ndarray:
    """core.parisc.flush_cache_mm: the batch positions of the fork, exec and exit events that
    flush the whole cache (none when pages flush on free)."""
    if p.flush_on_free:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((cols.kind == E.K_FORK) | (cols.kind == E.K_EXEC) | (cols.kind == E.K_EXIT))


def hide_unobservable(ops: Ops, t: Timeline, c: Colours, teardown: np.ndarray) -> None:
    """Mark UNSEEN the grid operations that change nothing anyone can see, which the cache pass
    leaves out (the clock still ticks for them): the walker's read right after a PTE store to the
    same line (it returns the latest version), and PTE stores overwritten before anyone can see
    them (the frame's next event is another such store, with no whole-cache flush between)."""
    # a PTE store and the walker's read meet on one line when the page table is written through
    # its equivalent colour (always, under an offset map)
    pte = t.kind == E.K_PTE_UPDATE
    if not c.offset:
        pte &= c.kernel == c.eq
    ops.typ[:, 2][np.flatnonzero(pte)] = UNSEEN
    i = np.flatnonzero(pte[:-1] & pte[1:] & (t.pfn[:-1] == t.pfn[1:]))
    if teardown.size:  # the same number of whole-cache flushes before both stores: none between
        i = i[np.searchsorted(teardown, t.pos[i]) == np.searchsorted(teardown, t.pos[i + 1])]
    ops.typ[:, 0][i] = UNSEEN


def op_times(ops: Ops, t: Timeline, teardown: np.ndarray, n: int, at: np.ndarray,
             row: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The times in the batch (1, 2, ... in event then slot order) of the grid operations at flat
    indices ``at`` (in rows ``row``); the times of the whole-cache flushes; how many operations
    the batch issues."""
    # live slots up to and including each slot of its row: a running sum over the five columns
    # (a cumsum over the flat grid of booleans costs several times more)
    upto = (ops.typ >= 0).astype(np.int8)  # at most SLOTS: bytes, an eighth of int64's traffic
    for slot in range(1, SLOTS):
        upto[:, slot] += upto[:, slot - 1]
    live = upto[:, -1]
    per_event = np.zeros(n, dtype=np.int64)
    per_event[t.pos] = live
    per_event[teardown] += 1
    issued = np.cumsum(per_event)  # operations issued by each event and the earlier ones
    # an operation's time: what the earlier events issued (what its own and those issued, less
    # its row's: no exclusive sum over the batch) and its rank in its row
    before = issued[t.pos]
    before -= live
    times = before[row] + upto.ravel()[at]
    return times, issued[teardown] - per_event[teardown] + 1, int(issued[-1]) if n else 0


def issue(k: Kernel, cols: Columns, t: Timeline, c: Colours) -> None:
    """Lay out every page event's cache operations, play them against the cache in the batch's
    order, and count the flushes and alias violations."""
    p, cnt = k.policy, k.c
    ops = expand(p, t, c, t.pfn.size)
    teardown = flush_cache_mm(p, cols)
    hide_unobservable(ops, t, c, teardown)
    # the operations the cache pass sees, frame-major: as bytes, empty slots (-1) are 255
    play_at = np.flatnonzero(ops.typ.ravel().view(np.uint8) <= OP_DEV)
    row = play_at // SLOTS
    times, flush_times, ticks = op_times(ops, t, teardown, cols.n, play_at, row)
    play(k.vi.cache, ops.typ.ravel()[play_at], t.pfn[row], ops.col.ravel()[play_at], times, flush_times, ticks)
    cnt.alias_violations += ops.aliases
    cnt.cache_flush_page += ops.flush_page
    cnt.cache_flush_tmpalias += ops.tmpalias
    cnt.cache_flush_all += teardown.size
    cnt.io_flushes += ops.io_flushes
