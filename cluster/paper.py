"""``zonesim paper``: every claim's sweep through the sweep service's code path, then report.md and
the plots.

The sweeps are the specs of ``workloads/paper/``; ``--quick`` runs each with two seeds and a
quarter of the events (enough for a verdict and an interval, in a few minutes on two cores).
Each sweep's store lives under ``OUT/sweeps/NAME``, so a second run resumes and a finished run
only rewrites the report. The report is written from the aggregated cells and ``cluster.claims``
alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cluster.aggregate import Cell, aggregate
from cluster.claims import CLAIMS, KINDS, Claim, Figure, verdict
from cluster.driver import Options
from cluster.spec import Spec, load_spec, parse_spec, tomllib
from cluster.store import Store
from cluster.sweep import run_spec

SPECS = Path(__file__).resolve().parent.parent / "workloads" / "paper"


def quick(spec: Spec) -> Spec:
    """The same sweep with 2 seeds and a quarter of the events (a new spec: its own store)."""
    data = tomllib.loads(spec.text)
    data["name"] = spec.name + "-quick"
    data["seeds"] = 2
    sets = data["base"].setdefault("set", {})
    sets["events"] = max(int(sets.get("events", 1_000_000)) // 4, 20_000)
    note = f"# zonesim paper --quick: name {data['name']}, seeds = 2, base.set.events = {sets['events']}\n"
    return parse_spec(data, note + spec.text)


def specs(is_quick: bool) -> list[tuple[Claim, Spec]]:
    out = []
    for claim in CLAIMS:
        spec = load_spec(str(SPECS / claim.spec))
        out.append((claim, quick(spec) if is_quick else spec))
    return out


def run_all(out: str, executor, is_quick: bool, listeners_for=lambda name: [],
            force: bool = False, note=lambda line: None) -> tuple[dict[str, list[Cell]], int]:
    """Run (or resume) every claim's sweep; the aggregated cells by sweep name (without -quick),
    and how many simulations failed. ``note`` gets what opening each store did with a legacy log
    (``cluster.sweep.store_notes``; the reading after it has none left to say)."""
    results, failed = {}, 0
    for claim, spec in specs(is_quick):
        directory = os.path.join(out, "sweeps", spec.name)
        failed += len(run_spec(spec, directory, executor, Options(), listeners_for(spec.name), force=force,
                               note=note).failed)
        results[claim.sweep] = aggregate(Store.read(directory).entries(), spec.baseline)
    return results, failed


def _fmt(fig: Figure) -> str:
    ci = " (one seed: no interval)" if fig.ci is None else f" ± {fig.ci:,.3g}"
    return f"{fig.value:,.3g}{ci} {fig.unit}"


def summary(results: dict[str, list[Cell]]) -> list[tuple[Claim, Figure | None, str]]:
    rows = []
    for claim in CLAIMS:
        cells = [c for c in results.get(claim.sweep, []) if c.n]
        try:
            fig = claim.figure(cells) if cells else None
        except (ValueError, KeyError):  # a cell the figure needs has no ok simulation
            fig = None
        rows.append((claim, fig, verdict(fig, claim.band) if fig else "not run"))
    return rows


def summary_table(rows: Sequence[tuple[Claim, Figure | None, str]]) -> str:
    lines = ["| claim | paper | simulated (95% CI) | verdict | kind |", "|---|---|---|---|---|"]
    for claim, fig, v in rows:
        lines.append(f"| {claim.id} | {claim.paper} | {_fmt(fig) if fig else '-'} | {v} | {claim.kind} |")
    return "\n".join(lines)


def report(rows: Sequence[tuple[Claim, Figure | None, str]], plots: dict[str, str], is_quick: bool) -> str:
    mode = "quick (2 seeds, a quarter of the events)" if is_quick else "full"
    out = ["# zonesim: the paper's claims, simulated", "",
           f"Bottomley, OLS 2004, claims P1-P9 of REFERENCE.md, run {mode}. Figures come from the "
           "simulations' records only; the bands that decide each verdict are in `cluster/claims.py`, each "
           "with the paper's words that justify it.", "", summary_table(rows), ""]
    for claim, fig, v in rows:
        out += [f"## {claim.id}: {v} ({claim.kind}: {claim.by})", "", f"**Paper.** {claim.paper}", "",
                f"**Measured.** {claim.measure} (sweep `{claim.spec}`)."]
        if fig is None:
            out += ["", "Not run.", ""]
            continue
        lo, hi = claim.band.reproduced
        out += ["", f"**Figure.** {_fmt(fig)}: {fig.detail}.", "",
                f"**Band.** reproduced in [{lo:g}, {hi:g}] ({claim.band.why})"
                + (f"; partly in [{claim.band.partly[0]:g}, {claim.band.partly[1]:g}]" if claim.band.partly else "")
                + ".", ""]
        out += [f"- check: {text}: {'yes' if ok else 'no'}" for text, ok in fig.checks]
        out += ["", f"**Kind.** {claim.kind}: {KINDS[claim.kind]}.", "", f"**Mechanism.** {claim.mechanism}.", "",
                "**Along the axis.**", "",
                "| point | figure |", "|---|---|"] + [f"| {a} | {b} |" for a, b in fig.trend] + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{name}]({os.path.basename(path)})" for name, path in sorted(plots.items())]
    return "\n".join(out) + "\n"
