"""Sweep specs (cluster.spec): expansion, sampling, digests, and refusal of bad specs by key path."""

from __future__ import annotations

import copy
import datetime
import os
import pickle
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.spec import MAX_CONFIGS, Spec, SpecError, load_spec, parse_spec
from core.errors import ConfigError
from workloads.config import CONFIG_KEYS, run_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SPEC = """
name = "p5-flushes-vs-io-size"   # a comment
description = "flushes as I/O grows"
seeds = 3
baseline = "stock"

[base]
machine = "x86-pae-64g"
workload = "io"
[base.set]
events = 2000
memory = "2GiB"

[grid]
policy = ["stock", "unmapped"]
"set.io_size" = ["4KiB", "64KiB", "1MiB"]

[[zip]]
"set.processes" = [8, 16]
"set.anon_pages" = [32, 16]

[sample]
n = 2
seed = 7
uniform = { "set.miss_rate" = [0.1, 0.9] }
log_uniform = { "set.kmap_hold" = [2, 64] }
"""

# The same sweep: sections and keys reordered, other whitespace and comments, dotted keys instead of
# inline tables, seeds as a list, another name and description (labels, not part of the digest).
SPEC_REORDERED = """
[sample]
log_uniform."set.kmap_hold" = [ 2, 64 ]
seed = 7
uniform."set.miss_rate" = [ 0.1, 0.9 ]
n = 2

[[zip]]
"set.anon_pages" = [32, 16]
"set.processes" = [8, 16]

[grid]
policy = [ "stock",
           "unmapped" ]   # outermost
"set.io_size" = ["4KiB", "64KiB", "1MiB"]

[base.set]
memory = "2GiB"
events = 2000

[base]
workload = "io"
machine = "x86-pae-64g"
engine = "fast"
"""
TOP_REORDERED = 'baseline = "stock"\nseeds = [0, 1, 2]\nname = "renamed"\n'

# A small valid spec as data, for mutations: every cell resolves in well under a millisecond.
VALID = {
    "name": "fuzz",
    "seeds": [0, 1],
    "baseline": "stock",
    "description": "d",
    "base": {"machine": "pa8800", "workload": "forkexec", "engine": "fast", "set": {"events": 1000}},
    "grid": {"policy": ["stock", "unmapped"]},
    "zip": [{"set.miss_rate": [0.1, 0.2], "set.kmap_hold": [4, 8]}],
    "sample": {"n": 2, "seed": 1, "uniform": {"set.touch_rate": [0.1, 0.5]},
               "log_uniform": {"set.events": [100, 1000]}, "choice": {"set.store_fraction": [0.5, 0.25]}},
}

_STEP = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
_PATH = rf"{_STEP}(?:\.{_STEP}|\[\d+\])*"
FIELD = re.compile(rf"{_PATH}(?: with {_PATH}(?:, {_PATH})*)?")


def spec(text: str) -> Spec:
    return parse_spec(tomllib.loads(text), text)


def refused(data: object) -> SpecError:
    """The SpecError ``data`` is refused with, checked to be one line that starts with a key path."""
    with pytest.raises(SpecError) as info:
        parse_spec(data)  # type: ignore[arg-type]
    return well_formed(info.value)


def well_formed(err: SpecError) -> SpecError:
    assert isinstance(err, ConfigError)  # the CLI's one-line exit-2 path
    message = str(err)
    assert "\n" not in message and "\r" not in message, message
    assert FIELD.fullmatch(err.field), err.field
    assert message.startswith(f"{err.field}: "), message
    return err


def with_(data: dict, **changes: object) -> dict:
    out = copy.deepcopy(data)
    out.update(changes)
    return out


# -- expansion -----------------------------------------------------------------------------------


