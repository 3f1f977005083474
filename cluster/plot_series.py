"""The numbers behind ``cluster.plots``' figures, pure: aggregated cells in, ``Series`` out (legend
label -> points sorted by x), no matplotlib. A point is a cell's mean over its seeds with the
half-width of its 95% interval; the derived quantities (fork/exec latency, I/O gain, 4G/4G
slowdown) come from ``cluster.cells``, the claims' own definitions, and carry no error bar. A cell
that lacks the key or axis a series needs is left out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cluster import cells as shared
from cluster.aggregate import Cell
from core.machine import MACHINES
from core.units import GiB, KiB, MiB, parse_size
from workloads.config import canonical_json

BASELINE = "stock"


@dataclass(frozen=True)
class Point:
    """One plotted value: ``x`` (a number, or any sortable category for bars), ``y``, ``err`` (the
    95% CI half-width, None when unknown)."""

    x: object
    y: float
    err: float | None = None


Series = dict[str, list[Point]]  # legend label -> points sorted by x


# -- reading cells -------------------------------------------------------------------------------


def setting(cell: Cell, name: str) -> object:
    """The cell's ``set.NAME`` value as the spec wrote it, or None."""
    sets = cell.config.get("set")
    return sets.get(name) if isinstance(sets, dict) else None


def size_of(cell: Cell, name: str) -> int | None:
    """The cell's ``set.NAME`` as bytes ("16GiB" -> 17179869184), or None when it has none."""
    value = setting(cell, name)
    return None if value is None else parse_size(name, value)  # type: ignore[arg-type]


