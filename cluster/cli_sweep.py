"""``zonesim sweep``, ``zonesim results`` and ``zonesim paper``: a spec run on Ray into its store,
the store's records aggregated, and the paper's nine sweeps with their report and plots. A
sweep's /metrics endpoint lives as long as the sweep (and a grace wait only if something scraped it).
"""

from __future__ import annotations

import argparse
import os
import sys

from cluster.cli_base import GRACE, PROG, check_port, metrics_flags, note
from cluster.store import Store
from core.errors import ConfigError
from workloads.config import inside_setup, resolve

# -- sweep and results -----------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a spec on Ray (embedded, joined, or the cluster of `ray job submit`) into its store."""
    from cluster.aggregate import aggregate, format_results
    from cluster.driver import Options, run_sweep
    from cluster.progress import Progress
    from cluster.sweep import default_dir, load_spec, open_store, store_notes

    check_port(args)
    spec = load_spec(args.spec)
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise ConfigError("max-in-flight", "an integer >= 1", args.max_in_flight)
    directory = args.out or default_dir(spec)
    if args.num_cpus is not None and (args.num_cpus < 1 or args.address):
        raise ConfigError("num-cpus", "an integer >= 1, for an embedded Ray only (not with --address)", args.num_cpus)
    warn_short_cells(spec)
    store = open_store(spec, directory, args.resume, args.force)  # a refusal comes before Ray starts
    for line in store_notes(store):
        note(line)
    try:  # the one store of this sweep: written by the driver, then read for the table
        listeners: list[object] = [Progress(spec.name)]
        exporter = _exporter(args, spec.name, listeners)
        executor = _executor(args, exporter is not None, args.num_cpus)
        try:
            out = run_sweep(spec.configs(), store, executor, Options(max_in_flight=args.max_in_flight), listeners)
        finally:
            _close(executor)
        if exporter is not None:
            after_sweep(args, spec.name, exporter)
        print(format_results(aggregate(store.entries(), spec.baseline), "table"))
    finally:
        store.close()
    print(f"stored in {directory}: {out.already + out.ran - len(out.failed)} of {out.total} simulations ok"
          f" ({out.already} from before, {out.ran} run now, {out.retried} re-run after a worker died)")
    for entry in out.failed[:10]:
        print(f"{PROG}: failed: {entry['config']}: {entry['error']}", file=sys.stderr)
    if len(out.failed) > 10:
        print(f"{PROG}: ... and {len(out.failed) - 10} more failures (zonesim results {directory})", file=sys.stderr)
    return 1 if out.failed else 0


def _executor(args: argparse.Namespace, progress: bool, num_cpus: int | None = None):
    """Ray for this run: the cluster given (``--address``, or RAY_ADDRESS as under ``ray job
    submit``), else an embedded one, started when the sweep's work is worth its start-up
    (``--ray-start auto``) or at once, every simulation on its workers (``now``)."""
    from cluster.executor import RayExecutor
    from cluster.executor_embedded import EmbeddedRay

    if args.address or os.environ.get("RAY_ADDRESS") or args.ray_start == "now":
        return RayExecutor(address=args.address, num_cpus=num_cpus, progress=progress)
    return EmbeddedRay(num_cpus, progress)


def _close(executor) -> None:
    """Stop the executor's Ray (if it started one) and say where the simulations ran."""
    executor.close()
    if hasattr(executor, "describe"):
        print(executor.describe(), file=sys.stderr)


def _ray_start_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray-start", choices=("auto", "now"), default="auto",
                        help="embedded Ray only: start it when the work left is worth its few seconds of start-up, "
                        "running simulations in this process meanwhile (auto, the default), or at once with every "
                        "simulation on its workers (now)")


def _exporter(args: argparse.Namespace, sweep: str, listeners: list[object]):
    """The sweep's /metrics endpoint (and its listener), or None with --no-metrics. A port in use
    is a warning, not an error: a sweep is worth more than its dashboard."""
    from cluster.metrics import Exporter

    if args.no_metrics:
        return None
    exporter = Exporter()
    try:
        port = exporter.serve(args.metrics_host, args.metrics_port)
    except OSError as err:
        print(f"{PROG}: warning: metrics endpoint {args.metrics_host}:{args.metrics_port}: {err.strerror}; "
              "the sweep runs without it", file=sys.stderr)
        return None
    print(f"metrics: http://{args.metrics_host}:{port}/metrics", file=sys.stderr)
    listeners.append(exporter.listener(sweep))
    return exporter


def warn_short_cells(spec) -> None:
    """One line if cells of the spec end inside their workload's set-up (their seeds all agree)."""
    cells = spec.cells()
    short = [(r.identity["workload"], s) for r in (resolve({**cell, "seed": 0}) for cell in cells)
             if (s := inside_setup(r))]
    if short:
        workload, (events, setup) = short[0]
        print(f"{PROG}: warning: events: {len(short)} of {len(cells)} cells end inside their workload's set-up, "
              f"so no episode runs and every seed gives the same record (first: {workload} at {events:,} events "
              f"of {setup:,})", file=sys.stderr)


