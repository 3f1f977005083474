"""kmap_kernel's colour pools: a batch served at once (the fast engine) against the same requests
served one at a time by the scalar verbs (the reference)."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core import kmap_kernel as pools

COLOURS = 8


@st.composite
def requests(draw):
    """A pool with some slots held from before the batch, and a batch of GETs, PUTs and PEEKs
    (blocks of 1, 2 or 4 pages) in which every PUT gives back a block held at that moment."""
    cap = draw(st.integers(1, 4))
    pool = pools.ColourPool(COLOURS, cap)
    pool.counter = draw(st.integers(0, COLOURS - 1))
    held = []  # (request index or -1, colour, pages)
    for _ in range(draw(st.integers(0, COLOURS * cap))):
        pages = draw(st.sampled_from([1, 1, 2]))
        held.append((-1, pool.get(draw(st.integers(-1, COLOURS - 1)), pages), pages))
    pool.exhaustions = 0
    op, want, pages, link, carried = [], [], [], [], []
    for i in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from([pools.GET, pools.PUT, pools.PEEK]))
        if kind == pools.PUT and held:
            j, colour, size = held.pop(draw(st.integers(0, len(held) - 1)))
            op.append(pools.PUT), want.append(-1), pages.append(size), link.append(j)
            carried.append(colour if j < 0 else -1)
            continue
        kind = pools.PEEK if kind == pools.PUT else kind
        size = draw(st.sampled_from([1, 1, 2, 4])) if kind == pools.GET else 1
        op.append(kind), want.append(draw(st.integers(-1, COLOURS - 1))), pages.append(size)
        link.append(-1), carried.append(-1)
        if kind == pools.GET:
            held.append((i, -1, size))
    arrays = [np.array(a, dtype=np.int64) for a in (op, want, pages, link, carried)]
    return pool, arrays


@settings(max_examples=300, deadline=None)
@given(requests())
def test_a_batch_is_served_as_the_scalar_verbs_serve_it(case) -> None:
    pool, (op, want, pages, link, carried) = case
    scalar = copy.deepcopy(pool)
    expected = pools._serve_scalar(scalar, op, want, pages, link, carried)
    got = pools.serve(pool, op, want, pages, link, carried, np.arange(op.size, dtype=np.int64))
    assert got.tolist() == expected.tolist()
    assert pool.used.tolist() == scalar.used.tolist()
    assert (pool.counter, pool.exhaustions, pool.pages) == (scalar.counter, scalar.exhaustions, scalar.pages)
