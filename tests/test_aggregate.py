"""Aggregation: exact statistics on synthetic entries, t quantiles, ratios, failures, ordering and
the four output formats."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re

import pytest

from cluster.aggregate import HEADLINE_KEYS, T_975, aggregate, format_results, summarise, t_975
from cluster.store import Store
from core.errors import ConfigError


def entry(policy: str = "stock", seed: int = 0, machine: str = "x86-pae-64g", status: str = "ok",
          error: str | None = None, **record: object) -> dict[str, object]:
    config = {"machine": machine, "policy": policy, "workload": "mixed", "seed": seed, "engine": "fast",
              "set": {"events": 1000}}
    rec = {"machine": machine, "policy": policy, "workload": "mixed", "seed": seed, "engine": "fast",
           "checked": True, **record}
    return {"config": config, "status": status, "record": rec if status == "ok" else None, "error": error,
            "attempts": 1, "seconds": 0.1}


def sample() -> list[dict[str, object]]:
    """stock: events 2, 4, 6 (mean 4, std 2); 4g4g: events 3, 6, 9 and zero alloc_failures at both;
    4g4g also has a failed seed; unmapped has one seed and no stock counterpart on sparc."""
    out = [entry("stock", s, events=e, alloc_failures=0, flushes_per_io=0.5 * s) for s, e in enumerate((2, 4, 6))]
    out += [entry("4g4g", s, events=e, alloc_failures=s, flushes_per_io=0.0) for s, e in enumerate((3, 6, 9))]
    out.append(entry("4g4g", 3, status="failed", error="lowmem exhausted"))
    out.append(entry("4g4g", 4, status="failed", error="second error"))
    out.append(entry("unmapped", 0, machine="sparc", events=10, alloc_failures=1))
    return out


def cell(cells, policy: str, machine: str = "x86-pae-64g"):
    (found,) = [c for c in cells if c.policy == policy and c.config["machine"] == machine]
    return found


# -- t quantiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042),
                                          (100, 1.984), (math.inf, 1.960)])
def test_t_quantiles_match_the_tables(df, expected):
    assert round(t_975(df), 3) == expected


def test_t_quantiles_beyond_the_table_are_accurate_and_decreasing():
    assert t_975(31) == pytest.approx(2.039513, abs=1e-6)
    assert t_975(60) == pytest.approx(2.000298, abs=1e-6)
    assert t_975(1000) == pytest.approx(1.962339, abs=1e-6)
    values = [t_975(df) for df in range(1, 200)] + [t_975(math.inf)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert len(T_975) == 30 and abs(t_975(30.0) - 2.042272) < 1e-9
    with pytest.raises(ValueError):
        t_975(0)


# -- statistics ----------------------------------------------------------------------------------


def test_exact_statistics():
    s = summarise([2, 4, 6])
    assert (s.n, s.mean, s.std, s.min, s.max) == (3, 4.0, 2.0, 2, 6)
    assert s.ci95 == pytest.approx(4.302653 * 2 / math.sqrt(3)) and s.ci95 == pytest.approx(4.968275, abs=1e-6)
    s = summarise([1.0, 2.0, 3.0, 4.0])  # std sqrt(5/3), t(3) = 3.182446
    assert s.mean == 2.5 and s.std == pytest.approx(1.290994, abs=1e-6)
    assert s.ci95 == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2) and s.ci95 == pytest.approx(2.054260, abs=1e-6)


def test_n1_has_zero_std_and_no_interval():
    s = summarise([7])
    assert (s.n, s.mean, s.std, s.ci95, s.min, s.max) == (1, 7.0, 0.0, None, 7, 7)


def test_cells_group_by_everything_but_the_seed():
    cells = aggregate(sample())
    assert [(c.config["machine"], c.policy, c.n, c.failures) for c in cells] == [
        ("sparc", "unmapped", 1, 0), ("x86-pae-64g", "4g4g", 3, 2), ("x86-pae-64g", "stock", 3, 0)]
    stock = cell(cells, "stock")
    assert "seed" not in stock.config and stock.seeds == [0, 1, 2]
    assert list(stock.stats) == ["events", "alloc_failures", "flushes_per_io"]  # identity keys and bools skipped
    assert stock.stats["events"].mean == 4.0 and stock.stats["events"].std == 2.0
    assert stock.stats["flushes_per_io"].mean == 0.5
    assert cell(cells, "unmapped", "sparc").stats["events"].ci95 is None
    assert all(c.ratios is None for c in cells)


def test_failures_are_counted_with_the_first_error():
    four = cell(aggregate(sample()), "4g4g")
    assert four.failures == 2 and four.first_error == "lowmem exhausted" and four.n == 3
    four = cell(aggregate(sample()[::-1]), "4g4g")
    assert four.first_error == "lowmem exhausted"  # the lowest failed seed's, whatever the order


def test_a_cell_with_only_failures():
    (only,) = aggregate([entry(seed=1, status="failed", error="x"), entry(seed=2, status="failed", error="y")])
    assert only.n == 0 and only.failures == 2 and only.first_error == "x" and only.stats == {}
    for fmt in ("table", "csv", "json", "markdown"):
        assert format_results([only], fmt)


def test_missing_config_keys_take_the_defaults():
    a = entry(seed=0, events=1)
    b = entry(seed=1, events=3)
    del b["config"]["engine"]  # "fast" is the default: the same cell
    (only,) = aggregate([a, b])
    assert only.n == 2 and only.stats["events"].mean == 2.0


# -- ratios --------------------------------------------------------------------------------------


def test_ratios_against_the_baseline():
    cells = aggregate(sample(), baseline="stock")
    four = cell(cells, "4g4g")
    assert four.ratios["events"] == pytest.approx(6 / 4)
    assert four.ratios["alloc_failures"] is None  # the baseline mean is 0
    assert four.ratios["flushes_per_io"] == 0.0  # 0 against a non-zero baseline is a ratio
    assert cell(cells, "stock").ratios is None  # the baseline itself
    assert cell(cells, "unmapped", "sparc").ratios is None  # no stock cell on that machine
    assert [c.policy for c in cells] == ["unmapped", "stock", "4g4g"]  # baseline first within its group


def test_ratio_keys_missing_from_the_baseline():
    entries = [entry("stock", 0, events=2), entry("4g4g", 0, events=4, kmap_waits=3)]
    four = cell(aggregate(entries, baseline="stock"), "4g4g")
    assert four.ratios == {"events": 2.0, "kmap_waits": None}


# -- ordering ------------------------------------------------------------------------------------


def test_order_does_not_depend_on_entry_order():
    entries = sample()
    expected = format_results(aggregate(entries, "stock"), "json")
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        assert format_results(aggregate(shuffled, "stock"), "json") == expected
        assert format_results(aggregate(shuffled, "stock"), "table") == format_results(aggregate(entries, "stock"),
                                                                                         "table")


def test_aggregates_what_the_store_reads(tmp_path):
    from workloads.config import config_key

    with Store.open(str(tmp_path), "spec", "d") as store:
        store.append(sample())
        store.append([{**entry("4g4g", 3, events=12), "attempts": 2}])  # the failed seed 3, retried
    four = cell(aggregate(Store.read(str(tmp_path)).entries(), "stock"), "4g4g")
    assert four.n == 4 and four.failures == 1 and four.first_error == "second error"
    assert four.stats["events"].mean == 7.5
    assert config_key(entry("4g4g", 3)["config"]) in Store.read(str(tmp_path)).done()


# -- formats -------------------------------------------------------------------------------------


def test_table():
    text = format_results(aggregate(sample(), "stock"), "table")
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    head, columns, *rows = blocks[2].splitlines()
    assert head.startswith("x86-pae-64g / 4g4g / mixed  engine=fast events=1000  n=3 (seeds 0, 1, 2), 2 failed "
                           "(first: lowmem exhausted)")
    assert columns.split() == ["key", "mean", "±", "95%", "CI", "n", "min", "max", "vs", "stock"]
    assert re.match(r"^  events +6 ± 7\.452 +3 +3 +9 +1\.500$", rows[0]), rows[0]
    assert re.match(r"^  alloc_failures +1 ± 2\.484 +3 +0 +2 +-$", rows[1])
    assert [r.split()[0] for r in rows] == ["events", "alloc_failures", "flushes_per_io"]
    assert "vs stock" not in format_results(aggregate(sample()), "table")
    assert format_results([], "table") == "no results"


def test_table_shows_sizes_like_the_cli():
    (only,) = aggregate([entry(seed=s, lowmem_free_min_bytes=1 << 20) for s in range(2)])
    assert "lowmem_free_min_bytes  1048576 (1 MiB) ± 0" in format_results([only], "table")


def test_csv_parses():
    text = format_results(aggregate(sample(), "stock"), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["machine", "policy", "workload", "engine", "set", "key", "n", "mean", "std", "ci95",
                             "min", "max", "ratio", "failures", "first_error"]
    assert len(rows) == 2 + 3 + 3  # sparc has no flushes_per_io
    row = next(r for r in rows if r["policy"] == "4g4g" and r["key"] == "events")
    assert (row["n"], row["mean"], row["std"], row["min"], row["max"], row["ratio"]) == ("3", "6.0", "3.0", "3",
                                                                                          "9", "1.5")
    assert float(row["ci95"]) == pytest.approx(4.302653 * 3 / math.sqrt(3))
    assert json.loads(row["set"]) == {"events": 1000}
    assert row["failures"] == "2" and row["first_error"] == "lowmem exhausted"
    sparc = next(r for r in rows if r["machine"] == "sparc")
    assert sparc["ci95"] == "" and sparc["ratio"] == ""


def test_json_has_everything():
    data = json.loads(format_results(aggregate(sample(), "stock"), "json"))
    assert data["baseline"] == "stock" and len(data["cells"]) == 3
    four = data["cells"][2]
    assert four["config"]["policy"] == "4g4g" and four["seeds"] == [0, 1, 2] and four["failures"] == 2
    assert four["stats"]["events"] == {"n": 3, "mean": 6.0, "std": 3.0, "ci95": pytest.approx(7.452413, abs=1e-6),
                                       "min": 3, "max": 9}
    assert four["ratios"] == {"events": 1.5, "alloc_failures": None, "flushes_per_io": 0.0}
    assert data["cells"][1]["ratios"] is None and data["cells"][0]["stats"]["events"]["ci95"] is None
    restricted = json.loads(format_results(aggregate(sample()), "json", keys=["events"]))
    assert [list(c["stats"]) for c in restricted["cells"]] == [["events"]] * 3
    assert "ratios" not in restricted["cells"][0]


def test_json_has_no_nan():
    (only,) = aggregate([entry(seed=s, flushes_per_io=float("inf")) for s in range(2)])
    data = json.loads(format_results([only], "json"))
    assert data["cells"][0]["stats"]["flushes_per_io"]["mean"] is None


def test_markdown():
    lines = format_results(aggregate(sample(), "stock"), "markdown").splitlines()
    assert lines[0] == "| cell | key | mean ± 95% CI | n | min | max | vs stock |"
    assert re.fullmatch(r"\|(:?-{3,}:?\|)+", lines[1]) and lines[1].count("|") == lines[0].count("|")
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines[2:])
    assert len(lines) == 2 + 2 + 3 + 3
    assert lines[2].startswith("| sparc / unmapped / mixed")
    assert lines[3].startswith("|  | alloc_failures | 1 ± - | 1 | 1 | 1 | - |")


def test_markdown_escapes_pipes():
    (only,) = aggregate([entry(seed=0, status="failed", error="a | b")])
    text = format_results([only], "markdown")
    assert "a \\| b" in text


def test_keys():
    cells = aggregate(sample())
    rows = list(csv.DictReader(io.StringIO(format_results(cells, "csv"))))
    assert {r["key"] for r in rows} == {"events", "alloc_failures", "flushes_per_io"}  # the headline keys present
    assert set(HEADLINE_KEYS) >= {r["key"] for r in rows}
    extra = aggregate([entry(seed=0, events=1, forks=2)])
    assert "forks" not in format_results(extra, "table")
    assert "forks" in format_results(extra, "table", keys=["all"])
    assert format_results(extra, "csv", keys=["forks"]).count("\n") == 2
    assert "kmap_waits" not in format_results(extra, "table", keys=["kmap_waits"])  # known, just not recorded
    with pytest.raises(ConfigError, match="keys: all, or record keys from: .*forks"):
        format_results(extra, "table", keys=["nonsense"])


def test_unknown_format():
    with pytest.raises(ConfigError) as err:
        format_results([], "yaml")
    assert str(err.value) == "format: one of table, csv, json, markdown (got 'yaml')"
