"""Plots of the paper's sweeps: every PNG written at 800 x 500 from synthetic cells, missing sweeps
skipped, identical bytes on a rerun, the derived series (fork/exec latency, I/O gain, unit
conversions) against hand-computed numbers, and flushes per I/O from a real run of the P2 spec."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from cluster.aggregate import Cell, Stat, aggregate  # noqa: E402
from cluster.plot_series import (  # noqa: E402
    Point,
    alias_series,
    exhaustion_series,
    flushes_series,
    forkexec_series,
    io_gain_series,
    lowmem_series,
    slowdown_series,
    tlb_series,
)
from cluster.plots import PLOTS, make_plots  # noqa: E402
from cluster.spec import load_spec  # noqa: E402
from cluster.worker import run_one  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MiB, GiB = 1 << 20, 1 << 30


def stat(mean: float, ci95: float | None = None) -> Stat:
    n = 1 if ci95 is None else 3
    return Stat(n, float(mean), 0.0, ci95, float(mean), float(mean))


def cell(policy: str, sets: dict, machine: str = "pa8800", workload: str = "io", ci: float | None = None,
         **means: float) -> Cell:
    """A cell with the given means; every stat gets ``ci`` as its CI half-width (None: one seed)."""
    config = {"machine": machine, "policy": policy, "workload": workload, "engine": "fast",
              "set": {"events": 1000, **sets}}
    return Cell(config, "stock", seeds=[0] if ci is None else [0, 1, 2],
                stats={k: stat(v, ci) for k, v in means.items()})


def synthetic() -> dict[str, list[Cell]]:
    """Every sweep of the paper, two or three points per line, zeros included."""
    out: dict[str, list[Cell]] = {}
    out["p7-lowmem"] = [cell(p, {"memory": m}, "x86-pae-64g", "mixed", ci=1.0,
                             lowmem_free_min_bytes=(200 - 2 * g if p == "stock" else 600) * MiB,
                             alloc_failures=(g * 3 if p == "stock" else 0))
                        for p in ("stock", "4g4g", "unmapped") for m, g in (("16GiB", 16), ("32GiB", 32),
                                                                              ("64GiB", 64))]
    out["p4-forkexec"] = [cell(p, {"anon_pages": a}, workload="forkexec", ci=5.0, forks=100,
                               cycles_fork=1e5 * a, cycles_cache_flush_all=(4e6 if p == "stock" else 0),
                               cycles_cache_flush_page=(0 if p == "stock" else 1e4 * a))
                          for p in ("stock", "unmapped") for a in (16, 64, 256)]
    out["p2-flushes-per-io"] = [cell(p, {"io_size": s}, ci=0.0, flushes_per_io=2.0 if p == "stock" else 1.0)
                                for p in ("stock", "unmapped") for s in ("4KiB", "64KiB", "1MiB")]
    out["p3-io-gain"] = [cell(p, {"io_size": s}, ci=1.0, io_requests=10, cycles_io=1000 * k,
                              cycles_cache_flush_page=(120 if p == "stock" else 60) * k, cycles_page_copy=0)
                         for p in ("stock", "unmapped") for s, k in (("4KiB", 1), ("64KiB", 16), ("1MiB", 256))]
    out["p8-4g4g"] = [cell(p, {"user_time": t}, "x86-pae-64g", "forkexec", ci=1e6, kernel_entries=1000,
                           cycles_total=(1000 * 2800 * (1 + t)) * (1.3 if p == "4g4g" else 1.0))
                      for p in ("stock", "4g4g") for t in (1, 10, 100)]
    out["p5-alias-violations"] = [cell(p, {"touch_rate": r}, m, "mixed", ci=3.0,
                                       alias_violations=(1000 * r if p == "stock" and m == "pa8800" else 0))
                                  for m in ("pa8800", "pa8700") for p in ("stock", "unmapped") for r in (0.1, 0.5)]
    out["p6-exhaustion"] = [cell("unmapped", {"kernel_window": w}, workload="stress", ci=2.0,
                                 congruence_exhaustions=e, stale_reads=0)
                            for w, e in (("2GiB", 0), ("256MiB", 0), ("64MiB", 5), ("32MiB", 400))]
    out["p9-tlb-entries"] = [cell("unmapped", {"variable_pages": v, "kalloc_max_order": o}, workload="kalloc",
                                  ci=1.5, tlb_entries_used=(100 / (1 << o) if v else 100))
                             for v in (True, False) for o in (0, 2, 4)]
    return out


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == PNG_SIGNATURE
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append((data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def png_size(path: str) -> tuple[int, int]:
    chunks = png_chunks(Path(path).read_bytes())
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return struct.unpack(">II", chunks[0][1][:8])


# -- the files -----------------------------------------------------------------------------------


def test_every_plot_is_written_as_an_800_by_500_png(tmp_path):
    written = make_plots(synthetic(), str(tmp_path))
    assert set(written) == set(PLOTS)
    for name, path in written.items():
        assert Path(path) == tmp_path / f"{name}.png"
        assert png_size(path) == (800, 500)
        assert Path(path).stat().st_size > 10_000  # something was drawn, not a blank canvas


def test_missing_sweeps_are_skipped(tmp_path):
    results = synthetic()
    only = {"p2-flushes-per-io": results["p2-flushes-per-io"], "p9-tlb-entries": results["p9-tlb-entries"],
            "p1-kernel-mapped": [cell("stock", {"processes": 16}, kernel_mapped_dynamic_bytes_peak=1)]}
    written = make_plots(only, str(tmp_path / "some"))
    assert sorted(written) == ["flushes_per_io", "tlb_entries"]
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["flushes_per_io.png", "tlb_entries.png"]
    assert make_plots({}, str(tmp_path / "none")) == {}
    assert not (tmp_path / "none").exists()


def test_a_sweep_without_a_usable_cell_has_no_plot(tmp_path):
    failed = Cell({"machine": "pa8800", "policy": "stock", "workload": "io", "engine": "fast",
                   "set": {"io_size": "4KiB"}}, "stock", failures=3, first_error="boom")
    no_axis = cell("stock", {}, flushes_per_io=2.0)  # the axis the plot needs is not set
    assert make_plots({"p2-flushes-per-io": [failed, no_axis], "p3-io-gain": [failed]}, str(tmp_path)) == {}
    assert list(tmp_path.iterdir()) == []


def test_the_same_cells_give_the_same_bytes_with_no_timestamp(tmp_path):
    first = make_plots(synthetic(), str(tmp_path / "a"))
    second = make_plots(synthetic(), str(tmp_path / "b"))
    for name in PLOTS:
        data = Path(first[name]).read_bytes()
        assert data == Path(second[name]).read_bytes(), name
        kinds = {kind for kind, _ in png_chunks(data)}
        assert b"tIME" not in kinds
        assert b"Software" not in data


# -- the numbers ---------------------------------------------------------------------------------


def test_forkexec_series_is_cycles_of_the_cycle_keys_per_fork_at_the_machines_clock():
    cells = [
        # (8000 + 16000 + 4000 + 40000 + 0 + 0 + 8000 + 4000) / 10 forks = 8000 cycles = 10 us
        cell("stock", {"anon_pages": 16}, workload="forkexec", ci=7.0, forks=10, cycles_fork=8000,
             cycles_exec=16000, cycles_exit=4000, cycles_cache_flush_all=40000, cycles_cache_flush_tmpalias=0,
             cycles_cache_flush_page=0, cycles_page_alloc=8000, cycles_page_free=4000,
             cycles_io=1e9, cycles_kernel_entry=1e9, cycles_total=2e9),  # not part of fork/exec
        # missing keys count 0: (8000 + 16000 + 4000 + 12000 + 400) / 20 = 2020 cycles = 2.525 us
        cell("unmapped", {"anon_pages": 16}, workload="forkexec", forks=20, cycles_fork=8000,
             cycles_exec=16000, cycles_exit=4000, cycles_cache_flush_page=12000, cycles_cache_flush_tmpalias=400),
        cell("unmapped", {"anon_pages": 4}, workload="forkexec", forks=1, cycles_fork=1600),  # 1600 = 2 us
        cell("unmapped", {"anon_pages": 64}, workload="forkexec", forks=0, cycles_fork=8000),  # no fork: left out
        # the pa8700 runs at 750 MHz: 1500 cycles = 2 us; cycles_fork_ptes and cycles_cow are fork/exec's
        cell("stock", {"anon_pages": 16}, "pa8700", workload="forkexec", forks=1, cycles_fork=1000,
             cycles_fork_ptes=300, cycles_cow=200),
    ]
    got = forkexec_series(cells)
    assert list(got) == ["pa8800 stock", "pa8800 unmapped", "pa8700 stock"]
    assert got["pa8800 stock"] == [Point(16.0, pytest.approx(10.0), None)]
    assert got["pa8800 unmapped"] == [Point(4.0, pytest.approx(2.0), None), Point(16.0, pytest.approx(2.525), None)]
    assert got["pa8700 stock"] == [Point(16.0, pytest.approx(2.0), None)]


def test_slowdown_series_is_4g4g_over_stock_against_stock_entries_per_second():
    cells = [
        # stock: 2,800,000 cycles at 2800 MHz = 1 ms for 500 entries: 500,000 entries/s; 4g4g 25% slower
        cell("stock", {"user_time": 1}, "x86-pae-64g", "forkexec", kernel_entries=500, cycles_total=2.8e6),
        cell("4g4g", {"user_time": 1}, "x86-pae-64g", "forkexec", kernel_entries=500, cycles_total=3.5e6),
        # 10x the time for the same entries: 50,000 entries/s; 5% slower; cpu_mhz set: 1400 MHz halves the rate
        cell("stock", {"user_time": 10}, "x86-pae-64g", "forkexec", kernel_entries=500, cycles_total=2.8e7),
        cell("4g4g", {"user_time": 10}, "x86-pae-64g", "forkexec", kernel_entries=500, cycles_total=2.94e7),
        cell("stock", {"user_time": 10, "cpu_mhz": 1400}, "x86-pae-64g", "forkexec", kernel_entries=500,
             cycles_total=2.8e7),
        cell("4g4g", {"user_time": 10, "cpu_mhz": 1400}, "x86-pae-64g", "forkexec", kernel_entries=500,
             cycles_total=2.8e7),
        cell("4g4g", {"user_time": 100}, "x86-pae-64g", "forkexec", kernel_entries=5, cycles_total=1.0),  # no stock
    ]
    got = slowdown_series(cells)
    assert list(got) == ["4g4g"]
    assert [p.x for p in got["4g4g"]] == pytest.approx([25_000, 50_000, 500_000])
    assert [p.y for p in got["4g4g"]] == pytest.approx([0.0, 5.0, 25.0])


def test_io_gain_series_compares_cycles_per_io_with_the_same_config_under_stock():
    cells = [
        # 64KiB: stock (2400 + 300 + 300) / 10 = 300, unmapped (2400 + 150 + 150) / 10 = 270: 10%
        cell("unmapped", {"io_size": "64KiB"}, io_requests=10, cycles_io=2400, cycles_cache_flush_page=150,
             cycles_page_copy=150, cycles_cache_flush_all=1e9),
        cell("stock", {"io_size": "64KiB"}, io_requests=10, cycles_io=2400, cycles_cache_flush_page=300,
             cycles_page_copy=300, cycles_kernel_entry=1e9),
        # 4KiB: stock (1000 + 200) / 10 = 120, unmapped (1000 + 100) / 10 = 110: 8.333...%
        cell("stock", {"io_size": "4KiB"}, io_requests=10, cycles_io=1000, cycles_cache_flush_page=200,
             cycles_page_copy=0),
        cell("unmapped", {"io_size": "4KiB"}, io_requests=10, cycles_io=1000, cycles_cache_flush_page=100,
             cycles_page_copy=0),
        # 1MiB: unmapped costs more, 125 against 100 per I/O: -25%; 4g4g at 4KiB, 600 / 5 = 120: 0%, own line
        cell("stock", {"io_size": "1MiB"}, io_requests=4, cycles_io=400),
        cell("unmapped", {"io_size": "1MiB"}, io_requests=2, cycles_io=250),
        cell("4g4g", {"io_size": "4KiB"}, io_requests=5, cycles_io=600),
        # no stock counterpart (another machine): left out
        cell("unmapped", {"io_size": "4KiB"}, machine="pa8700", io_requests=10, cycles_io=1),
    ]
    got = io_gain_series(cells)
    assert list(got) == ["unmapped", "4g4g"]
    assert [p.x for p in got["unmapped"]] == [4.0, 64.0, 1024.0]  # KiB, sorted
    assert [p.y for p in got["unmapped"]] == pytest.approx([100 / 12, 10.0, -25.0])
    assert [p.y for p in got["4g4g"]] == pytest.approx([0.0])
    assert all(p.err is None for points in got.values() for p in points)


def test_the_plain_series_convert_units_and_keep_the_ci():
    results = synthetic()
    free, failures = lowmem_series(results["p7-lowmem"])
    assert list(free) == ["stock", "4g4g", "unmapped"]
    assert free["stock"] == [Point(16.0, 168.0, 1.0 / MiB), Point(32.0, 136.0, 1.0 / MiB),
                             Point(64.0, 72.0, 1.0 / MiB)]
    assert [p.y for p in failures["stock"]] == [48, 96, 192] and failures["stock"][0].err == 1.0
    flushes = flushes_series(results["p2-flushes-per-io"])
    assert [(p.x, p.y) for p in flushes["stock"]] == [(4.0, 2.0), (64.0, 2.0), (1024.0, 2.0)]
    assert [p.y for p in flushes["unmapped"]] == [1.0, 1.0, 1.0]
    aliases = alias_series(results["p5-alias-violations"])
    assert [(p.x, p.y) for p in aliases["stock"]] == [(("pa8700", 0.1), 0), (("pa8700", 0.5), 0),
                                                       (("pa8800", 0.1), 100), (("pa8800", 0.5), 500)]
    exhaustion = exhaustion_series(results["p6-exhaustion"])
    assert list(exhaustion) == ["congruence_exhaustions (unmapped)", "stale_reads (unmapped)"]
    assert [(p.x, p.y) for p in exhaustion["congruence_exhaustions (unmapped)"]] == [
        (32.0, 400), (64.0, 5), (256.0, 0), (2048.0, 0)]
    tlb = tlb_series(results["p9-tlb-entries"])
    assert list(tlb) == ["variable-size pages", "base pages only"]
    assert [(p.x, p.y, p.err) for p in tlb["variable-size pages"]] == [(0, 100, 1.5), (2, 25, 1.5), (4, 6.25, 1.5)]
    assert [p.y for p in tlb["base pages only"]] == [100, 100, 100]


def test_variable_pages_written_as_text_are_read_as_booleans():
    cells = [cell("unmapped", {"variable_pages": "true", "kalloc_max_order": 2}, tlb_entries_used=3),
             cell("unmapped", {"variable_pages": "false", "kalloc_max_order": 2}, tlb_entries_used=9)]
    assert {k: [p.y for p in v] for k, v in tlb_series(cells).items()} == {"variable-size pages": [3],
                                                                           "base pages only": [9]}


# -- a real run ----------------------------------------------------------------------------------


def test_flushes_per_io_from_a_real_p2_run(tmp_path):
    spec = load_spec(str(ROOT / "workloads" / "paper" / "p2_flushes.toml"))
    configs = [c for c in spec.configs() if c["seed"] == 0 and c["set"]["io_size"] == "64KiB"]
    assert [c["policy"] for c in configs] == ["stock", "unmapped"]
    entries = []
    for config in configs:
        config["set"]["events"] = 20000
        entries.append(run_one(config))
    assert [e["status"] for e in entries] == ["ok", "ok"], [e["error"] for e in entries]
    cells = aggregate(entries, spec.baseline)
    got = flushes_series(cells)
    assert {k: [(p.x, p.y, p.err) for p in v] for k, v in got.items()} == {
        "stock": [(64.0, 2.0, None)], "unmapped": [(64.0, 1.0, None)]}
    written = make_plots({spec.name: cells}, str(tmp_path))
    assert list(written) == ["flushes_per_io"]
    assert png_size(written["flushes_per_io"]) == (800, 500)
