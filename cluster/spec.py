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
import re
import reprlib
from dataclasses import dataclass, field

import numpy as np

from core.errors import ConfigError, StreamError
from core.mem_map import compute_layout
from core.sim import ENGINES
from core.units import is_int
from workloads.config import DEFAULTS, resolve
from workloads.errors import TraceError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MAX_CONFIGS = 100_000  # simulations (cells x seeds) one spec may ask for
MAX_SEED = (1 << 63) - 1  # seeds and sample.seed fit a signed 64-bit integer
MAX_NAME = 100
PROBE_ALTERNATIVES = 8  # values of another axis tried when finding what a bad cell's value fails with
FORMAT = "zonesim-sweep/1"

TOP_KEYS = ("name", "description", "seeds", "baseline", "base", "grid", "zip", "sample")
NAMED = ("machine", "policy", "workload", "engine")  # config keys whose values are names (strings)
BASE_KEYS = (*NAMED, "set")
SAMPLE_KEYS = ("n", "seed", "uniform", "log_uniform", "choice")
AXIS_HELP = "an axis key: machine, policy, workload, engine or set.NAME"

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


class _Missing:
    """No ``got`` value (None is a value a programmatic spec may hold); pickles as itself."""

    def __reduce__(self) -> str:
        return "_MISSING"


_MISSING = _Missing()
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlong = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 3


def _show(value: object) -> str:
    """A short one-line repr of any value, however large or deep."""
    try:
        return _repr.repr(value)
    except Exception:  # a hostile __repr__ in a programmatic dict: fall back to the type
        return f"a {type(value).__name__}"


class SpecError(ConfigError):
    """A sweep spec that cannot run. ``field`` is the key path (see the module docstring), ``source``
    the spec's file when it came from one; ``str()`` is one line."""

    def __init__(self, field: str, allowed: str, got: object = _MISSING, source: str = "") -> None:
        self.field = field
        self.allowed = allowed
        self.got = None if got is _MISSING else got
        self.source = source
        shown = "" if got is _MISSING else f" (got {_show(got)})"
        message = f"{field}: {allowed}{shown}"
        if source:
            message = f"{source}: {message}"
        ValueError.__init__(self, " ".join(message.splitlines()))
        self._got = got

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.field, self.allowed, self._got, source)

    def __reduce__(self) -> tuple:
        return SpecError, (self.field, self.allowed, self._got, self.source)


# -- key paths -----------------------------------------------------------------------------------


