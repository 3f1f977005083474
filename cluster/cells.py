"""Reading aggregated cells (``cluster.aggregate.Cell``): their axes, means and intervals, and the
derived quantities the claims (``cluster.claims``) and the plots (``cluster.plots``) both show:
cycles per I/O request and per fork+exec+exit, the clock, kernel entries per second. One
definition of each, so a figure in the report and the point in its plot are the same number.

Lookups are strict: a key or axis a cell lacks raises (KeyError, ValueError), which the paper's
summary reads as "this figure has no data"; plots catch what they can leave out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cluster.aggregate import Cell
from core.machine import get_machine
from core.units import parse_size

# -- axes, means and intervals ----------------------------------------------------------------------


def axis(cell: Cell, name: str) -> object:
    return (cell.config.get("set") or {}).get(name) if name not in cell.config else cell.config[name]


def select(cells: Sequence[Cell], **where: object) -> list[Cell]:
    return [c for c in cells if all(axis(c, k) == v for k, v in where.items())]


def mean(cell: Cell, key: str) -> float:
    return cell.stats[key].mean


def ci(cell: Cell, key: str) -> float | None:
    return cell.stats[key].ci95


def ordered(values: set, name: str) -> list:
    """Axis values in increasing order (sizes by bytes)."""
    return sorted(values, key=lambda v: parse_size(name, v) if isinstance(v, str) else v)


def rel_ci(cell: Cell, keys: Sequence[str], per: str | None = None) -> float | None:
    """Relative 95% half-width of the sum of a cell's means of ``keys`` (divided by the mean of
    ``per``), to first order: absolute half-widths add in quadrature for the sum, relative ones
    for the quotient."""
    stats = [cell.stats[k] for k in keys] + ([cell.stats[per]] if per else [])
    if any(st.ci95 is None for st in stats):
        return None
    total = sum(cell.stats[k].mean for k in keys)
    rel = (sum(cell.stats[k].ci95 ** 2 for k in keys) ** 0.5 / total) if total else 0.0
    if per and cell.stats[per].mean:
        rel = (rel ** 2 + (cell.stats[per].ci95 / cell.stats[per].mean) ** 2) ** 0.5
    return rel


def combine(*rels: float | None) -> float | None:
    """Relative half-width of a product or quotient of independent quantities."""
    return None if any(r is None for r in rels) else sum(r * r for r in rels) ** 0.5


def one(cells: Sequence[Cell], **where: object) -> Cell:
    found = select(cells, **where)
    if len(found) != 1:
        raise ValueError(f"expected one cell with {where}, found {len(found)}")
    return found[0]


# -- derived quantities -------------------------------------------------------------------------

# every cost on the I/O path, on both sides: the DMA request, the page flushes, the copies, and the
# transient kernel mappings the copies need where no permanent one exists (a PTE set each, and the
# TLB purge when it goes: none under stock's offset map)
IO_KEYS = ("cycles_io", "cycles_cache_flush_page", "cycles_page_copy", "cycles_kmap_atomic", "cycles_tlb_flush_local")
# a fork+exec+exit's own costs: the calls' base work, fork's PTE copies, the COW copies, the cache
# flushes (stock's whole-cache ones, unmapped's flushes on free) and the page traffic
FORK_KEYS = ("cycles_fork", "cycles_fork_ptes", "cycles_cow", "cycles_exec", "cycles_exit", "cycles_cache_flush_all",
             "cycles_cache_flush_tmpalias", "cycles_cache_flush_page", "cycles_page_alloc", "cycles_page_free")
FLUSH_KEYS = ("cycles_cache_flush_all", "cycles_cache_flush_tmpalias", "cycles_cache_flush_page")


def cycles_per(cell: Cell, keys: Sequence[str], per: str) -> float:
    """The sum of the cell's means of cycle ``keys`` per mean of ``per`` (a key no record has counts
    0); a ValueError when the mean of ``per`` is 0: there is nothing to divide among. Claims and
    plots both read their per-request and per-fork costs through this."""
    count = mean(cell, per)
    if not count:
        raise ValueError(f"{cell.label()}: no {per}")
    return math.fsum(cell.stats[k].mean for k in keys if k in cell.stats) / count


def io_cycles(cell: Cell) -> float:
    """Estimated cycles of the I/O path per I/O request: the DMA, the page flushes, the copies."""
    return cycles_per(cell, IO_KEYS, "io_requests")


def forkexec_cycles(cell: Cell) -> float:
    """Estimated cycles per fork+exec+exit cycle: the base work, the PTE and COW copies, the cache
    flushes, the page work."""
    return per_fork(cell, FORK_KEYS)


def per_fork(cell: Cell, keys: Sequence[str]) -> float:
    return cycles_per(cell, keys, "forks")


def cpu_mhz(cell: Cell) -> float:
    """The clock of the cell's machine (its --set value, else the preset's): cycles -> seconds."""
    sets = cell.config.get("set") or {}
    return float(sets.get("cpu_mhz", get_machine(str(cell.config.get("machine"))).cpu_mhz))


def entry_rate(cell: Cell) -> float:
    """Kernel entries (syscalls, faults, interrupts, fork/exec/exit) per second of wall clock:
    the syscall rate of Molnar's 0-30%."""
    seconds = mean(cell, "cycles_total") / (cpu_mhz(cell) * 1e6)
    return mean(cell, "kernel_entries") / seconds if seconds else 0.0
