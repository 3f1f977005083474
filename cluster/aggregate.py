"""Aggregation of a sweep's records: one cell per config but its seed, with statistics per record key.

``aggregate(entries, baseline)`` groups store entries (``cluster.store``) by their full config without
``seed`` and gives, for every numeric record key (ints and floats; identity keys and bools are
skipped): n, mean, sample standard deviation (ddof = 1; 0 when n = 1), the half-width of the 95%
confidence interval of the mean, t(0.975, n - 1) * std / sqrt(n) (None when n = 1), min and max.
With a baseline policy, a cell of another policy also gets, per key, the ratio of its mean to the
mean of the baseline cell that has the same config but the policy (None where that mean is 0 or the
key is missing; the whole ``ratios`` is None when there is no such cell). Failed entries are counted
per cell, with the error message of the lowest failed seed.

Cells are sorted by machine, workload, the rest of the config (canonical JSON) and policy, the
baseline policy first: the order does not depend on the order the entries were recorded in.

``format_results(cells, fmt, keys)`` renders them as table, csv, json or markdown.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cluster.text import show_value, table
from core.errors import ConfigError
from core.record import COUNT_KEYS, CYCLE_KEYS, IDENTITY_KEYS
from core.units import is_int
from workloads.config import canonical_json, full_config

FORMATS = ("table", "csv", "json", "markdown")

# What `zonesim results` shows unless told otherwise (--keys all: every numeric key).
HEADLINE_KEYS = (
    "events", "alloc_failures", "lowmem_free_min_bytes", "kernel_mapped_bytes_peak", "kmap_waits",
    "tlb_flush_full", "alias_violations", "stale_reads", "cache_flush_page", "cache_flush_all",
    "flushes_per_io", "congruence_exhaustions", "cycles_total",
)

Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile

# t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, rounded to 6 decimals)
T_975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)


def t_975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1; math.inf for the normal).

    Exact (to 6 decimals) for df <= 30 from the table; beyond, the Cornish-Fisher expansion in 1/df
    to the fourth order (Abramowitz & Stegun 26.7.5), within 3e-8 of the exact value from df = 30 on.
    """
    if not df >= 1:
        raise ValueError(f"degrees of freedom must be >= 1 (got {df!r})")
    if math.isinf(df):
        return Z_975
    if df <= len(T_975) and float(df).is_integer():
        return T_975[int(df) - 1]
    z = Z_975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass
class Stat:
    """Summary of one record key over a cell's seeds."""

    n: int
    mean: float
    std: float
    ci95: float | None  # half-width of the 95% confidence interval of the mean; None when n = 1
    min: float
    max: float

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": self.ci95, "min": self.min,
                "max": self.max}


def summarise(values: Sequence[float]) -> Stat:
    """n, mean, sample std, CI half-width, min, max of a non-empty sequence."""
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    ci = t_975(n - 1) * std / math.sqrt(n) if n > 1 else None
    return Stat(n, mean, std, ci, min(values), max(values))


@dataclass
class Cell:
    """One config but its seed: the seeds that ran, their statistics, failures and ratios."""

    config: dict[str, object]  # the full config without seed
    baseline: str | None = None
    seeds: list[object] = field(default_factory=list)  # of the ok entries, sorted
    stats: dict[str, Stat] = field(default_factory=dict)  # key -> Stat, keys in record order
    failures: int = 0
    first_error: str | None = None  # of the failed entry with the lowest seed
    ratios: dict[str, float | None] | None = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def policy(self) -> str:
        return str(self.config.get("policy"))

    def axes(self) -> str:
        """The config's axes but machine, policy and workload: engine, then the ``set`` values."""
        c = self.config
        rest = {k: v for k, v in c.items() if k not in ("machine", "policy", "workload", "set")}
        sets = c.get("set") if isinstance(c.get("set"), dict) else {}
        return " ".join([f"{k}={_text(v)}" for k, v in sorted(rest.items())] +
                        [f"{k}={_text(v)}" for k, v in sorted(sets.items())])

    def label(self) -> str:
        """machine / policy / workload, then engine and the ``set`` values."""
        axes = self.axes()
        return " / ".join(str(self.config.get(k)) for k in ("machine", "policy", "workload")) + (
            "  " + axes if axes else "")

    def as_dict(self, keys: Sequence[str] | None = None) -> dict[str, object]:
        shown = list(self.stats) if keys is None else [k for k in keys if k in self.stats]
        out: dict[str, object] = {"config": self.config, "seeds": self.seeds, "n": self.n,
                                  "failures": self.failures, "first_error": self.first_error,
                                  "stats": {k: self.stats[k].as_dict() for k in shown}}
        if self.baseline is not None:
            out["baseline"] = self.baseline
            out["ratios"] = None if self.ratios is None else {k: self.ratios.get(k) for k in shown}
        return out


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seed_order(seed: object) -> tuple:
    return (0, seed, "") if is_int(seed) else (1, 0, str(seed))


