"""Vectorised stream building: a chunk of *episodes* laid out in a grid of event slots.

An episode is what one step of a workload does: a read of k pages, a fork and exec, a slab page
replaced. A chunk of episodes is drawn at once and laid out in a ``Grid``: rows of ``WIDTH``
event slots, each episode owning a run of consecutive rows (one row per page of a read, a dozen
rows for a fork). Each episode type writes its templates into its rows, leaving slots it does not
use absent (kind -1), and ``Grid.events`` reads the grid row by row, dropping absent slots. So the
stream's order is the grid's order, and no Python loop runs per event or per episode: that is
what lets a generator make tens of millions of events per second and keeps the simulator, not
the workload, the bottleneck.

Slot 0 of an episode's first row and the last three slots of its last row are kept free for what
any episode may carry: the release of a kmap taken some episodes earlier; the process's run in
user mode after the kernel work and the timer tick that run may take; a user load or store.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from core.events import EVENT

WIDTH = 15  # event slots per row: the widest single-row template (a page read, 11) plus the four reserved
RELEASE = 0  # reserved slots: the first row's first ...
RUN, TICK, TOUCH = WIDTH - 3, WIDTH - 2, WIDTH - 1  # ... and the last row's last three
BODY = WIDTH - 4  # template slots of a single-row episode: 1 .. BODY


class Grid:
    """A chunk's event slots: ``rows[e]`` rows for episode e, episode after episode."""

    def __init__(self, rows: np.ndarray) -> None:
        self.first = np.cumsum(rows) - rows  # each episode's first row
        self.last = self.first + rows - 1
        n = int(rows.sum())
        # flat, row after row: a put is a 1-D scatter at row * WIDTH + col, and the events are
        # the present slots read straight through
        self.kind = np.full(n * WIDTH, -1, dtype=np.int16)
        self.order = np.zeros(n * WIDTH, dtype=np.uint8)
        self.cpu = np.zeros(n * WIDTH, dtype=np.uint16)
        self.handle = np.zeros(n * WIDTH, dtype=np.int32)
        self.addr = np.zeros(n * WIDTH, dtype=np.uint32)

    def put(self, rows: np.ndarray, col: int, kind: int | np.ndarray, handle: np.ndarray | int = 0,
            order: np.ndarray | int = 0, addr: np.ndarray | int = 0, cpu: np.ndarray | int = 0,
            where: np.ndarray | None = None) -> None:
        """Column ``col`` of the given rows (columns col.. when values are (rows, k)); with
        ``where``, the event is present only there.

        A column belongs to one ``put`` per row: the fields are written for every row given (the
        slot stays absent where its kind is not written), and a zero field is not written at all,
        the grid starting at zero."""
        at = rows * WIDTH + col
        wide = max(np.ndim(v) for v in (kind, handle, order, addr))
        if wide == 2:  # (rows, k) values fill columns col .. col+k-1
            k = max(np.shape(v)[1] for v in (kind, handle, order, addr) if np.ndim(v) == 2)
            at = at[:, None] + np.arange(k)
            cpu = cpu[:, None] if np.ndim(cpu) == 1 else cpu
        if where is None:
            self.kind[at] = kind
        else:
            self.kind[at[where]] = kind[where] if isinstance(kind, np.ndarray) else kind
        for grid, value in ((self.handle, handle), (self.order, order), (self.addr, addr), (self.cpu, cpu)):
            if isinstance(value, np.ndarray) or value:
                grid[at] = value

    def put_flat(self, first: np.ndarray, kind: np.ndarray, handle: np.ndarray, order: np.ndarray,
                 addr: np.ndarray, cpu: np.ndarray) -> None:
        """A multi-row template for each episode starting at row ``first``: (episodes, rows*WIDTH)
        arrays laid over that many consecutive rows (absent slots have kind -1)."""
        shape = (first.size, np.shape(kind)[-1])
        at = (first[:, None] * WIDTH + np.arange(shape[1])).ravel()
        for grid, values in ((self.kind, kind), (self.handle, handle), (self.order, order), (self.addr, addr),
                             (self.cpu, cpu)):
            grid[at] = np.broadcast_to(values, shape).ravel()

    def events(self) -> np.ndarray:
        at = np.flatnonzero(self.kind >= 0)
        out = np.empty(at.size, dtype=EVENT)
        for name in ("kind", "order", "cpu", "handle", "addr"):
            out[name] = getattr(self, name)[at]
        return out


def flat(kind, handle=-1, order=0, addr=0, cpu=0) -> np.ndarray:
    """Events from equal-length columns (scalars broadcast), for one-time sequences."""
    out = np.empty(np.broadcast_shapes(*(np.shape(v) for v in (kind, handle, order, addr, cpu))), dtype=EVENT)
    out["kind"], out["handle"], out["order"], out["addr"], out["cpu"] = kind, handle, order, addr, cpu
    return out


def rebatch(chunks: Iterator[np.ndarray], size: int, total: int) -> Iterator[np.ndarray]:
    """Cut a stream of chunks into batches of ``size`` events, ``total`` events in all. Only a
    batch that straddles two chunks is copied; the others are views of their chunk."""
    left = total
    carry = np.zeros(0, dtype=EVENT)
    for chunk in chunks:
        if carry.size:
            need = min(size, left) - carry.size
            head, chunk = chunk[:need], chunk[need:]
            carry = np.concatenate([carry, head])
            if carry.size < min(size, left):
                continue
            yield carry
            left -= carry.size
            carry = carry[:0]
        while left > 0 and chunk.size >= min(size, left):
            take = min(size, left)
            yield chunk[:take]
            chunk = chunk[take:]
            left -= take
        if left <= 0:
            return
        carry = chunk
