"""The batched cache pass (``core.cache_batch.play``) against the scalar cache verbs it replaces.

A random history is applied to a ``Cache`` one verb at a time; then a random batch of operations
goes through the scalar verbs on one copy and through ``play`` on another, and everything the two
leave, settled (lines, their versions, which frames' memory is stale, the clock, stale reads),
must be equal. The
batches are small and dense, a few frames and colours, so that the frames ``play`` closes in one
step (single-line frames: stores and flushes through one colour, nothing read; store-free frames:
reads and DMA through one colour) meet carried lines, whole-cache flushes and purges at other
colours far more often than whole streams make them. The same batches also run with those
shortcuts switched off, so the general pass is held to the same oracle on its own.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core import cache_batch
from core.cache import CURRENT, STALE, Cache
from core.cache_batch import OP_D, OP_DEV, OP_F, OP_P, OP_R, OP_W
from core.vec import run_first

FRAMES, COLOURS = 6, 4
FLUSH_ALL = -1  # a whole-cache flush in the generated sequences

operation = st.tuples(st.sampled_from([OP_W, OP_W, OP_R, OP_F, OP_P, OP_D, OP_DEV, FLUSH_ALL]),
                      st.integers(0, FRAMES - 1), st.integers(-1, COLOURS - 1))


def scalar(cache: Cache, ops: list[tuple[int, int, int]]) -> None:
    """The reference: one verb per operation, in time order."""
    for typ, pfn, colour in ops:
        if typ == FLUSH_ALL:
            cache.flush_all()
        elif typ == OP_DEV:
            cache.device_read(pfn)
        elif typ == OP_D:
            cache.dma_write(pfn, colour)
        else:
            colour = max(colour, 0)  # only a DMA goes without a colour
            {OP_W: cache.write, OP_R: cache.read, OP_F: cache.flush_page, OP_P: cache.purge_page}[typ](pfn, colour)


def batched(cache: Cache, ops: list[tuple[int, int, int]]) -> None:
    """The same operations through ``play``: frame-major, each with its time in the batch."""
    cache.table()  # the batched form, as the fast engine keeps it between batches
    rows = [(typ, pfn, colour if typ in (OP_D, OP_DEV) else max(colour, 0), time)
            for time, (typ, pfn, colour) in enumerate(ops, start=1) if typ != FLUSH_ALL]
    rows.sort(key=lambda r: (r[1], r[3]))
    typ, pfn, col, rel = (np.array([r[i] for r in rows], dtype=np.int8 if i == 0 else np.int64) for i in range(4))
    fa = np.array([time for time, (t, _, _) in enumerate(ops, start=1) if t == FLUSH_ALL], dtype=np.int64)
    cache_batch.play(cache, typ, pfn, col, rel, fa, len(ops))


def state(cache: Cache) -> dict[str, object]:
    """What the cache holds, settled (on a copy: the scalar verbs leave this batch's versions)."""
    cache = copy.deepcopy(cache)
    cache.settle()
    keys, version, dirty = cache.snapshot()
    return {"keys": keys.tolist(), "version": version.tolist(), "dirty": dirty.tolist(),
            "mem_stale": cache.mem_stale.tolist(), "clock": cache.clock, "stale_reads": cache.stale_reads}


class _NoClosedForms(cache_batch._ClosedForms):
    """No frame has a closed form: everything goes through the general pass."""

    def __init__(self, cache, typ, pfn, col, keys, shift, start) -> None:
        self.single, self.reads = np.zeros(typ.size, dtype=bool), np.zeros(typ.size, dtype=bool)
        self.line, self.colour = np.zeros(keys.size, dtype=bool), np.zeros(typ.size, dtype=np.int64)


def check(history: list, batch: list, shortcut: bool, monkeypatch) -> None:
    cache = Cache(FRAMES, COLOURS)
    scalar(cache, history)
    expected = copy.deepcopy(cache)
    scalar(expected, batch)
    if not shortcut:
        monkeypatch.setattr(cache_batch, "_ClosedForms", _NoClosedForms)
    batched(cache, batch)
    assert state(cache) == state(expected)


@pytest.mark.parametrize("shortcut", [True, False], ids=["closed forms", "general pass only"])
@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(operation, max_size=30), batch=st.lists(operation, min_size=1, max_size=40))
def test_play_matches_the_scalar_verbs(history, batch, shortcut, monkeypatch):
    check(history, batch, shortcut, monkeypatch)


reading = st.tuples(st.sampled_from([OP_R, OP_R, OP_R, OP_R, OP_DEV, OP_W, OP_D]),
                    st.integers(0, FRAMES - 1), st.integers(0, 1))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(st.one_of(operation, reading), max_size=30), batch=st.lists(reading, min_size=1, max_size=12))
