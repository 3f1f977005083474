"""Sweep specs: one TOML file names a set of simulations, checked in full before any of them runs.

A spec is a base config, axes that vary it, and replicate seeds::

    name = "p5-flushes-vs-io-size"      # required; [A-Za-z0-9_.-]+ (not only dots): the store's directory name
    description = "flushes per policy as I/O grows"   # optional, free text
    seeds = 3                           # required: an int n (seeds 0..n-1) or a list of distinct ints >= 0
    baseline = "stock"                  # optional: the policy every other policy is compared against

    [base]                              # required: what every cell starts from (a run config minus seed)
    machine = "pa8800"                  # machine, policy, workload, engine: optional, DEFAULTS fill the rest
    workload = "io"
    [base.set]                          # any --set name = value
    events = 200000

    [grid]                              # optional: the cartesian product of these axes, first key outermost
    policy = ["stock", "unmapped"]
    "set.io_size" = ["4KiB", "64KiB", "1MiB"]

    [[zip]]                             # optional, repeatable: equal-length axes advanced together
    "set.processes" = [8, 64]
    "set.anon_pages" = [512, 64]

    [sample]                            # optional: n random points drawn from their own seed
    n = 4
    seed = 7                            # required in [sample]
    uniform = { "set.miss_rate" = [0.1, 0.9] }       # a float in [lo, hi]
    log_uniform = { "set.events" = [1000, 100000] }  # an int in [lo, hi] (ints >= 1), log-uniform, rounded
    choice = { "set.kmap_hold" = [8, 16, 64] }       # one of the values, uniformly

Axis keys are ``machine``, ``policy``, ``workload``, ``engine`` or ``set.NAME`` (any ``--set`` name:
a machine field, ``cost.NAME``, a policy or workload parameter). A key is an axis at most once across
grid, zips and sample, and ``seed`` is never one (seeds come from ``seeds``); an axis overrides
``base``. ``uniform`` and ``log_uniform`` take ``set.NAME`` keys only. Axis values are strings,
numbers or booleans as ``--set`` takes them (machine, policy, workload and engine: strings).

Cells are the product grid x zip[0] x zip[1] ... x sample points, grid outermost; within the grid
the first key written varies slowest; sample points come from ``numpy.random.default_rng(sample.seed)``,
drawn kind by kind (uniform, log_uniform, choice) and key by key in sorted order within a kind, so
the same seed gives the same points whatever the order of the keys in the file. A cell equal to
an earlier one is dropped. ``configs()`` is every cell with every seed, cell-major. At most
``MAX_CONFIGS`` simulations; the count is checked before anything is expanded.

Every cell is validated by ``workloads.config.resolve`` (machine, policy and stream are built; the
stream is lazy), the engine name and ``core.mem_map.compute_layout`` (what the kernel checks at
boot), so no simulation of a spec that loads fails on its config. Nothing is written anywhere.

Errors are ``SpecError``s (a ``ConfigError``: the CLI prints them as one line). ``field`` is a key
path in this grammar::

    path  := "spec" | step ("." step | "[" index "]")*      spec = the file as a whole
    step  := bare key [A-Za-z0-9_-]+ | JSON-quoted key        e.g. grid."set.io_size"[2]
    field := path (" with " path (", " path)*)?              a cell whose values only fail together

e.g. ``seeds[1]``, ``base.set.events``, ``zip[0].machine``, ``sample.uniform."set.miss_rate"``,
``sample.choice."set.kmap_hold"[2]``, ``grid.policy[1] with zip[0].machine[0]``. For a cell that
fails, the path is where the failing value came from; ``with`` names the other axis values whose
replacement by another value of the same axis makes that cell valid; when no value can be singled
out, every axis value of the cell is named (``base`` if it has none). ``load_spec`` prefixes the
file name: ``sweep.toml: grid.policy[1]: one of 4g4g, stock, unmapped (got 'stokc')``.

``digest()`` is the sha256 of ``canonical()``, the sorted-key JSON of what the spec computes: its
cells (defaults filled in), seeds and baseline. Name and description are labels and do not enter
it; whitespace, comments and key order that leave the expansion unchanged do not either. Values
are compared as written ("4KiB" and 4096 are different cells).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field

from cluster.spec_parts import (
    MAX_CONFIGS,
    MISSING,
    NAMED,
    SpecError,
    a_table,
    draw,
    join_path,
    no_unknown,
    parse_base,
    parse_grid,
    parse_name,
    parse_sample,
    parse_seeds,
    parse_zips,
)
from core.errors import ConfigError, StreamError
from core.mem_map import compute_layout
from core.sim import ENGINES
from workloads.config import resolve
from workloads.errors import TraceError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PROBE_ALTERNATIVES = 8  # values of another axis tried when finding what a bad cell's value fails with
FORMAT = "zonesim-sweep/1"
TOP_KEYS = ("name", "description", "seeds", "baseline", "base", "grid", "zip", "sample")


# -- the spec ------------------------------------------------------------------------------------

Assignment = tuple[str, object, str]  # axis key, value, key path it came from


@dataclass(frozen=True)
class Spec:
    """A validated sweep spec. ``cells()`` and ``configs()`` return fresh dicts each call."""

    name: str
    description: str
    seeds: tuple[int, ...]
    baseline: str | None
    base: dict
    axes: dict  # normalised: {"grid": [[key, [values]]], "zip": [[[key, [values]]]], "sample": {...} | None}
    text: str = field(default="", repr=False)
    _cells: tuple[dict, ...] = field(default=(), repr=False, compare=False)

    def cells(self) -> list[dict]:
        return [_copy(cell) for cell in self._cells]

    def configs(self) -> list[dict]:
        return [{**_copy(cell), "seed": seed} for cell in self._cells for seed in self.seeds]

    @property
    def axis_keys(self) -> tuple[str, ...]:
        """The keys the axes vary, in expansion order (grid, zips, sample)."""
        keys = [key for key, _ in self.axes["grid"]] + [key for z in self.axes["zip"] for key, _ in z]
        sample = self.axes["sample"]
        if sample:
            keys += [k for kind in ("uniform", "log_uniform", "choice") for k, *_ in sample[kind]]
        return tuple(keys)

    def canonical(self) -> str:
        return json.dumps({"format": FORMAT, "seeds": list(self.seeds), "baseline": self.baseline,
                           "cells": list(self._cells)}, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def _copy(cell: dict) -> dict:
    return {**cell, "set": dict(cell["set"])}


def _cell(base: dict, assignments: list[Assignment]) -> dict:
    cell = _copy(base)
    for key, value, _ in assignments:
        if key.startswith("set."):
            cell["set"][key[len("set."):]] = value
        else:
            cell[key] = value
    return cell


def _check_cell(cell: dict) -> Exception | None:
    """Why ``cell`` cannot run, or None. Catches what bad values can make the builders raise."""
    try:
        r = resolve({**cell, "seed": 0})
        if r.engine not in ENGINES:
            raise ConfigError("engine", "one of " + ", ".join(sorted(ENGINES)), r.engine)
        compute_layout(r.machine, r.policy)
    except (ValueError, ArithmeticError, MemoryError, TraceError) as err:  # ConfigError, StreamError included
        return err
    return None


def _blame(cell: dict, origin: dict[str, str], axes: dict[str, list], err: Exception) -> SpecError:
    """The SpecError for a cell that failed with ``err``: the path of the value the error names, plus
    the other axis values without which the cell would run."""
    if isinstance(err, ConfigError):  # "set.policy" is an unknown --set name, not the policy
        keys = ["set." + p if "set." + p in origin or p not in NAMED else p for p in str(err.field).split(" + ")]
    elif isinstance(err, TraceError | StreamError):  # a trace that cannot be read, or its events
        keys = ["workload"]
    else:
        keys = []
    primary = [origin[k] for k in keys if k in origin]
    partners = []
    for key, path in origin.items():
        if key in keys or key not in axes:
            continue
        current = cell["set"].get(key[len("set."):]) if key.startswith("set.") else cell.get(key)
        for alt in [v for v in axes[key] if v != current][:PROBE_ALTERNATIVES]:
            probe = _cell(cell, [(key, alt, path)])
            if _check_cell(probe) is None:
                partners.append(path)
                break
    # nothing singled out: the cell as a whole, i.e. every axis value that made it
    paths = primary + partners or [path for key, path in origin.items() if key in axes] or ["base"]
    where = paths[0] + (" with " + ", ".join(paths[1:]) if len(paths) > 1 else "")
    if isinstance(err, ConfigError) and len(keys) == 1 and primary:
        return SpecError(where, err.allowed, MISSING if err.got is None else err.got)
    if isinstance(err, ConfigError | StreamError | TraceError):
        return SpecError(where, str(err))
    return SpecError(where, f"cannot build this cell: {type(err).__name__}: {err}")


def parse_spec(data: dict, text: str = "") -> Spec:
    """Validate a spec (as tomllib parses it) in full and expand it; raises SpecError."""
    data = a_table(data, "spec")
    no_unknown(data, "", TOP_KEYS)
    name = parse_name(data)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError("description", "a string", description)
    seeds = parse_seeds(data)
    baseline = data.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise SpecError("baseline", "a policy name (a string)", baseline)
    base, base_origin = parse_base(data)
    grid = parse_grid(data)
    zips = parse_zips(data)
    sample = parse_sample(data)

    seen: dict[str, str] = {}
    axis_paths = [(key, join_path("grid", key)) for key, _ in grid]
    axis_paths += [(key, join_path(f"zip[{z}]", key)) for z, axes in enumerate(zips) for key, _ in axes]
    axis_paths += sample.keys() if sample else []
    for key, path in axis_paths:
        if key in seen:
            raise SpecError(path, f"an axis key used once: {key} is already an axis at {seen[key]}")
        seen[key] = path

    factors = [len(values) for _, values in grid] + [len(axes[0][1]) for axes in zips]
    factors += [sample.n] if sample else []
    total = math.prod(factors) * len(seeds)
    if total > MAX_CONFIGS:
        shape = " x ".join(str(f) for f in [*factors, len(seeds)])
        raise SpecError("spec", f"at most {MAX_CONFIGS} simulations (cells x seeds = {shape})", total)

    grid_points = itertools.product(*[[(key, v, f"{join_path('grid', key)}[{i}]") for i, v in enumerate(values)]
                                      for key, values in grid])
    zip_points = [[[(key, values[i], f"{join_path(f'zip[{z}]', key)}[{i}]") for key, values in axes]
                   for i in range(len(axes[0][1]))] for z, axes in enumerate(zips)]
    sample_points = draw(sample) if sample else [[]]
    cells: list[dict] = []
    origins: list[dict[str, str]] = []
    seen_cells: set[str] = set()
    for g, *rest in itertools.product(grid_points, *zip_points, sample_points):
        assignments = [a for part in (g, *rest) for a in part]
        cell = _cell(base, assignments)
        text_key = json.dumps(cell, sort_keys=True)
        if text_key in seen_cells:
            continue
        seen_cells.add(text_key)
        cells.append(cell)
        origins.append({**base_origin, **{key: path for key, _, path in assignments}})

    values: dict[str, list] = {key: list(vs) for key, vs in grid}
    values.update({key: list(vs) for axes in zips for key, vs in axes})
    values.update({key: list(vs) for key, vs in (sample.choice if sample else ())})
    for point in sample_points:
        for key, value, _ in point:
            if value not in values.setdefault(key, []):
                values[key].append(value)
    for cell, origin in zip(cells, origins, strict=True):
        err = _check_cell(cell)
        if err is not None:
            raise _blame(cell, origin, values, err) from None
    policies = sorted({str(cell["policy"]) for cell in cells})  # after the cells: a misspelt policy is named there
    if baseline is not None and baseline not in policies:
        raise SpecError("baseline", "one of the policies the spec runs: " + ", ".join(policies), baseline)

    axes = {"grid": [[key, list(vs)] for key, vs in grid], "zip": [[[key, list(vs)] for key, vs in axes]
                                                                    for axes in zips],
            "sample": sample.as_json() if sample else None}
    return Spec(name, description, seeds, baseline, base, axes, text, tuple(cells))


def load_spec(path: str) -> Spec:
    """Read and validate the spec at ``path``; every failure is a SpecError prefixed with ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise SpecError("spec", f"cannot read: {err.strerror or err}", source=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError("spec", f"not UTF-8 text (byte {err.start})", source=str(path)) from None
    return spec_from_text(text, str(path))


def spec_from_text(text: str, source: str = "") -> Spec:
    """Validate a spec given as TOML text (what the sweep service receives); errors name ``source``."""
    path = source
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError("spec", f"not valid TOML: {err}", source=str(path)) from None
    except RecursionError:
        raise SpecError("spec", "not valid TOML: nested too deeply", source=str(path)) from None
    try:
        return parse_spec(data, text)
    except SpecError as err:
        raise err.with_source(str(path)) from None
