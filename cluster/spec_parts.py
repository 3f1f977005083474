"""The parts of a sweep spec (``cluster.spec``), each parsed and checked alone: the error type and its
key paths, single values (seeds, axis keys and values), then name, seeds, base, grid, zips and
sample, and the sample's draw. How the parts combine into cells, and the grammar of key paths, is
``cluster.spec``'s docstring.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from core.units import is_int
from workloads.config import DEFAULTS

MAX_CONFIGS = 100_000  # simulations (cells x seeds) one spec may ask for
MAX_SEED = (1 << 63) - 1  # seeds and sample.seed fit a signed 64-bit integer
MAX_NAME = 100

NAMED = ("machine", "policy", "workload", "engine")  # config keys whose values are names (strings)
BASE_KEYS = (*NAMED, "set")
SAMPLE_KEYS = ("n", "seed", "uniform", "log_uniform", "choice")
AXIS_HELP = "an axis key: machine, policy, workload, engine or set.NAME"

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


class _Missing:
    """No ``got`` value (None is a value a programmatic spec may hold); pickles as itself."""

    def __reduce__(self) -> str:
        return "MISSING"


MISSING = _Missing()
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

    def __init__(self, field: str, allowed: str, got: object = MISSING, source: str = "") -> None:
        self.field = field
        self.allowed = allowed
        self.got = None if got is MISSING else got
        self.source = source
        shown = "" if got is MISSING else f" (got {_show(got)})"
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


def join_path(path: str, key: object) -> str:
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


def a_table(value: object, path: str, what: str = "a table") -> dict:
    if not isinstance(value, dict):
        raise SpecError(path, what, value)
    for key in value:
        if not isinstance(key, str):
            raise SpecError(path, "a table with string keys", key)
    return value


def no_unknown(table: dict, path: str, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            where = f"{path} takes" if path else "a spec takes"
            raise SpecError(join_path(path, key), f"an unknown key; {where} " + ", ".join(allowed))


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


def parse_name(data: dict) -> str:
    if "name" not in data:
        raise SpecError("name", "required: the sweep's name, [A-Za-z0-9_.-]+")
    name = data["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."} or len(name) > MAX_NAME:
        raise SpecError("name", f"a directory name of 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ . - "
                        "(not only dots)", name)
    return name


def parse_seeds(data: dict) -> tuple[int, ...]:
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


def parse_base(data: dict) -> tuple[dict, dict[str, str]]:
    """The base config with DEFAULTS filled in, and the path each given key came from."""
    if "base" not in data:
        raise SpecError("base", "required: a table [base] with machine, policy, workload, engine and set")
    base = a_table(data["base"], "base")
    if "seed" in base:
        raise SpecError("base.seed", "not allowed: replicate seeds come from the top-level seeds key")
    no_unknown(base, "base", BASE_KEYS)
    out: dict = {key: DEFAULTS[key] for key in NAMED}
    origin: dict[str, str] = {}
    for key in NAMED:
        if key in base:
            out[key] = _axis_value(key, base[key], f"base.{key}")
            origin[key] = f"base.{key}"
    sets = a_table(base.get("set", {}), "base.set", "a table of name = value")
    out["set"] = {}
    for name, value in sets.items():
        path = join_path("base.set", name)
        if not name:
            raise SpecError(path, "a --set name")
        out["set"][name] = _axis_value("set." + name, value, path)
        origin["set." + name] = path
    return out, origin


def parse_grid(data: dict) -> list[tuple[str, tuple[object, ...]]]:
    grid = a_table(data.get("grid", {}), "grid", "a table of axis = [values]")
    return [(_axis_key(key, join_path("grid", key)), _axis_values(key, values, join_path("grid", key)))
            for key, values in grid.items()]


def parse_zips(data: dict) -> list[list[tuple[str, tuple[object, ...]]]]:
    zips = data.get("zip", [])
    if not isinstance(zips, list):
        raise SpecError("zip", "an array of tables, each written [[zip]]", zips)
    out = []
    for z, table in enumerate(zips):
        path = f"zip[{z}]"
        table = a_table(table, path, "a table of axis = [values], written [[zip]]")
        if not table:
            raise SpecError(path, "at least one axis (an empty zip leaves nothing to run)")
        axes = [(_axis_key(key, join_path(path, key)), _axis_values(key, values, join_path(path, key)))
                for key, values in table.items()]
        first_key, first = axes[0]
        for key, values in axes[1:]:
            if len(values) != len(first):
                raise SpecError(join_path(path, key), f"as many values as {join_path(path, first_key)} ({len(first)}): "
                                "zipped axes advance together", len(values))
        out.append(axes)
    return out


@dataclass(frozen=True)
class Sample:
    n: int
    seed: int
    uniform: tuple[tuple[str, float, float], ...]
    log_uniform: tuple[tuple[str, int, int], ...]
    choice: tuple[tuple[str, tuple[object, ...]], ...]

    def keys(self) -> list[tuple[str, str]]:
        return ([(k, join_path("sample.uniform", k)) for k, _, _ in self.uniform]
                + [(k, join_path("sample.log_uniform", k)) for k, _, _ in self.log_uniform]
                + [(k, join_path("sample.choice", k)) for k, _ in self.choice])

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


def parse_sample(data: dict) -> Sample | None:
    if "sample" not in data:
        return None
    sample = a_table(data["sample"], "sample")
    no_unknown(sample, "sample", SAMPLE_KEYS)
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
        table = a_table(sample.get(kind, {}), path, "a table of set.NAME = [lo, hi]" if kind != "choice"
                       else "a table of axis = [values]")
        for key, value in table.items():
            key_path = join_path(path, key)
            _axis_key(key, key_path)
            if kind == "choice":
                parts[kind].append((key, _axis_values(key, value, key_path)))
            elif not key.startswith("set."):
                raise SpecError(key_path, f"a set.NAME key: {kind} draws numbers (use sample.choice for names)")
            else:
                parts[kind].append(_parse_range(key, value, key_path, ints=kind == "log_uniform"))
    if not any(parts.values()):
        raise SpecError("sample", "at least one axis in uniform, log_uniform or choice")
    return Sample(n, seed, *(tuple(sorted(parts[kind], key=lambda p: p[0])) for kind in parts))


def draw(sample: Sample) -> list[list[tuple[str, object, str]]]:
    """The sample's n points, each a list of (key, value, path): deterministic in sample.seed."""
    rng = np.random.default_rng(sample.seed)
    columns: list[list[tuple[str, object, str]]] = []
    for key, lo, hi in sample.uniform:
        path = join_path("sample.uniform", key)
        columns.append([(key, min(max(float(x), lo), hi), path) for x in rng.uniform(lo, hi, sample.n)])
    for key, lo, hi in sample.log_uniform:
        path = join_path("sample.log_uniform", key)
        xs = np.exp(rng.uniform(math.log(lo), math.log(hi), sample.n))
        columns.append([(key, min(max(int(round(float(x))), lo), hi), path) for x in xs])
    for key, values in sample.choice:
        path = join_path("sample.choice", key)
        columns.append([(key, values[i], f"{path}[{i}]") for i in rng.integers(len(values), size=sample.n).tolist()])
    return [[column[i] for column in columns] for i in range(sample.n)]
