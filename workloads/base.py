"""What every workload generator shares: parameters with help text, a handle pool, a batcher.

A generator is a function ``(params, seed) -> Stream``. Its parameters are declared as ``Param``
rows (name, default, help) so ``zonesim list`` can show them and ``--set`` can validate them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from core.events import EVENT, Stream
from core.machine import parse_int
from core.units import parse_size


@dataclass(frozen=True)
class Param:
    name: str
    default: object
    help: str
    kind: str = "int"  # int | size | float (a fraction) | us (microseconds >= 0)

    def parse(self, value: object) -> object:
        if self.kind == "size":
            return parse_size(self.name, value)
        if self.kind in ("float", "us"):
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise ConfigError(self.name, "a number", value) from None
            if self.kind == "us":
                if not out >= 0.0 or out == float("inf"):
                    raise ConfigError(self.name, "microseconds >= 0", value)
                return out
            if not 0.0 <= out <= 1.0:
                raise ConfigError(self.name, "a fraction between 0 and 1", value)
            return out
        out = parse_int(self.name, value)
        if out < 0:
            raise ConfigError(self.name, "an integer >= 0", value)
        return out


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    params: tuple[Param, ...]
    build: Callable[[dict[str, object], int], Stream]

    def resolve(self, overrides: dict[str, object]) -> dict[str, object]:
        """Defaults with ``--set`` values applied; unknown names are refused with the list."""
        known = {p.name: p for p in self.params}
        out = {p.name: p.default for p in self.params}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(key, f"a parameter of workload {self.name}: " + ", ".join(sorted(known)))
            out[key] = known[key].parse(value)
        return out


class HandlePool:
    """Handles 0..limit-1, reused LIFO so the kernel's handle table stays small."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.next = 0
        self.free: list[int] = []

    def get(self) -> int:
        if self.free:
            return self.free.pop()
        if self.next >= self.limit:
            raise RuntimeError("workload handle bound exceeded: its max_handles is computed wrong")
        self.next += 1
        return self.next - 1

    def put(self, handle: int) -> None:
        self.free.append(handle)


class Batcher:
    """Collects (kind, order, cpu, handle, addr) rows and cuts them into EVENT batches."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: list[tuple[int, int, int, int, int]] = []

    def add(self, kind: int, handle: int = -1, order: int = 0, cpu: int = 0, addr: int = 0) -> None:
        self.rows.append((kind, order, cpu, handle, addr))

    def full(self) -> bool:
        return len(self.rows) >= self.size

    def take(self, limit: int | None = None) -> np.ndarray:
        rows = self.rows if limit is None else self.rows[:limit]
        self.rows = [] if limit is None else self.rows[limit:]
        return np.array(rows, dtype=EVENT)


def cut(batches: Iterator[np.ndarray], total: int) -> Iterator[np.ndarray]:
    """Stop a stream after exactly ``total`` events."""
    left = total
    for batch in batches:
        if left <= 0:
            return
        yield batch[:left]
        left -= len(batch)