def cell_id(config: dict[str, object]) -> str:
    """The identity of a config's cell: its full config without the seed, as canonical JSON."""
    return canonical_json({k: v for k, v in full_config(config).items() if k != "seed"})


def aggregate(entries: Iterable[dict], baseline: str | None = None) -> list[Cell]:
    """Cells of the ok and failed entries (one entry per simulation, as ``Store.entries`` gives)."""
    cells: dict[str, Cell] = {}
    values: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, list[tuple[tuple, str]]] = {}
    for entry in entries:
        config = entry.get("config")
        if not isinstance(config, dict):
            continue
        cid = cell_id(config)
        if cid not in cells:
            cells[cid] = Cell({k: v for k, v in full_config(config).items() if k != "seed"}, baseline)
            values[cid] = {}
        cell = cells[cid]
        record = entry.get("record")
        if entry.get("status") != "ok" or not isinstance(record, dict):
            cell.failures += 1
            errors.setdefault(cid, []).append((_seed_order(config.get("seed", 0)), str(entry.get("error") or "failed")))
            continue
        cell.seeds.append(config.get("seed", 0))
        for key, value in record.items():
            if key not in IDENTITY_KEYS and _numeric(value):
                values[cid].setdefault(key, []).append(value)
    for cid, cell in cells.items():
        cell.seeds.sort(key=_seed_order)
        if cid in errors:
            cell.first_error = min(errors[cid])[1]
        cell.stats = {key: summarise(v) for key, v in values[cid].items()}
    if baseline is not None:
        for cell in cells.values():
            if cell.policy != baseline:
                base = cells.get(canonical_json({**cell.config, "policy": baseline}))
                cell.ratios = None if base is None else {key: _ratio(stat, base.stats.get(key))
                                                         for key, stat in cell.stats.items()}

    def order(cell: Cell) -> tuple:
        c = cell.config
        rest = canonical_json({k: v for k, v in c.items() if k not in ("machine", "workload", "policy")})
        return str(c.get("machine")), str(c.get("workload")), rest, cell.policy != baseline, cell.policy

    return sorted(cells.values(), key=order)


def _ratio(stat: Stat, base: Stat | None) -> float | None:
    if base is None or base.mean == 0:
        return None
    return stat.mean / base.mean


# -- formats -------------------------------------------------------------------------------------


def shown_keys(cells: Sequence[Cell], keys: Sequence[str] | None) -> list[str]:
    """The record keys to show: ``keys`` as given (``["all"]``: every numeric key), by default the
    headline keys that the cells have. A key no cell has and no record can have is a ConfigError."""
    present: dict[str, None] = {}
    for cell in cells:
        present.update(dict.fromkeys(cell.stats))
    if keys is None:
        return [k for k in HEADLINE_KEYS if k in present]
    if list(keys) == ["all"]:
        return list(present)
    known = {**present, **dict.fromkeys(COUNT_KEYS + CYCLE_KEYS)}
    for key in keys:
        if key not in known:
            raise ConfigError("keys", "all, or record keys from: " + ", ".join(known), key)
    return list(dict.fromkeys(keys))


def format_results(cells: Sequence[Cell], fmt: str, keys: Sequence[str] | None = None) -> str:
    """The cells as ``table`` (for people), ``csv`` (one row per cell and key), ``json`` (everything;
    all keys unless ``keys`` is given) or ``markdown`` (one table). See ``shown_keys`` for ``keys``."""
    if fmt not in FORMATS:
        raise ConfigError("format", "one of " + ", ".join(FORMATS), fmt)
    if fmt == "json":
        shown = None if keys is None else shown_keys(cells, keys)
        baseline = cells[0].baseline if cells else None
        data = {"baseline": baseline, "cells": [_finite(cell.as_dict(shown)) for cell in cells]}
        return json.dumps(data, indent=2, allow_nan=False)
    shown = shown_keys(cells, keys)
    return {"table": _table, "csv": _csv, "markdown": _markdown}[fmt](cells, shown)