# a dirty line: the device reads stale; a stale line (a DMA elsewhere): the CPU does
@example(history=[(OP_W, 1, 0)], batch=[(OP_R, 1, 0), (OP_DEV, 1, -1), (OP_R, 1, 0)])
@example(history=[(OP_W, 2, 1), (OP_D, 2, 0)], batch=[(OP_R, 2, 1), (OP_DEV, 2, -1)])
def test_frames_read_through_the_line_they_carry_in(history, batch, monkeypatch):
    """Batches of mostly reads through two colours after histories that leave clean, dirty and
    stale lines (a DMA elsewhere): many frames only read through their carried line's colour,
    and those reads are stale iff that line is; a device read iff memory is."""
    check(history, batch, True, monkeypatch)


def test_closed_forms_are_found():
    """The shortcuts are not vacuous: a store-only frame with a line carried in at its colour is
    single-line, a frame read, written by DMA and flushed with none carried in is store-free, and
    a frame read at two colours is neither."""
    cache = Cache(FRAMES, COLOURS)
    scalar(cache, [(OP_W, 1, 2)])  # a dirty line carried in at colour 2
    keys, _, _ = cache.snapshot()
    typ = np.array([OP_F, OP_D, OP_R, OP_W, OP_F, OP_W, OP_R, OP_R])
    pfn = np.array([0, 0, 0, 1, 1, 1, 3, 3])
    col = np.array([3, 3, 3, 2, 2, 2, 0, 1])
    lane = cache_batch._ClosedForms(cache, typ, pfn, col, keys, 2, run_first(pfn))
    assert lane.reads.tolist() == [True] * 3 + [False] * 5
    assert lane.single.tolist() == [False] * 3 + [True] * 3 + [False] * 2
    assert lane.line.tolist() == [True]


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(history=st.lists(operation, max_size=20),
       batches=st.lists(st.lists(operation, min_size=1, max_size=20), min_size=2, max_size=5),
       compact=st.booleans())