def test_expansion_order_and_counts() -> None:
    s = spec(SPEC)
    cells = s.cells()
    assert len(cells) == 2 * 3 * 2 * 2  # grid x zip x sample
    assert s.seeds == (0, 1, 2)
    assert [c["policy"] for c in cells] == ["stock"] * 12 + ["unmapped"] * 12  # first grid key outermost
    assert [c["set"]["io_size"] for c in cells[:12]] == ["4KiB"] * 4 + ["64KiB"] * 4 + ["1MiB"] * 4
    assert [c["set"]["processes"] for c in cells[:4]] == [8, 8, 16, 16]  # then the zip
    assert [c["set"]["anon_pages"] for c in cells[:4]] == [32, 32, 16, 16]  # advanced together
    hold = [c["set"]["kmap_hold"] for c in cells[:4]]
    assert hold[0] == hold[2] != hold[1] == hold[3]  # then the sample points, innermost
    for cell in cells:
        assert set(cell) == set(CONFIG_KEYS) - {"seed"}
        assert cell["machine"] == "x86-pae-64g" and cell["engine"] == "fast"  # base and DEFAULTS filled in
        assert cell["set"]["events"] == 2000 and cell["set"]["memory"] == "2GiB"
    configs = s.configs()
    assert len(configs) == 24 * 3
    assert [c["seed"] for c in configs[:6]] == [0, 1, 2, 0, 1, 2]  # cell-major
    assert [{k: v for k, v in c.items() if k != "seed"} for c in configs[::3]] == cells
    assert s.axis_keys == ("policy", "set.io_size", "set.processes", "set.anon_pages", "set.miss_rate",
                           "set.kmap_hold")
    assert s.name == "p5-flushes-vs-io-size" and s.baseline == "stock" and s.text.startswith("\nname")
    record = run_config(configs[-1])
    assert record["policy"] == "unmapped" and record["seed"] == 2 and record["events"] == 2000


def test_cells_and_configs_are_fresh_copies() -> None:
    s = spec(SPEC)
    s.cells()[0]["set"]["events"] = 1
    s.configs()[0]["set"]["events"] = 1
    assert s.cells()[0]["set"]["events"] == 2000


def test_no_axes_is_one_cell_and_duplicates_keep_the_first() -> None:
    s = parse_spec({"name": "one", "seeds": 2, "base": {}})
    assert s.cells() == [{"machine": "x86-pae-64g", "policy": "stock", "workload": "mixed", "engine": "fast",
                          "set": {}}]
    assert [c["seed"] for c in s.configs()] == [0, 1]
    s = parse_spec({"name": "dup", "seeds": [5], "base": {"workload": "forkexec"},
                    "grid": {"policy": ["unmapped", "stock", "unmapped"]},
                    "sample": {"n": 6, "seed": 0, "choice": {"set.events": [100]}}})
    assert [c["policy"] for c in s.cells()] == ["unmapped", "stock"]
    assert [c["seed"] for c in s.configs()] == [5, 5]


def test_sample_points_are_determined_by_their_seed() -> None:
    def points(seed: int) -> list[tuple]:
        s = parse_spec({"name": "s", "seeds": 1, "base": {"workload": "forkexec"},
                        "sample": {"n": 20, "seed": seed, "uniform": {"set.miss_rate": [0.25, 0.75]},
                                   "log_uniform": {"set.events": [10, 10000]},
                                   "choice": {"policy": ["stock", "unmapped"]}}})
        return [(c["set"]["miss_rate"], c["set"]["events"], c["policy"]) for c in s.cells()]

    first = points(7)
    assert points(7) == first
    assert points(8) != first
    assert len(first) == 20
    assert all(0.25 <= m <= 0.75 and isinstance(m, float) for m, _, _ in first)
    assert all(10 <= e <= 10000 and isinstance(e, int) for _, e, _ in first)
    assert {p for _, _, p in first} == {"stock", "unmapped"}
    assert len({e for _, e, _ in first}) > 10  # spread, not one value


# -- digests -------------------------------------------------------------------------------------


def test_digest_ignores_formatting_order_and_labels() -> None:
    a = spec(SPEC)
    b = spec(TOP_REORDERED + SPEC_REORDERED)
    assert a.name != b.name and a.text != b.text
    assert b.cells() == a.cells()
    assert b.canonical() == a.canonical()
    assert b.digest() == a.digest()
    assert re.fullmatch(r"[0-9a-f]{64}", a.digest())


@pytest.mark.parametrize("old, new", [
    ('events = 2000', 'events = 2001'),  # a base value
    ('"64KiB"', '"32KiB"'),  # an axis value
    ('policy = ["stock", "unmapped"]', 'policy = ["unmapped", "stock"]'),  # the order of the runs
    ('seed = 7', 'seed = 8'),  # other sample points
    ('seeds = 3', 'seeds = 4'),
    ('baseline = "stock"', 'baseline = "unmapped"'),
])
def test_digest_changes_with_what_runs(old: str, new: str) -> None:
    assert old in SPEC
    assert spec(SPEC.replace(old, new, 1)).digest() != spec(SPEC).digest()