def _finite(value: object) -> object:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _num(value: float | None) -> str:
    """A number for people: integers whole, others to 4 significant digits (1 decimal from 100 up)."""
    if value is None:
        return "-"
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    if math.isfinite(value) and abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


def _mean_ci(key: str, stat: Stat) -> str:

    mean = show_value(key, stat.mean) if "bytes" in key.split("_") else _num(stat.mean)
    return f"{mean} ± {_num(stat.ci95)}"


def _ratio_text(cell: Cell, key: str) -> str:
    if cell.ratios is None:
        return "-" if cell.policy != cell.baseline else ""
    ratio = cell.ratios.get(key)
    return "-" if ratio is None else f"{ratio:.3f}"


def _head(cell: Cell) -> str:
    seeds = f"n={cell.n}" + (f" (seeds {', '.join(map(str, cell.seeds))})" if 0 < cell.n <= 10 else "")
    failed = f", {cell.failures} failed (first: {cell.first_error})" if cell.failures else ""
    return f"{cell.label()}  {seeds}{failed}"


def _table(cells: Sequence[Cell], keys: list[str]) -> str:

    if not cells:
        return "no results"
    baseline = cells[0].baseline
    head = ["key", "mean ± 95% CI", "n", "min", "max"] + ([f"vs {baseline}"] if baseline else [])
    blocks = []
    for cell in cells:
        rows = [head]
        for key in keys:
            stat = cell.stats.get(key)
            if stat is None:
                continue
            row = [key, _mean_ci(key, stat), str(stat.n), _num(stat.min), _num(stat.max)]
            rows.append(row + ([_ratio_text(cell, key)] if baseline else []))
        lines = [_head(cell)] + (table(rows, indent=2) if len(rows) > 1 else [])
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _identity(cell: Cell) -> list[str]:
    c = cell.config
    sets = c.get("set")
    rest = {k: v for k, v in c.items() if k not in ("machine", "policy", "workload", "engine", "set")}
    return [str(c.get("machine")), cell.policy, str(c.get("workload")), str(c.get("engine")),
            canonical_json(sets if sets is not None else {}) + (" " + canonical_json(rest) if rest else "")]


def _csv(cells: Sequence[Cell], keys: list[str]) -> str:
    """One row per cell and key (a cell with no ok run: one row with an empty key), raw numbers."""
    baseline = cells[0].baseline if cells else None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["machine", "policy", "workload", "engine", "set", "key", "n", "mean", "std", "ci95", "min",
                     "max"] + (["ratio"] if baseline else []) + ["failures", "first_error"])

    def raw(value: object) -> str:
        return "" if value is None else repr(value) if isinstance(value, float) else str(value)

    for cell in cells:
        tail = [str(cell.failures), cell.first_error or ""]
        rows = 0
        for key in keys:
            stat = cell.stats.get(key)
            if stat is None:
                continue
            ratio = [raw(cell.ratios.get(key) if cell.ratios else None)] if baseline else []
            writer.writerow(_identity(cell) + [key] + [raw(v) for v in stat.as_dict().values()] + ratio + tail)
            rows += 1
        if not rows:
            writer.writerow(_identity(cell) + ["", "0"] + [""] * 5 + ([""] if baseline else []) + tail)
    return out.getvalue()


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(cells: Sequence[Cell], keys: list[str]) -> str:
    baseline = cells[0].baseline if cells else None
    head = ["cell", "key", "mean ± 95% CI", "n", "min", "max"] + ([f"vs {baseline}"] if baseline else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for cell in cells:
        label = _md(_head(cell))
        rows = 0
        for key in keys:
            stat = cell.stats.get(key)
            if stat is None:
                continue
            row = [label if rows == 0 else "", key, _mean_ci(key, stat), str(stat.n), _num(stat.min),
                   _num(stat.max)] + ([_ratio_text(cell, key)] if baseline else [])
            lines.append("| " + " | ".join(_md(c) for c in row) + " |")
            rows += 1
        if not rows:
            lines.append("| " + " | ".join([label] + ["-"] * (len(head) - 1)) + " |")
    return "\n".join(lines)
