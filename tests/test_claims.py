"""The paper's claims: verdict logic on synthetic figures, each claim's figure on synthetic cells
(hand-computed), and the report's structure."""

from __future__ import annotations

import pytest

from cluster.aggregate import Cell, Stat
from cluster.claims import CLAIMS, KINDS, Band, Figure, forkexec_cycles, io_cycles, verdict
from cluster.paper import SPECS, quick, report, specs, summary
from cluster.spec import load_spec


def fig(value: float, ci: float | None = None, checks=()) -> Figure:
    return Figure(value, ci, "u", "detail", [], list(checks))


@pytest.mark.parametrize(("figure", "expected"), [
    (fig(5), "reproduced"),
    (fig(5, checks=[("c", True)]), "reproduced"),
    (fig(5, checks=[("c", True), ("d", False)]), "partly"),
    (fig(5, checks=[("c", False)]), "not reproduced"),
    (fig(12), "partly"),  # in the wider band
    (fig(11, ci=2), "partly"),  # its interval reaches the band
    (fig(30), "not reproduced"),
    (fig(-1), "not reproduced"),
])
def test_verdicts(figure: Figure, expected: str) -> None:
    assert verdict(figure, Band((2, 10), (1, 25))) == expected


def test_a_point_band_needs_the_exact_value() -> None:
    assert verdict(fig(0), Band((0, 0))) == "reproduced"
    assert verdict(fig(0.5), Band((0, 0))) == "not reproduced"


def cell(policy: str, sets: dict, **means: float) -> Cell:
    c = Cell({"machine": "pa8800", "policy": policy, "workload": "io", "engine": "fast", "set": sets},
             seeds=[0, 1])
    c.stats = {k: Stat(2, v, 0.0, 0.0, v, v) for k, v in means.items()}
    return c


def test_io_and_forkexec_cycles_are_per_request_and_per_fork() -> None:
    c = cell("stock", {}, cycles_io=1000, cycles_cache_flush_page=500, cycles_page_copy=300, cycles_kmap_atomic=50,
             cycles_tlb_flush_local=150, cycles_kernel_entry=1e9, io_requests=10)
    assert io_cycles(c) == 200  # the kernel entries are not the I/O path's
    keys = ("cycles_fork", "cycles_fork_ptes", "cycles_cow", "cycles_exec", "cycles_exit", "cycles_cache_flush_all",
            "cycles_cache_flush_tmpalias", "cycles_cache_flush_page", "cycles_page_alloc", "cycles_page_free")
    f = cell("stock", {}, forks=4, **{k: 100.0 for k in keys})
    assert forkexec_cycles(f) == 250


def test_p2_and_p3_figures_from_synthetic_cells() -> None:
    cells = []
    for size, (s, u) in {"4KiB": (2.0, 1.0), "64KiB": (2.0, 1.0), "1MiB": (1.9, 1.0)}.items():
        cells.append(cell("stock", {"io_size": size}, flushes_per_io=s, cycles_io=900, cycles_cache_flush_page=100,
                          cycles_page_copy=0, cycles_kmap_atomic=0, cycles_tlb_flush_local=0, io_requests=1,
                          stale_reads=0))
        cells.append(cell("unmapped", {"io_size": size}, flushes_per_io=u, cycles_io=900,
                          cycles_cache_flush_page=50, cycles_page_copy=0, cycles_kmap_atomic=0,
                          cycles_tlb_flush_local=0, io_requests=1, stale_reads=0))
    p2 = next(c for c in CLAIMS if c.id == "P2").figure(cells)
    assert p2.value == 1.0 and [a for a, _ in p2.trend] == ["4KiB", "64KiB", "1MiB"]
    assert verdict(p2, next(c for c in CLAIMS if c.id == "P2").band) == "reproduced"
    p3_cells = []
    for size in ("4KiB", "64KiB", "1MiB"):
        common = {"cycles_io": 900, "cycles_page_copy": 0, "io_requests": 1, "stale_reads": 0}
        p3_cells += [cell("stock", {"io_size": size, "defer_dcache_flush": True}, cycles_cache_flush_page=100,
                          cycles_kmap_atomic=0, cycles_tlb_flush_local=0, **common),
                     # at every kunmap: the flushes come back, plus the mappings: 1 - 1060 / 1000
                     cell("unmapped", {"io_size": size, "defer_dcache_flush": False}, cycles_cache_flush_page=110,
                          cycles_kmap_atomic=10, cycles_tlb_flush_local=40, **common),
                     # deferred: 1 - (900 + 20 + 10 + 20) / 1000 = 5%
                     cell("unmapped", {"io_size": size, "defer_dcache_flush": True}, cycles_cache_flush_page=20,
                          cycles_kmap_atomic=10, cycles_tlb_flush_local=20, **common)]
    p3 = next(c for c in CLAIMS if c.id == "P3").figure(p3_cells)
    assert p3.value == pytest.approx(5.0)
    assert p3.trend[1] == ("64KiB", "deferred 5.0%, at every kunmap -6.0%")