def test_lines_carried_from_batch_to_batch(history, batches, compact):
    """Several batches in a row: the lines one leaves (in ``FrameLines``: one per frame, the
    frames with several apart, and the list of frames that may hold one, which a whole-cache flush
    reaches) are what the next finds. ``compact``: the list is compacted after every batch."""
    cache = Cache(FRAMES, COLOURS)
    scalar(cache, history)
    expected = copy.deepcopy(cache)
    for batch in batches:
        scalar(expected, batch)
        if compact:
            cache.table()._compact_at = 0
        batched(cache, batch)
        assert state(cache) == state(expected)
    table = cache.table()
    held = set(table.holding().tolist())
    assert len(held) == table.holding().size  # each once
    assert held == {key // COLOURS for key in expected.lines}


def test_lines_convert_between_forms():
    """dict -> FrameLines -> dict gives the same lines, frames with several lines included (the
    table holds settled versions: the dict is settled first)."""
    cache = Cache(FRAMES, COLOURS)
    scalar(cache, [(OP_W, 0, 1), (OP_R, 0, 3), (OP_W, 2, 2), (OP_R, 5, 0), (OP_R, 5, 1), (OP_R, 5, 2)])
    cache.settle()
    before = copy.deepcopy(cache.lines)
    table = cache.table()
    assert table.colour.tolist() == [-2, -1, 2, -1, -1, -2]
    assert sorted((table.more[0] // COLOURS).tolist()) == [0, 0, 5, 5, 5]
    assert cache.lines == before


@pytest.mark.parametrize("batch", [
    [(OP_W, 0, 1), (FLUSH_ALL, 0, 0), (OP_W, 0, 1)],  # written back by the flush, then dirty again
    [(OP_W, 0, 1), (OP_P, 0, 1), (OP_R, 0, 1)],  # a purge loses the store: the read is stale
    [(OP_W, 0, 1), (OP_P, 0, 2), (OP_F, 0, 1)],  # a purge elsewhere finds nothing; the flush writes back
    [(OP_R, 4, 1), (OP_D, 4, 1), (OP_R, 4, 1), (OP_DEV, 4, -1)],  # reads, a DMA, reads
    [(OP_R, 4, 1), (OP_D, 4, 2), (OP_R, 4, 1)],  # a DMA at another colour leaves the old line
])
def test_edge_cases(batch, monkeypatch):
    for shortcut in (True, False):
        check([(OP_W, 0, 1), (OP_W, 2, 3)], batch, shortcut, monkeypatch)


def test_lost_store_is_stale_until_a_dma(monkeypatch):
    """A purged dirty line leaves memory behind the latest store: reads are stale until a DMA
    writes memory again, then not."""
    history = [(OP_W, 4, 1), (OP_P, 4, 1)]
    batch = [(OP_R, 4, 1), (OP_DEV, 4, -1), (OP_D, 4, 1), (OP_R, 4, 1), (OP_DEV, 4, -1)]
    for shortcut in (True, False):
        check(history, batch, shortcut, monkeypatch)
    cache = Cache(FRAMES, COLOURS)
    scalar(cache, history)
    batched(cache, batch)
    assert cache.stale_reads == 2


@pytest.mark.parametrize("batch", [
    [(OP_F, 4, 1), (OP_R, 4, 1)],  # the flush drops the old clean line: the read finds memory, fresh
    [(OP_F, 4, 1), (OP_DEV, 4, -1)],  # ... and so does the device
    [(OP_R, 4, 1), (OP_P, 4, 1), (OP_R, 4, 1)],  # a hit on the old line (stale), then memory
    [(OP_R, 4, 1), (FLUSH_ALL, 0, 0), (OP_R, 4, 1)],
])
def test_carried_clean_line_older_than_memory(batch, monkeypatch):
    """A frame carrying a clean line that a DMA at another colour left behind: the line is older
    than memory, so it is never written back, and only reads that hit it are stale. (The frame
    reads through one colour and stores nothing, but its carried line keeps it in the general
    pass; a closed form for such frames was tried and made no measurable difference.)"""
    for shortcut in (True, False):
        check([(OP_R, 4, 1), (OP_D, 4, 2)], batch, shortcut, monkeypatch)


def _unsettled_state(cache: Cache) -> dict[str, object]:
    """What the scalar verbs hold, read without settling: each line and each frame's memory
    compared with the frame's latest write, by the definition ``settle`` must keep."""
    latest = [cache._latest.get(pfn, 0) for pfn in range(FRAMES)]
    keys, version, dirty = cache.snapshot()
    return {"keys": keys.tolist(), "dirty": dirty.tolist(), "stale_reads": cache.stale_reads,
            "current": [int(v) == latest[int(k) // COLOURS] for k, v in zip(keys, version, strict=True)],
            "mem_stale": [cache._memory(pfn) != latest[pfn] for pfn in range(FRAMES)]}


class _NeverSettled(Cache):
    """The cache as if a whole run were one batch: versions are sequence numbers throughout."""

    def settle(self) -> None:
        pass


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(history=st.lists(operation, max_size=30), batch=st.lists(operation, min_size=1, max_size=30),
       table=st.booleans())
def test_settling_between_batches_changes_nothing_a_read_can_see(history, batch, table):
    """Versions settled to CURRENT / STALE between two batches (in either form of the lines): the
    next batch reads stale exactly as often and leaves the same lines, dirty bits, current copies
    and stale memory as a cache that never settles; and the batched pass equals the scalar verbs
    after it."""
    plain = _NeverSettled(FRAMES, COLOURS)
    scalar(plain, history)
    settled = Cache(FRAMES, COLOURS)
    scalar(settled, history)
    settled.settle()
    assert settled.settled() and settled.clock == 0
    assert set(settled.line_versions().tolist()) <= {CURRENT, STALE}
    if table:
        settled.table()
    batched_copy = copy.deepcopy(settled)
    scalar(plain, batch)
    scalar(settled, batch)
    batched(batched_copy, batch)
    assert _unsettled_state(settled) == _unsettled_state(plain)
    assert state(batched_copy) == state(settled)


def test_settle_marks_memory_and_lines_behind_the_latest_write_stale():
    cache = Cache(FRAMES, COLOURS)
    # frame 1: a store at colour 0, a read at colour 1 fills from memory (stale), the store flushed;
    # frame 2: a DMA, then a clean read of it; frame 3: a store never written back
    scalar(cache, [(OP_W, 1, 0), (OP_R, 1, 1), (OP_F, 1, 0), (OP_D, 2, 0), (OP_R, 2, 1), (OP_W, 3, 2)])
    cache.settle()
    keys, version, dirty = cache.snapshot()
    assert dict(zip(keys.tolist(), zip(version.tolist(), dirty.tolist(), strict=True), strict=True)) == {
        1 * COLOURS + 1: (STALE, False), 2 * COLOURS + 1: (CURRENT, False), 3 * COLOURS + 2: (CURRENT, True)}
    assert cache.mem_stale.tolist() == [False, False, False, True, False, False]
    assert cache.stale_reads == 1 and cache.clock == 0