# -- baseline ------------------------------------------------------------------------------------


def test_baseline_is_a_policy_the_spec_runs() -> None:
    assert parse_spec(with_(VALID, baseline="unmapped")).baseline == "unmapped"
    assert parse_spec({k: v for k, v in VALID.items() if k != "baseline"}).baseline is None
    err = refused(with_(VALID, baseline="4g4g"))
    assert err.field == "baseline" and "one of the policies the spec runs: stock, unmapped" in str(err)
    assert refused(with_(VALID, baseline=["stock"])).field == "baseline"
    zipped = with_(VALID, grid={}, zip=[{"policy": ["unmapped", "stock"], "set.batch": [1000, 2000]}])
    assert parse_spec(with_(zipped, baseline="stock")).baseline == "stock"


# -- refusals, each with its key path ------------------------------------------------------------


def _mutate(**paths: object):
    """A copy of VALID with dotted paths (``grid.policy``) replaced; value None deletes the key."""
    out = copy.deepcopy(VALID)
    for dotted, value in paths.items():
        *parents, last = dotted.split("__")
        node = out
        for step in parents:
            node = node[int(step)] if isinstance(node, list) else node[step]
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


ERRORS = [
    # types and shapes
    (_mutate(name=None), "name", "required"),
    (_mutate(name="a/b"), "name", "directory name"),
    (_mutate(name=".."), "name", "not only dots"),
    (_mutate(name=7), "name", "got 7"),
    (_mutate(description=["x"]), "description", "a string"),
    (_mutate(seeds=None), "seeds", "required"),
    (_mutate(seeds=0), "seeds", "a count from 1"),
    (_mutate(seeds=True), "seeds", "an integer n"),
    (_mutate(seeds=[]), "seeds", "non-empty"),
    (_mutate(seeds=[0, -1]), "seeds[1]", "from 0 to 2\\*\\*63-1"),
    (_mutate(seeds=[0, 1.5]), "seeds[1]", "got 1.5"),
    (_mutate(seeds=[3, 4, 3]), "seeds[2]", "not listed before \\(seeds\\[0\\]\\)"),
    (_mutate(seeds=MAX_CONFIGS + 1), "seeds", "a count from 1 to 100000"),
    (_mutate(base=None), "base", "required"),
    (_mutate(base="pa8800"), "base", "a table"),
    (_mutate(base__seed=3), "base.seed", "seeds come from the top-level seeds key"),
    (_mutate(base__processes=3), "base.processes", "an unknown key; base takes machine, policy"),
    (_mutate(base__machine=1), "base.machine", "a machine name \\(a string\\)"),
    (_mutate(base__set=[1]), "base.set", "a table of name = value"),
    (_mutate(base__set__events=[1]), "base.set.events", "a string, number or boolean"),
    (_mutate(base__set__events=float("nan")), "base.set.events", "a finite number"),
    (_mutate(base__set__events=datetime.date(2004, 7, 21)), "base.set.events", "a string, number or boolean"),
    (_mutate(grid=[["policy"]]), "grid", "a table of axis"),
    (_mutate(grid__policy="stock"), "grid.policy", "a list of values"),
    (_mutate(grid__policy=[]), "grid.policy", "non-empty"),
    (_mutate(grid__policy=["stock", 4]), "grid.policy[1]", "a policy name"),
    (_mutate(grid__seed=[1, 2]), "grid.seed", "not an axis"),
    (_mutate(grid__cpus=[1, 2]), "grid.cpus", "an axis key: machine, policy, workload, engine or set.NAME"),
    (_mutate(**{"grid__set.": [1]}), 'grid."set."', "an axis key"),
    (_mutate(zip={"policy": ["stock"]}), "zip", "an array of tables"),
    (_mutate(zip=[{}]), "zip[0]", "at least one axis"),
    (_mutate(zip=[{"set.events": [1, 2]}, 5]), "zip[1]", "written \\[\\[zip\\]\\]"),
    (_mutate(**{"zip__0__set.kmap_hold": [4]}), 'zip[0]."set.kmap_hold"',
     'as many values as zip\\[0\\]."set.miss_rate" \\(2\\).*got 1'),
    (_mutate(**{"zip__0__set.miss_rate": []}), 'zip[0]."set.miss_rate"', "non-empty"),
    (_mutate(sample=[]), "sample", "a table"),
    (_mutate(sample__n=None), "sample.n", "required"),
    (_mutate(sample__n=0), "sample.n", "an integer from 1"),
    (_mutate(sample__n=10**30), "sample.n", "an integer from 1 to 100000"),
    (_mutate(sample__seed=None), "sample.seed", "required"),
    (_mutate(sample__seed="7"), "sample.seed", "an integer from 0"),
    (_mutate(sample__normal={}), "sample.normal", "an unknown key; sample takes n, seed, uniform"),
    (_mutate(sample__uniform={}, sample__log_uniform={}, sample__choice={}), "sample", "at least one axis"),
    (_mutate(sample__uniform=[0, 1]), "sample.uniform", "a table of set.NAME"),
    (_mutate(**{"sample__uniform__set.touch_rate": [0.5, 0.1]}), 'sample.uniform."set.touch_rate"', "lo <= hi"),
    (_mutate(**{"sample__uniform__set.touch_rate": [0.5]}), 'sample.uniform."set.touch_rate"', "\\[lo, hi\\]"),
    (_mutate(**{"sample__uniform__set.touch_rate": [0, "1"]}), 'sample.uniform."set.touch_rate"[1]',
     "finite numbers"),
    (_mutate(**{"sample__uniform__set.touch_rate": [-1e308, 1e308]}), 'sample.uniform."set.touch_rate"',
     "width is a finite number"),
    (_mutate(**{"sample__log_uniform__set.events": [0, 10]}), 'sample.log_uniform."set.events"[0]',
     "integers from 1"),
    (_mutate(**{"sample__log_uniform__set.events": [1.5, 10]}), 'sample.log_uniform."set.events"[0]',
     "integers from 1"),
    (_mutate(sample__uniform__policy=[0, 1]), "sample.uniform.policy", "a set.NAME key"),
    (_mutate(**{"sample__choice__set.store_fraction": []}), 'sample.choice."set.store_fraction"', "non-empty"),
    (_mutate(unknown=1), "unknown", "an unknown key; a spec takes name, description"),
    (_mutate(**{"zip__0__policy": ["stock", "unmapped"]}), "zip[0].policy",
     "an axis key used once: policy is already an axis at grid.policy"),
    (_mutate(**{"sample__choice__set.miss_rate": [0.5]}), 'sample.choice."set.miss_rate"',
     'already an axis at zip\\[0\\]."set.miss_rate"'),
    (_mutate(grid__machine=["pa8800"] * 500, grid__engine=["fast"] * 100), "spec",
     "at most 100000 simulations \\(cells x seeds = 2 x 500 x 100 x 2 x 2 x 2\\)"),
    # unknown names and values, found by resolving every cell
    (_mutate(grid__policy=["stock", "stokc"]), "grid.policy[1]", "one of 4g4g, stock, unmapped \\(got 'stokc'\\)"),
    (_mutate(base__machine="pa9000"), "base.machine", "one of pa8700, pa8800, x86-pae-64g"),
    (_mutate(base__workload="fork"), "base.workload", "one of .*trace:PATH"),
    ({"name": "t", "seeds": 1, "base": {"workload": "trace:/nonexistent/t.zst"}}, "base.workload", "cannot read"),
    (_mutate(base__engine="slow"), "base.engine", "one of fast, reference"),
    (_mutate(grid__engine=["fast", "slow"]), "grid.engine[1]", "one of fast, reference"),
    (_mutate(base__set__nosuch=1), "base.set.nosuch", "a setting of the machine, policy or workload"),
    (_mutate(**{"grid__set.nosuch": [1]}), 'grid."set.nosuch"[0]', "a setting of the machine"),
    (_mutate(**{"zip__0__set.kmap_hold": [4, 5000]}), 'zip[0]."set.kmap_hold"[1]', "an integer from 1 to 1024"),
    (_mutate(**{"sample__uniform__set.touch_rate": [0.5, 3]}), 'sample.uniform."set.touch_rate"',
     "a fraction between 0 and 1"),
    (_mutate(**{"sample__choice__set.store_fraction": ["half"]}), 'sample.choice."set.store_fraction"[0]',
     "a number \\(got 'half'\\)"),
    (_mutate(sample__choice__workload=["forkexec", "nope"]), "sample.choice.workload[1]", "one of"),
    (_mutate(**{"grid__set.memory": ["1GiB", "3GiB", "1KiB"]}), 'grid."set.memory"[2]',
     "a positive multiple of page_size"),
    # values that fail only together: both axes named
    (_mutate(grid__policy=["stock", "4g4g"], base__machine="x86-pae-64g",
             grid__machine=["x86-pae-64g", "pa8800"]),
     "grid.policy[1] with grid.machine[1]", "4g4g needs an x86 machine, not pa8800"),
    (_mutate(grid__policy=["stock", "4g4g"], zip=[{"machine": ["pa8800", "x86-pae-64g"], "set.batch": [1, 2]}]),
     "grid.policy[1] with zip[0].machine[0]", "4g4g needs an x86 machine"),
    (_mutate(**{"grid__set.unmapped_kmap_share": [0.25]}), 'grid."set.unmapped_kmap_share"[0] with grid.policy[0]',
     "a setting of policy unmapped"),
    (_mutate(base__workload="io", base__machine="x86-pae-64g", base__set={"events": 10, "pagecache": "8MiB"},
             **{"zip__0__set.kmap_hold": [4, 1000]}),
     'base.set.pagecache with zip[0]."set.kmap_hold"[1]', "more than \\(kmap_hold \\+ 1\\) x io_size"),
    (_mutate(base__machine="x86-pae-64g", base__set={"memory": "64GiB"},
             **{"zip__0__set.struct_page": [32, 64]}), 'base.set.memory with zip[0]."set.struct_page"[1]',
     "mem_map .* must fit in lowmem .*: this machine cannot boot"),
]