def flag_of(cell: Cell, name: str) -> bool | None:
    """The cell's ``set.NAME`` as a boolean (true/false, as TOML or --set text), or None."""
    value = setting(cell, name)
    if isinstance(value, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    return None if value is None else bool(value)


def mean(cell: Cell, key: str) -> float | None:
    stat = cell.stats.get(key)
    return None if stat is None else stat.mean


def mean_ci(cell: Cell, key: str, scale: float = 1.0) -> tuple[float, float | None] | None:
    """(mean, ci95) of a record key divided by ``scale``; None when the cell has no such key."""
    stat = cell.stats.get(key)
    if stat is None:
        return None
    return stat.mean / scale, None if stat.ci95 is None else stat.ci95 / scale


def policy_of(cell: Cell) -> str:
    return cell.policy


def series(cells: Iterable[Cell], x: Callable[[Cell], object], y: Callable[[Cell], tuple | float | None],
           group: Callable[[Cell], str] = policy_of) -> Series:
    """Points by legend label, labels in the order of their first cell, points sorted by x. ``y``
    gives a value or (value, ci95); a cell for which ``x`` or ``y`` gives None is left out."""
    out: Series = {}
    for cell in cells:
        xv, yv = x(cell), y(cell)
        if xv is None or yv is None:
            continue
        value, err = yv if isinstance(yv, tuple) else (yv, None)
        out.setdefault(group(cell), []).append(Point(xv, float(value), err))
    for points in out.values():
        points.sort(key=lambda p: p.x)  # type: ignore[arg-type, return-value]
    return out


def _size_axis(name: str, unit: int) -> Callable[[Cell], float | None]:
    def x(cell: Cell) -> float | None:
        size = size_of(cell, name)
        return None if size is None else size / unit
    return x


def _number_axis(name: str) -> Callable[[Cell], float | None]:
    def x(cell: Cell) -> float | None:
        value = setting(cell, name)
        return None if value is None or isinstance(value, bool) else float(value)  # type: ignore[arg-type]
    return x


def _key(name: str, scale: float = 1.0) -> Callable[[Cell], tuple[float, float | None] | None]:
    return lambda cell: mean_ci(cell, name, scale)


# -- the series each plot draws (pure: cells in, numbers out) -------------------------------------


def lowmem_series(cells: Iterable[Cell]) -> tuple[Series, Series]:
    """p7: (lowmem_free_min_bytes in MiB, alloc_failures) per policy against memory in GiB."""
    cells = list(cells)
    x = _size_axis("memory", GiB)
    return series(cells, x, _key("lowmem_free_min_bytes", MiB)), series(cells, x, _key("alloc_failures"))


def forkexec_us(cell: Cell) -> float | None:
    """Estimated microseconds per fork+exec+exit: the claim's cycles per fork
    (``cluster.cells.forkexec_cycles``) at the cell's machine's clock. None without forks."""
    forks, mhz = mean(cell, "forks"), _cpu_mhz(cell)
    if not forks or not mhz:
        return None
    return shared.forkexec_cycles(cell) / mhz


def _machine_policy(cell: Cell) -> str:
    return f"{cell.config.get('machine')} {cell.policy}"


def forkexec_series(cells: Iterable[Cell]) -> Series:
    """p4: forkexec_us per machine and policy along anon_pages (no error bars: a ratio of means)."""
    return series(cells, _number_axis("anon_pages"), forkexec_us, _machine_policy)


def flushes_series(cells: Iterable[Cell]) -> Series:
    """p2: flushes_per_io per policy against io_size in KiB."""
    return series(cells, _size_axis("io_size", KiB), _key("flushes_per_io"))


def io_cycles(cell: Cell) -> float | None:
    """Estimated cycles per I/O request, as the claim counts them (``cluster.cells.io_cycles``);
    None without I/O requests."""
    return shared.io_cycles(cell) if mean(cell, "io_requests") else None


def io_gain_series(cells: Iterable[Cell], baseline: str = BASELINE) -> Series:
    """p3: per policy (and variant) but the baseline, 100 * (1 - io_cycles(cell) / io_cycles(baseline
    cell)) in % against io_size in KiB, the baseline cell being the one with the same config but the
    policy and its variant switches (VARIANTS)."""
    cells = list(cells)
    base = {_config_but_policy(c): io_cycles(c) for c in cells if c.policy == baseline}

    def gain(cell: Cell) -> float | None:
        ref, own = base.get(_config_but_policy(cell)), io_cycles(cell)
        return None if not ref or own is None else 100.0 * (1.0 - own / ref)

    return series([c for c in cells if c.policy != baseline], _size_axis("io_size", KiB), gain, _variant)


# switches that make variants of one policy: a baseline cell matches whatever they are set to
VARIANTS = ("defer_dcache_flush",)


def _variant(cell: Cell) -> str:
    sets = cell.config.get("set") or {}
    return " ".join([cell.policy] + [f"{k}={str(sets[k]).lower()}" for k in VARIANTS if k in sets])


def entry_rate(cell: Cell) -> float | None:
    """Kernel entries per second of wall clock (``cluster.cells.entry_rate``); None without entries
    or cycles."""
    return shared.entry_rate(cell) if mean(cell, "kernel_entries") and mean(cell, "cycles_total") else None


def _cpu_mhz(cell: Cell) -> float | None:
    return shared.cpu_mhz(cell) if str(cell.config.get("machine")) in MACHINES else None


def slowdown_series(cells: Iterable[Cell], baseline: str = BASELINE) -> Series:
    """p8: per policy but the baseline, 100 * (cycles_total / the baseline's - 1) in %, against the
    baseline cell's kernel entries per second (the cell with the same config but the policy)."""
    cells = list(cells)
    base = {_config_but_policy(c): c for c in cells if c.policy == baseline}

    def x(cell: Cell) -> float | None:
        ref = base.get(_config_but_policy(cell))
        return None if ref is None else entry_rate(ref)

    def y(cell: Cell) -> float | None:
        ref = base.get(_config_but_policy(cell))
        own, theirs = mean(cell, "cycles_total"), None if ref is None else mean(ref, "cycles_total")
        return None if not own or not theirs else 100.0 * (own / theirs - 1.0)

    return series([c for c in cells if c.policy != baseline], x, y)


def _config_but_policy(cell: Cell) -> str:
    config = {k: v for k, v in cell.config.items() if k != "policy"}
    config["set"] = {k: v for k, v in (config.get("set") or {}).items() if k not in VARIANTS}
    return canonical_json(config)


def alias_series(cells: Iterable[Cell]) -> Series:
    """p5: alias_violations per policy, x = (machine, touch_rate)."""
    def x(cell: Cell) -> tuple[str, float] | None:
        rate = _number_axis("touch_rate")(cell)
        return None if rate is None else (str(cell.config.get("machine")), rate)
    return series(cells, x, _key("alias_violations"))


def exhaustion_series(cells: Iterable[Cell]) -> Series:
    """p6: congruence_exhaustions and stale_reads (labelled "KEY (policy)") against kernel_window in MiB."""
    cells = list(cells)
    x = _size_axis("kernel_window", MiB)
    out: Series = {}
    for key in ("congruence_exhaustions", "stale_reads"):
        out.update(series(cells, x, _key(key), group=lambda c, k=key: f"{k} ({c.policy})"))
    return out


def tlb_series(cells: Iterable[Cell]) -> Series:
    """p9: tlb_entries_used along kalloc_max_order, one group with and one without variable pages."""
    cells = [c for c in cells if flag_of(c, "variable_pages") is not None]
    policies = {c.policy for c in cells}

    def group(cell: Cell) -> str:
        label = "variable-size pages" if flag_of(cell, "variable_pages") else "base pages only"
        return label if len(policies) == 1 else f"{label} ({cell.policy})"

    return series(cells, _number_axis("kalloc_max_order"), _key("tlb_entries_used"), group)