def _step(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    return text if _BARE.fullmatch(text) else json.dumps(text)


def _join(path: str, key: object) -> str:
    return f"{path}.{_step(key)}" if path else _step(key)


# -- checks of single values ---------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return (is_int(value) or isinstance(value, float)) and not isinstance(value, bool)


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None if it is not a number or does not fit one."""
    if not _is_number(value):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _table(value: object, path: str, what: str = "a table") -> dict:
    if not isinstance(value, dict):
        raise SpecError(path, what, value)
    for key in value:
        if not isinstance(key, str):
            raise SpecError(path, "a table with string keys", key)
    return value


def _no_unknown(table: dict, path: str, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            where = f"{path} takes" if path else "a spec takes"
            raise SpecError(_join(path, key), f"an unknown key; {where} " + ", ".join(allowed))


def _seed_int(value: object, path: str) -> int:
    if not is_int(value) or not 0 <= value <= MAX_SEED:  # type: ignore[operator]
        raise SpecError(path, "an integer from 0 to 2**63-1", value)
    return value  # type: ignore[return-value]


def _axis_value(key: str, value: object, path: str) -> object:
    """One value an axis (or base) gives ``key``: names are strings, settings are scalars."""
    if key in NAMED:
        if not isinstance(value, str):
            raise SpecError(path, f"a {key} name (a string)", value)
        return value
    if isinstance(value, str | bool) or is_int(value):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(path, "a finite number", value)
        return value
    raise SpecError(path, "a string, number or boolean", value)


def _axis_key(key: str, path: str) -> str:
    if key == "seed":
        raise SpecError(path, "not an axis: replicate seeds come from the top-level seeds key")
    if key in NAMED or (key.startswith("set.") and len(key) > len("set.")):
        return key
    raise SpecError(path, AXIS_HELP)


def _axis_values(key: str, values: object, path: str) -> tuple[object, ...]:
    if not isinstance(values, list):
        raise SpecError(path, "a list of values", values)
    if not values:
        raise SpecError(path, "a non-empty list of values (an empty axis leaves nothing to run)")
    return tuple(_axis_value(key, v, f"{path}[{i}]") for i, v in enumerate(values))


# -- the parts of a spec -------------------------------------------------------------------------


def _parse_name(data: dict) -> str:
    if "name" not in data:
        raise SpecError("name", "required: the sweep's name, [A-Za-z0-9_.-]+")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."} or len(name) > MAX_NAME:
        raise SpecError("name", f"a directory name of 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ . - "
                        "(not only dots)", name)
    return name


def _parse_seeds(data: dict) -> tuple[int, ...]:
    if "seeds" not in data:
        raise SpecError("seeds", "required: an integer n (seeds 0..n-1) or a list of seeds")
    seeds = data["seeds"]
    if is_int(seeds):
        if not 1 <= seeds <= MAX_CONFIGS:
            raise SpecError("seeds", f"a count from 1 to {MAX_CONFIGS}, or a list of seeds", seeds)
        return tuple(range(seeds))
    if not isinstance(seeds, list):
        raise SpecError("seeds", "an integer n (seeds 0..n-1) or a list of integers >= 0", seeds)
    if not seeds:
        raise SpecError("seeds", "a non-empty list of integers >= 0")
    if len(seeds) > MAX_CONFIGS:
        raise SpecError("seeds", f"at most {MAX_CONFIGS} seeds", len(seeds))
    out: list[int] = []
    for i, seed in enumerate(seeds):
        seed = _seed_int(seed, f"seeds[{i}]")
        if seed in out:
            raise SpecError(f"seeds[{i}]", f"a seed not listed before (seeds[{out.index(seed)}])", seed)
        out.append(seed)
    return tuple(out)


def _parse_base(data: dict) -> tuple[dict, dict[str, str]]:
    """The base config with DEFAULTS filled in, and the path each given key came from."""
    if "base" not in data:
        raise SpecError("base", "required: a table [base] with machine, policy, workload, engine and set")
    base = _table(data["base"], "base")
    if "seed" in base:
        raise SpecError("base.seed", "not allowed: replicate seeds come from the top-level seeds key")
    _no_unknown(base, "base", BASE_KEYS)
    out: dict = {key: DEFAULTS[key] for key in NAMED}
    origin: dict[str, str] = {}
    for key in NAMED:
        if key in base:
            out[key] = _axis_value(key, base[key], f"base.{key}")
            origin[key] = f"base.{key}"
    sets = _table(base.get("set", {}), "base.set", "a table of name = value")
    out["set"] = {}
    for name, value in sets.items():
        path = _join("base.set", name)
        if not name:
            raise SpecError(path, "a --set name")
        out["set"][name] = _axis_value("set." + name, value, path)
        origin["set." + name] = path
    return out, origin


def _parse_grid(data: dict) -> list[tuple[str, tuple[object, ...]]]:
    grid = _table(data.get("grid", {}), "grid", "a table of axis = [values]")
    return [(_axis_key(key, _join("grid", key)), _axis_values(key, values, _join("grid", key)))
            for key, values in grid.items()]


def _parse_zips(data: dict) -> list[list[tuple[str, tuple[object, ...]]]]:
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise SpecError("zip", "an array of tables, each written [[zip]]", zips)
    out = []
    for z, table in enumerate(zips):
        path = f"zip[{z}]"
        table = _table(table, path, "a table of axis = [values], written [[zip]]")
        if not table:
            raise SpecError(path, "at least one axis (an empty zip leaves nothing to run)")
        axes = [(_axis_key(key, _join(path, key)), _axis_values(key, values, _join(path, key)))
                for key, values in table.items()]
        first_key, first = axes[0]
        for key, values in axes[1:]:
            if len(values) != len(first):
                raise SpecError(_join(path, key), f"as many values as {_join(path, first_key)} ({len(first)}): "
                                "zipped axes advance together", len(values))
        out.append(axes)
    return out


@dataclass(frozen=True)
class _Sample:
    n: int
    seed: int
    uniform: tuple[tuple[str, float, float], ...]
    log_uniform: tuple[tuple[str, int, int], ...]
    choice: tuple[tuple[str, tuple[object, ...]], ...]

    def keys(self) -> list[tuple[str, str]]:
        return ([(k, _join("sample.uniform", k)) for k, _, _ in self.uniform]
                + [(k, _join("sample.log_uniform", k)) for k, _, _ in self.log_uniform]
                + [(k, _join("sample.choice", k)) for k, _ in self.choice])

    def as_json(self) -> dict:
        return {"n": self.n, "seed": self.seed, "uniform": [list(u) for u in self.uniform],
                "log_uniform": [list(u) for u in self.log_uniform],
                "choice": [[k, list(v)] for k, v in self.choice]}


def _parse_range(key: str, value: object, path: str, ints: bool) -> tuple:
    what = "[lo, hi], integers from 1 to 2**63-1" if ints else "[lo, hi], finite numbers"
    if not isinstance(value, list) or len(value) != 2:
        raise SpecError(path, what + ", lo <= hi", value)
    for i, bound in enumerate(value):
        ok = (is_int(bound) and 1 <= bound <= MAX_SEED) if ints else _finite(bound) is not None
        if not ok:
            raise SpecError(f"{path}[{i}]", what.split(", ", 1)[1], bound)
    lo, hi = value
    if lo > hi:
        raise SpecError(path, "[lo, hi] with lo <= hi", value)
    if not ints:
        lo, hi = float(lo), float(hi)
        if not math.isfinite(hi - lo):
            raise SpecError(path, "a range whose width is a finite number", value)
    return key, lo, hi


def _parse_sample(data: dict) -> _Sample | None:
    if "sample" not in data:
        return None
    sample = _table(data["sample"], "sample")
    _no_unknown(sample, "sample", SAMPLE_KEYS)
    if "n" not in sample:
        raise SpecError("sample.n", "required: the number of random points, an integer >= 1")
    n = sample["n"]
    if not is_int(n) or not 1 <= n <= MAX_CONFIGS:
        raise SpecError("sample.n", f"an integer from 1 to {MAX_CONFIGS}", n)
    if "seed" not in sample:
        raise SpecError("sample.seed", "required: the seed the points are drawn from, an integer >= 0")
    seed = _seed_int(sample["seed"], "sample.seed")
    parts: dict[str, list] = {"uniform": [], "log_uniform": [], "choice": []}
    for kind in parts:
        path = f"sample.{kind}"
        table = _table(sample.get(kind, {}), path, "a table of set.NAME = [lo, hi]" if kind != "choice"
                       else "a table of axis = [values]")
        for key, value in table.items():
            key_path = _join(path, key)
            _axis_key(key, key_path)
            if kind == "choice":
                parts[kind].append((key, _axis_values(key, value, key_path)))
            elif not key.startswith("set."):
                raise SpecError(key_path, f"a set.NAME key: {kind} draws numbers (use sample.choice for names)")
            else:
                parts[kind].append(_parse_range(key, value, key_path, ints=kind == "log_uniform"))
    if not any(parts.values()):
        raise SpecError("sample", "at least one axis in uniform, log_uniform or choice")
    return _Sample(n, seed, *(tuple(sorted(parts[kind], key=lambda p: p[0])) for kind in parts))


def _draw(sample: _Sample) -> list[list[tuple[str, object, str]]]:
    """The sample's n points, each a list of (key, value, path): deterministic in sample.seed."""
    rng = np.random.default_rng(sample.seed)
    columns: list[list[tuple[str, object, str]]] = []
    for key, lo, hi in sample.uniform:
        path = _join("sample.uniform", key)
        columns.append([(key, min(max(float(x), lo), hi), path) for x in rng.uniform(lo, hi, sample.n)])
    for key, lo, hi in sample.log_uniform:
        path = _join("sample.log_uniform", key)
        xs = np.exp(rng.uniform(math.log(lo), math.log(hi), sample.n))
        columns.append([(key, min(max(int(round(float(x))), lo), hi), path) for x in xs])
    for key, values in sample.choice:
        path = _join("sample.choice", key)
        columns.append([(key, values[i], f"{path}[{i}]") for i in rng.integers(len(values), size=sample.n).tolist()])
    return [[column[i] for column in columns] for i in range(sample.n)]


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
        return SpecError(where, err.allowed, _MISSING if err.got is None else err.got)
    if isinstance(err, ConfigError | StreamError | TraceError):
        return SpecError(where, str(err))
    return SpecError(where, f"cannot build this cell: {type(err).__name__}: {err}")


def parse_spec(data: dict, text: str = "") -> Spec:
    """Validate a spec (as tomllib parses it) in full and expand it; raises SpecError."""
    data = _table(data, "spec")
    _no_unknown(data, "", TOP_KEYS)
    name = _parse_name(data)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError("description", "a string", description)
    seeds = _parse_seeds(data)
    baseline = data.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise SpecError("baseline", "a policy name (a string)", baseline)
    base, base_origin = _parse_base(data)
    grid = _parse_grid(data)
    zips = _parse_zips(data)
    sample = _parse_sample(data)

    seen: dict[str, str] = {}
    axis_paths = [(key, _join("grid", key)) for key, _ in grid]
    axis_paths += [(key, _join(f"zip[{z}]", key)) for z, axes in enumerate(zips) for key, _ in axes]
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

    grid_points = itertools.product(*[[(key, v, f"{_join('grid', key)}[{i}]") for i, v in enumerate(values)]
                                      for key, values in grid])
    zip_points = [[[(key, values[i], f"{_join(f'zip[{z}]', key)}[{i}]") for key, values in axes]
                   for i in range(len(axes[0][1]))] for z, axes in enumerate(zips)]
    sample_points = _draw(sample) if sample else [[]]
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