@pytest.mark.parametrize("data, field, message", ERRORS, ids=[f"{i}-{e[1]}" for i, e in enumerate(ERRORS)])
def test_each_error_names_its_key_path(data: dict, field: str, message: str) -> None:
    err = refused(data)
    assert err.field == field, str(err)
    assert re.search(message, str(err)), str(err)


def test_a_spec_must_be_a_table_with_string_keys() -> None:
    assert refused([1, 2]).field == "spec"
    assert refused({1: "x"}).field == "spec"
    assert refused(with_(VALID, base={"set": {2: 3}})).field == "base.set"


def test_the_valid_spec_is_valid() -> None:
    s = parse_spec(VALID)
    assert len(s.cells()) == 2 * 2 * 2 and len(s.configs()) == 16


# -- fuzz: nothing but SpecError, always one line with a key path --------------------------------

GARBAGE: list[object] = [None, True, 0, -1, 1.5, float("inf"), 10**40, -(10**40), "", "x", "stock", "trace:",
                         [], [1, "a"], [[[]]], {}, {"a": {"b": [{}]}}, {"policy": []}, {"n": 1},
                         datetime.datetime(2004, 7, 21, 12, 0), datetime.time(1, 2)]


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _replace(data: dict, path: tuple, value: object, delete: bool = False) -> dict:
    out = copy.deepcopy(data)
    node = out
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _check(data: object) -> None:
    try:
        result = parse_spec(data)  # type: ignore[arg-type]
    except SpecError as err:
        well_formed(err)
    else:
        assert isinstance(result, Spec)
        assert len(result.configs()) <= MAX_CONFIGS


