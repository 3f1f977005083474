"""Valid random event streams for differential and property tests.

``interpret`` turns a list of (op, a, b) integer triples (what hypothesis draws and shrinks) into
a valid stream: allocations go to free handles, frees and kmaps to live ones, kunmaps only to
handles this interpreter kmapped. Allocations may still fail inside the kernel; the kernel skips
later operations on such handles, which the streams exercise too.
"""

from __future__ import annotations

import numpy as np

from core import events as E
from core.events import EVENT, Stream

ALLOC_KINDS = (E.K_ALLOC_ANON, E.K_ALLOC_PAGECACHE, E.K_ALLOC_SLAB, E.K_ALLOC_STACK, E.K_ALLOC_PGTABLE)
PLAIN = (E.K_SYSCALL, E.K_FORK, E.K_EXEC, E.K_EXIT)
TOUCH = (E.K_KMAP_ATOMIC, E.K_PTE_UPDATE, E.K_IO, E.K_COPY, E.K_USER)
NOPS = 6


def interpret(ops: list[tuple[int, int, int]], max_handles: int, cpus: int = 2,
              max_order: int = 3) -> np.ndarray:
    rows = []
    live: list[int] = []
    free = list(range(max_handles - 1, -1, -1))
    kmapped: dict[int, int] = {}
    for op, a, b in ops:
        op %= NOPS
        cpu = b % cpus
        if op in (0, 1) and free:  # allocate (twice as likely as anything else)
            h = free.pop()
            kind = ALLOC_KINDS[a % len(ALLOC_KINDS)]
            order = 0 if (b % 4) else (a // 7) % (max_order + 1)
            if kind == E.K_ALLOC_STACK:
                order = 1
            rows.append((kind, order, cpu, h, a % 4096))
            live.append(h)
        elif op == 2 and live:  # free a handle nobody holds kmapped
            h = live[a % len(live)]
            if h in kmapped:
                continue
            live.remove(h)
            free.append(h)
            rows.append((E.K_FREE, (a >> 4) & 1, cpu, h, 0))  # 1: a teardown free
        elif op == 3 and live:  # kmap
            h = live[a % len(live)]
            kmapped[h] = kmapped.get(h, 0) + 1
            rows.append((E.K_KMAP, 0, cpu, h, 0))
        elif op == 4 and kmapped:  # kunmap
            h = list(kmapped)[a % len(kmapped)]
            kmapped[h] -= 1
            if not kmapped[h]:
                del kmapped[h]
            rows.append((E.K_KUNMAP, 0, cpu, h, 0))
        elif op == 5:
            if live and b % 2:
                kind = TOUCH[a % len(TOUCH)]
                flag = (a >> 4) & 1 if E.HAS_FLAG[kind] else 0  # direction of io, copy, user access
                rows.append((kind, flag, cpu, live[a % len(live)], 0))
            else:
                rows.append((PLAIN[a % len(PLAIN)], 0, cpu, -1, 0))
    return np.array(rows, dtype=EVENT)


def batched(events: np.ndarray, cuts: list[int], max_handles: int) -> Stream:
    """The events split at the given cut points (batch boundaries are part of what is tested)."""
    points = sorted({c % (events.size + 1) for c in cuts})
    parts = np.split(events, points) if events.size else [events]
    return Stream([p for p in parts if p.size], max_handles, source="test")


def random_ops(rng: np.random.Generator, n: int, weights: tuple[float, ...] | None = None) -> list:
    w = np.array(weights or (1, 1, 1.6, 0.6, 0.6, 1.0), dtype=float)
    ops = rng.choice(NOPS, size=n, p=w / w.sum())
    ab = rng.integers(0, 1 << 20, size=(n, 2))
    return [(int(o), int(a), int(b)) for o, (a, b) in zip(ops, ab, strict=True)]