def test_every_claim_has_a_spec_that_validates_and_a_quick_variant() -> None:
    assert [c.id for c in CLAIMS] == [f"P{i}" for i in range(1, 10)]
    for claim in CLAIMS:
        spec = load_spec(str(SPECS / claim.spec))
        assert spec.name == claim.sweep
        assert len(spec.seeds) >= 3 and len(spec.cells()) >= 2  # several seeds, an axis that varies
        q = quick(spec)
        assert q.name == claim.sweep + "-quick" and q.seeds == (0, 1) and q.digest() != spec.digest()
    assert len(specs(is_quick=True)) == 9


def test_a_report_has_every_claim_with_figure_interval_and_verdict() -> None:
    rows = summary({})
    assert [v for _, _, v in rows] == ["not run"] * 9
    claim = CLAIMS[1]
    rows = [(claim, Figure(1.0, 0.05, "flushes", "d", [("4KiB", "1.0")], [("stock flushes twice", True)]),
             "reproduced")]
    text = report(rows, {"flushes_per_io": "/x/flushes_per_io.png"}, is_quick=True)
    assert text.startswith("# zonesim: the paper's claims, simulated")
    assert "| P2 |" in text and "1 ± 0.05 flushes" in text and "## P2: reproduced (mechanism: " in text
    assert "**Band.** reproduced in [0.9, 1.1]" in text and "- check: stock flushes twice: yes" in text
    assert "![flushes_per_io](flushes_per_io.png)" in text


@pytest.mark.ray
def test_zonesim_paper_quick_writes_a_report_with_every_claim_and_the_plots(zonesim, tmp_path) -> None:
    out = zonesim("paper", "--quick", "--out", str(tmp_path), "--no-metrics", timeout=600)
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if line.startswith("| P")]
    assert [line.split("|")[1].strip() for line in table] == [f"P{i}" for i in range(1, 10)]
    report = (tmp_path / "report.md").read_text()
    for i in range(1, 10):
        section = report.split(f"## P{i}: ")[1].split("\n## ")[0]
        verdict, named = section.split("\n")[0].split(" (", 1)
        assert verdict in ("reproduced", "partly", "not reproduced"), verdict
        kind, by = named.rstrip(")").split(": ", 1)  # the verdict line names what produced it
        assert kind in KINDS and by
        figure = section.split("**Figure.** ")[1].split("\n")[0]
        assert " ± " in figure  # every figure has its 95% interval (two seeds)
        assert "**Mechanism.**" in section and "| point | figure |" in section
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted(["alias_violations.png", "exhaustions_vs_window.png", "flushes_per_io.png",
                           "forkexec_latency.png", "io_gain.png", "lowmem_vs_memory.png", "slowdown_vs_entry_rate.png",
                           "tlb_entries.png"])
    assert all(f"({name})" in report for name in pngs)


def test_every_claim_says_what_decides_it() -> None:
    """Each band carries the paper's words behind it; each claim says whether the simulation
    decides its figure (mechanism), prices it with estimates, or only carries out arithmetic or a
    construction; and names the kernel mechanisms its verdict line shows."""
    for claim in CLAIMS:
        assert claim.band.why and claim.kind in KINDS and claim.by, claim.id
        lo, hi = claim.band.reproduced
        assert lo <= hi and (claim.band.partly is None or claim.band.partly[0] <= lo <= hi <= claim.band.partly[1])


def test_no_paper_sweep_ends_inside_its_workloads_set_up() -> None:
    """A cell whose stream never leaves the prologue measures the set-up, the same for every seed."""
    from cluster.paper import specs
    from workloads.config import inside_setup, resolve

    for is_quick in (False, True):
        for claim, spec in specs(is_quick):
            for cell in spec.cells():
                assert inside_setup(resolve({**cell, "seed": 0})) is None, (claim.id, is_quick, cell)