def test_fuzz_every_path_with_garbage() -> None:
    paths = _paths(VALID)
    tables = [()] + [p for p in paths if isinstance(_get(VALID, p), dict)]
    cases = [_replace(VALID, p, g) for p in paths for g in GARBAGE]
    cases += [_replace(VALID, p, None, delete=True) for p in paths if not isinstance(p[-1], int)]
    cases += [_replace(VALID, (*t, "bogus"), 1) for t in tables]
    cases += [_replace(VALID, (*t, "set.bogus"), [1]) for t in tables]
    for data in cases:
        _check(data)
    for table in tables:  # an unknown key is refused at every level, by its own path
        err = refused(_replace(VALID, (*table, "bogus"), 1))
        path = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in (*table, "bogus")).lstrip(".")
        assert err.field == path, str(err)


def _get(data: object, path: tuple) -> object:
    for step in path:
        data = data[step]  # type: ignore[index]
    return data


KEYS = st.sampled_from(["name", "seeds", "base", "grid", "zip", "sample", "baseline", "description", "set",
                        "machine", "policy", "workload", "engine", "seed", "n", "uniform", "log_uniform",
                        "choice", "set.events", "set.io_size", "set.miss_rate", "set.kmap_hold", "set.memory",
                        "set.cpus", "set.nosuch"]) | st.text(max_size=6)