def after_sweep(args: argparse.Namespace, sweep: str, exporter) -> None:
    from cluster.metrics import wait_grace

    # the last values wait for a scraper only if one has been scraping (or the user asked)
    scraped = exporter.scrapes > 0
    grace = args.metrics_grace if args.metrics_grace is not None else (GRACE if scraped else 0.0)
    if args.pushgateway:
        try:
            exporter.push(args.pushgateway, sweep)
        except OSError as err:
            print(f"{PROG}: warning: pushgateway {args.pushgateway}: {err}", file=sys.stderr)
    if grace > 0:
        print(f"metrics stay up {grace:g} s for a last scrape", file=sys.stderr)
        wait_grace(grace)
    exporter.close()


def cmd_results(args: argparse.Namespace) -> int:
    from cluster.aggregate import aggregate, format_results
    from cluster.sweep import store_notes, stored_baseline

    store = Store.read(args.directory)
    for line in store_notes(store):
        note(line)
    keys = args.keys.split(",") if args.keys else None
    print(format_results(aggregate(store.entries(), stored_baseline(store)), args.format, keys))
    return 0


def add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="run a sweep spec (TOML) on Ray and store its records",
                        parents=[metrics_flags()])
    sw.add_argument("spec", help="sweep spec file (TOML; see README)")
    sw.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS if set, else an embedded "
                    "single-node Ray)")
    sw.add_argument("--out", metavar="DIR", help="sweep directory (default sweeps/NAME)")
    sw.add_argument("--resume", action="store_true", help="the directory must hold this sweep already; run only "
                    "what has no record (re-running the same spec into its directory does the same)")
    sw.add_argument("--force", action="store_true", help="a changed spec into an existing directory: move the old "
                    "records aside and start over")
    sw.add_argument("--max-in-flight", type=int, metavar="N", help="tasks in flight at once (default: twice "
                    "the cluster's CPUs)")
    sw.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the embedded Ray (default: all)")
    _ray_start_flag(sw)
    sw.set_defaults(func=cmd_sweep)

    res = sub.add_parser("results", help="aggregate a sweep's records: mean, std, 95%% CI, min, max per cell")
    res.add_argument("directory", help="sweep directory")
    res.add_argument("--format", default="table", help="table, csv, json or markdown (default table)")
    res.add_argument("--keys", help="comma-separated record keys, or 'all' (default: the paper's headline keys)")
    res.set_defaults(func=cmd_results)


# -- the paper ------------------------------------------------------------------------------------


def cmd_paper(args: argparse.Namespace) -> int:
    """Every claim's sweep, then OUT/report.md and the plots; the summary table on stdout."""
    from cluster import paper
    from cluster.progress import Progress

    check_port(args)
    paper.specs(args.quick)  # every spec loads and validates before Ray starts
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise ConfigError("out", f"a directory zonesim can create and write ({err.strerror})", args.out) from None
    exporter = _exporter(args, "paper", [])
    executor = _executor(args, exporter is not None)
    try:
        results, failed = paper.run_all(args.out, executor, args.quick, lambda name: [Progress(name)] + (
            [exporter.listener(name)] if exporter is not None else []), force=args.force, note=note)
    finally:
        _close(executor)
    plots = _plots(results, args.out)
    rows = paper.summary(results)
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write(paper.report(rows, plots, args.quick))
    print(paper.summary_table(rows))
    print(f"\nreport: {path}; plots: {len(plots)} PNGs in {args.out}")
    if exporter is not None:
        after_sweep(args, "paper", exporter)
    if failed:
        print(f"{PROG}: {failed} simulations failed (zonesim results {args.out}/sweeps/NAME)", file=sys.stderr)
    return 1 if failed else 0


def _plots(results: dict, out: str) -> dict[str, str]:
    try:
        from cluster.plots import make_plots
    except ImportError as err:  # matplotlib missing: the report stands without its pictures
        print(f"{PROG}: warning: no plots ({err})", file=sys.stderr)
        return {}
    return make_plots(results, out)


def add_paper_parser(sub: argparse._SubParsersAction) -> None:
    pp = sub.add_parser("paper", help="reproduce the paper's claims P1-P9: sweeps, report.md and plots",
                        parents=[metrics_flags()])
    pp.add_argument("--quick", action="store_true", help="2 seeds and a quarter of the events (a few minutes)")
    pp.add_argument("--out", default="paper", metavar="DIR", help="where the sweeps, report and plots go "
                    "(default ./paper)")
    pp.add_argument("--address", help="Ray cluster to join (default: an embedded single-node Ray)")
    _ray_start_flag(pp)
    pp.add_argument("--force", action="store_true", help="a sweep whose spec changed: move its old records "
                    "aside and run it again")
    pp.set_defaults(func=cmd_paper)