SCALARS = (st.booleans() | st.integers(-(2**70), 2**70) | st.integers(0, 70) | st.floats()
           | st.sampled_from(["stock", "unmapped", "4g4g", "pa8800", "x86-pae-64g", "forkexec", "fast", "4KiB"])
           | st.text(max_size=8) | st.dates() | st.datetimes())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_random_structures(data: st.DataObject) -> None:
    if data.draw(st.booleans()):  # a random tree, sometimes shaped like a spec
        _check(data.draw(st.dictionaries(KEYS, VALUES, max_size=6)))
    else:  # the valid spec with one subtree replaced
        paths = _paths(VALID)
        path = data.draw(st.sampled_from(paths))
        _check(_replace(VALID, path, data.draw(VALUES)))


# -- files ---------------------------------------------------------------------------------------


def test_load_spec_reads_a_file(tmp_path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(SPEC)
    s = load_spec(str(path))
    assert s.text == SPEC and s.digest() == spec(SPEC).digest()


def test_load_spec_syntax_error_names_line_and_file(tmp_path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('name = "x"\nseeds = 1\n[grid]\npolicy = ["stock",\n  "unmapped" "4g4g"]\n')
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    err = info.value
    assert err.field == "spec"
    assert str(err).startswith(f"{path}: spec: not valid TOML: ") and "line 5" in str(err), str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe name", "not UTF-8"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "not valid TOML"),
    (b'name = "x"\nseeds = 1\n[base]\n[zip]\npolicy = ["stock"]\n', "zip: an array of tables"),
    (b'name = "x"\nseeds = 1\n[base]\n[grid]\npolicy = []\n', "grid.policy: a non-empty list"),
    (b'name = "x"\nseeds = 1\n[base]\n[grid]\npolicy = ["stock", "nope"]\n', r"grid.policy\[1\]: one of"),
])
def test_load_spec_prefixes_the_file(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    assert str(info.value).startswith(f"{path}: ") and re.search(message, str(info.value)), str(info.value)
    assert "\n" not in str(info.value)


def test_load_spec_missing_file_and_no_side_effects(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(str(tmp_path / "missing.toml"))
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(str(tmp_path))
    store = tmp_path / "store"  # a bad spec next to an existing store leaves it as it was
    store.mkdir()
    (store / "results.msgpack").write_bytes(b"\x01\x02")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()}
    bad = tmp_path / "store.toml"
    bad.write_text('name = "store"\nseeds = 1\n[base]\npolicy = "nope"\n')
    with pytest.raises(SpecError, match="base.policy"):
        load_spec(str(bad))
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in store.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["store", "store.toml"]


def test_fuzz_spec_text_edits(tmp_path) -> None:
    """Lines dropped, doubled or cut short: a spec or a one-line SpecError naming the file, nothing else."""
    lines = SPEC.splitlines(keepends=True)
    texts = []
    for i, line in enumerate(lines):
        texts += [lines[:i] + lines[i + 1:], lines[:i] + [line, line] + lines[i + 1:],
                  lines[:i] + [line[: len(line) // 2]] + lines[i + 1:]]
    path = tmp_path / "edited.toml"
    for text in texts:
        path.write_text("".join(text))
        try:
            load_spec(str(path))
        except SpecError as err:
            assert str(err).startswith(f"{path}: ") and "\n" not in str(err), str(err)
            assert FIELD.fullmatch(err.field), err.field


def test_spec_error_pickles() -> None:
    err = refused(_mutate(grid__policy=["stock", "stokc"]))
    back = pickle.loads(pickle.dumps(err.with_source("s.toml")))
    assert str(back) == f"s.toml: {err}" and back.field == err.field and back.got == "stokc"
    plain = pickle.loads(pickle.dumps(refused(_mutate(sample__n=None))))
    assert str(plain) == "sample.n: required: the number of random points, an integer >= 1"
