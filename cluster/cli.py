"""The ``zonesim`` command line: run one simulation, list what can be simulated, bench the engines,
record and inspect event traces.

Bad input of any kind (unknown names, impossible ``--set`` values, malformed arguments) ends in
one line on stderr, ``zonesim: error: <message>``, and exit code 2. The message is the
``ConfigError``'s own, which names the field and what is allowed; a trace or a results store that
cannot be read (``TraceError``, ``StoreError``) says which file and why. Any other exception is a
zonesim bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from cluster import bench
from cluster.store import Store, StoreError
from cluster.text import show_value, table
from core import machine as machines
from core import policy as policies
from core.errors import ConfigError, StreamError
from core.sim import ENGINES, run
from workloads import WORKLOADS
from workloads.config import DEFAULTS, inside_setup, resolve
from workloads.errors import TraceError
from workloads.trace import trace_info, write_trace

GRACE = 15.0  # seconds a watched sweep's endpoint stays up: one Prometheus scrape interval and then some
PROG = "zonesim"

class UsageError(Exception):
    """A malformed command line, reported like a ConfigError: one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse reports errors as usage plus message over several lines; zonesim wants one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- run -----------------------------------------------------------------------------------------


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` items as a dict; values stay strings for their owner to parse."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"--set: expected NAME=VALUE, e.g. memory=16GiB (got {item!r})")
        out[name.strip()] = value.strip()
    return out


def config_from(args: argparse.Namespace) -> dict[str, object]:
    """The run's config: only what was given, so workloads.config.DEFAULTS fills the rest."""
    overrides: dict[str, object] = dict(parse_sets(args.set))
    if args.events is not None:
        overrides["events"] = args.events  # wins over --set events=...
    config: dict[str, object] = {"set": overrides, "engine": args.engine}
    for key in ("machine", "policy", "workload", "seed"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def format_record(record: dict[str, object]) -> str:
    return "\n".join(table([(key, show_value(key, value)) for key, value in record.items()]))


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def cmd_run(args: argparse.Namespace) -> int:
    r = resolve(config_from(args))
    if short := inside_setup(r):
        print(f"{PROG}: warning: events: {short[0]:,} end inside the {r.identity['workload']} workload's set-up "
              f"({short[1]:,} events: shm, processes, pools), so no episode runs and every seed gives the same "
              f"record; use events > {short[1]:,}", file=sys.stderr)
    record = run(r.machine, r.policy, r.stream, r.identity, engine=r.engine)
    print(json.dumps(record, indent=2, default=_json_default) if args.json else format_record(record))
    return 0


# -- list ----------------------------------------------------------------------------------------


def list_machines() -> list[str]:
    lines = ["machines (override any field with --set FIELD=VALUE)"]
    for m in machines.MACHINES.values():
        lines.append(f"  {m.name}")
        rows = [(f.name, show_value(f.name, getattr(m, f.name)), machines.FIELD_HELP.get(f.name, ""))
                for f in dataclasses.fields(m) if f.name not in ("name", "costs")]
        lines += table(rows, indent=4)
    lines.append("  trace:PATH  replay a recorded trace (zonesim trace record / from-strace); parameter: events "
                 "(0 = all)")
    return lines


def list_costs() -> list[str]:
    lines = ["costs (cycles per action; override with --set cost.NAME=CYCLES)"]
    for m in machines.MACHINES.values():
        lines.append(f"  {m.name} at {m.cpu_mhz} MHz")
        lines += table([(name, str(c.cycles), c.source) for name, c in m.costs.items()], indent=4)
    return lines


def list_policies() -> list[str]:
    lines = ["policies"]
    lines += table([(p.name, "/".join(p.arches), p.summary) for p in policies.POLICIES.values()], indent=2)
    lines.append("  parameters (--set NAME=VALUE); the default of the policy it belongs to")
    lines += table([(name, show_value(name, getattr(policies.POLICIES[policies.owner(name)], name)), text)
                    for name, text in policies.PARAM_HELP.items()], indent=4)
    return lines


def list_workloads() -> list[str]:
    lines = ["workloads (parameters: --set NAME=VALUE)"]
    for w in WORKLOADS.values():
        lines.append(f"  {w.name}  {w.summary}")
        rows = [(p.name, show_value(p.name, p.default, size=p.kind == "size"), p.help) for p in w.params]
        lines += table(rows, indent=4)
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    sections = (list_machines(), list_costs(), list_policies(), list_workloads())
    print("\n\n".join("\n".join(s) for s in sections))
    return 0


# -- bench ---------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise ConfigError("repeat", "an integer >= 1", args.repeat)
    if args.generators:
        return bench_generators(args)
    if args.sweep:
        from cluster.bench_sweep import bench_sweep, format_sweep_bench

        b = bench_sweep(sims=args.sims, tiny=args.tiny)
        print(json.dumps({"sweep": b.as_dict()}, indent=2) if args.json else format_sweep_bench(b))
        return 0
    if args.strace is not None:
        r = bench.bench_strace(args.strace or None, args.repeat)
        if args.json:
            print(json.dumps({"strace": r}, indent=2))
        else:
            verdict = "yes" if r["lines_per_s"] >= bench.STRACE_TARGET else "NO"
            print(f"strace import: {r['lines']:,} lines in {r['seconds']:.3f} s = {r['lines_per_s']:,.0f} lines/s "
                  f"(>= {bench.STRACE_TARGET:,}: {verdict}), {r['events']:,} events; log: {r['log']}")
        return 0
    names = args.machine or list(bench.DEFAULT_MACHINES)
    for name in names:  # refuse a bad machine or policy before minutes of benching the others
        machine = machines.get_machine(name)
        for policy in args.policy or bench.default_policies(name):
            policies.get_policy(policy, machine)
    events = args.events if args.events is not None else bench.DEFAULT_EVENTS
    reports = [bench.run_bench(machine=name, policies=args.policy, events=events, repeat=args.repeat)
               for name in names]
    if args.json:
        print(json.dumps({"machines": [r.as_dict() for r in reports]}, indent=2))
    else:
        print("\n\n".join(bench.format_bench(r) for r in reports))
    bad = [(r.machine, line) for r in reports for line in r.results if line.mismatch]
    for machine, line in bad:
        print(f"{PROG}: bench: fast and reference records differ on {machine} under {line.policy}: "
              f"{', '.join(line.mismatch)}", file=sys.stderr)
    return 1 if bad else 0


# -- trace ---------------------------------------------------------------------------------------


def cmd_trace_record(args: argparse.Namespace) -> int:
    """Build the workload's stream as `run` would (machine-derived params apply) and record it."""
    overrides: dict[str, object] = dict(parse_sets(args.set))
    if args.events is not None:
        overrides["events"] = args.events  # wins over --set events=...
    config: dict[str, object] = {"workload": args.workload, "set": overrides}
    for key in ("machine", "seed"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    r = resolve(config)
    s = write_trace(args.output, r.stream, seed=r.identity["seed"])
    batches = f"{s['batches']} batch" + ("" if s["batches"] == 1 else "es")
    print(f"recorded {s['events']} events in {batches}, {show_value('bytes', s['bytes'])} to {s['path']}")
    return 0


def cmd_trace_info(args: argparse.Namespace) -> int:
    info = trace_info(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = []
    for key, value in info.items():
        if isinstance(value, dict):  # params and kinds: one row per entry
            rows += [(f"{key}.{name}", show_value(name, v)) for name, v in value.items()]
        else:
            rows.append((key, show_value(key, value)))
    print("\n".join(table(rows)))
    return 0


def cmd_trace_from_strace(args: argparse.Namespace) -> int:
    """Convert an `strace -f -tt` log into a trace; malformed lines are reported, or fatal with --strict."""
    from core.events import Stream
    from workloads.strace import convert

    order = machines.get_machine(args.machine).kernel_stack_order if args.machine else 1
    conv = convert(args.log, strict=args.strict, stack_order=order)
    for number, reason in conv.skipped[:5]:
        print(f"{PROG}: warning: {args.log}:{number}: skipped: {reason}", file=sys.stderr)
    if len(conv.skipped) > 5:
        print(f"{PROG}: warning: {args.log}: {len(conv.skipped) - 5} more malformed lines skipped", file=sys.stderr)
    # the cpu field keeps each task's index: a replay folds it onto the machine's CPUs
    stream = Stream(conv.batches, conv.max_handles, source=f"strace:{args.log}", params=conv.params)
    s = write_trace(args.output, stream)
    unknown = sum(conv.unknown.values())
    print(f"converted {conv.lines} lines ({sum(conv.syscalls.values())} modelled calls, {unknown} others as bare "
          f"kernel entries, {len(conv.skipped)} malformed skipped) of {conv.processes} tasks into {s['events']} "
          f"events, {show_value('bytes', s['bytes'])} to {s['path']}")
    return 0


def add_trace_parser(sub: argparse._SubParsersAction) -> None:
    trace = sub.add_parser("trace", help="record event traces and inspect them (replay: --workload trace:FILE)")
    tsub = trace.add_subparsers(dest="trace_command", required=True)

    rec = tsub.add_parser("record", help="record a workload's event stream to a trace file")
    rec.add_argument("workload", help="workload to record (see zonesim list)")
    rec.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write")
    rec.add_argument("--machine", help=f"machine the stream is built for: its cpus and kernel stack order "
                     f"(default {DEFAULTS['machine']})")
    rec.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a workload parameter or machine field (repeatable)")
    rec.add_argument("--seed", type=int, help=f"the generator's seed (default {DEFAULTS['seed']})")
    rec.add_argument("--events", type=int, help="stream length, the same as --set events=N")
    rec.set_defaults(func=cmd_trace_record)

    info = tsub.add_parser("info", help="check a trace file and summarise its header and events")
    info.add_argument("file", help="trace file to read")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_trace_info)

    st = tsub.add_parser("from-strace", help="convert an `strace -f -tt -o LOG` log of a real program into a trace")
    st.add_argument("log", help="strace log (strace -f -tt -o LOG PROGRAM ...)")
    st.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write")
    st.add_argument("--strict", action="store_true", help="a malformed line is an error (default: skip it)")
    st.add_argument("--machine", help="machine whose kernel stack order the stream follows (default: order 1)")
    st.set_defaults(func=cmd_trace_from_strace)

    tsub.metavar = "{" + ",".join(tsub.choices) + "}"


def bench_generators(args: argparse.Namespace) -> int:
    events = args.events if args.events is not None else bench.GENERATOR_EVENTS
    results = bench.bench_generators(args.workload, events, args.repeat)
    if args.json:
        print(json.dumps({"generators": [dataclasses.asdict(r) for r in results]}, indent=2))
    else:
        print(bench.format_generators(results, args.repeat))
    return 0


# -- sweep and results -----------------------------------------------------------------------------


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a spec on Ray (embedded, joined, or the cluster of `ray job submit`) into its store."""
    from cluster.aggregate import aggregate, format_results
    from cluster.driver import Options
    from cluster.executor import RayExecutor
    from cluster.progress import Progress
    from cluster.sweep import default_dir, load_spec, open_store, run_spec

    _check_port(args)
    spec = load_spec(args.spec)
    if args.max_in_flight is not None and args.max_in_flight < 1:
        raise ConfigError("max-in-flight", "an integer >= 1", args.max_in_flight)
    directory = args.out or default_dir(spec)
    if args.num_cpus is not None and (args.num_cpus < 1 or args.address):
        raise ConfigError("num-cpus", "an integer >= 1, for an embedded Ray only (not with --address)", args.num_cpus)
    _warn_short_cells(spec)
    store = open_store(spec, directory, args.resume, args.force)  # a refusal comes before Ray starts
    if store.imported is not None:
        print(f"{PROG}: {directory}: imported {store.imported} records of the old records.msgpack", file=sys.stderr)
    if store.recovered:
        print(f"{PROG}: {directory}: {store.recovered}", file=sys.stderr)
    store.close()
    listeners: list[object] = [Progress(spec.name)]
    exporter = _exporter(args, spec.name, listeners)
    executor = RayExecutor(address=args.address, num_cpus=args.num_cpus, progress=exporter is not None)
    try:
        out = run_spec(spec, directory, executor, Options(max_in_flight=args.max_in_flight), listeners)
    finally:
        executor.close()
    if exporter is not None:
        _after_sweep(args, spec.name, exporter)
    store = Store.read(directory)
    print(format_results(aggregate(store.entries(), spec.baseline), "table"))
    print(f"stored in {directory}: {out.already + out.ran - len(out.failed)} of {out.total} simulations ok"
          f" ({out.already} from before, {out.ran} run now, {out.retried} re-run after a worker died)")
    for entry in out.failed[:10]:
        print(f"{PROG}: failed: {entry['config']}: {entry['error']}", file=sys.stderr)
    if len(out.failed) > 10:
        print(f"{PROG}: ... and {len(out.failed) - 10} more failures (zonesim results {directory})", file=sys.stderr)
    return 1 if out.failed else 0


def _check_port(args: argparse.Namespace) -> None:
    """Before anything is written or started."""
    if not 0 <= args.metrics_port <= 65535:
        raise ConfigError("metrics-port", "a port from 0 (any free one) to 65535", args.metrics_port)


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


def _warn_short_cells(spec) -> None:
    """One line if cells of the spec end inside their workload's set-up (their seeds all agree)."""
    cells = spec.cells()
    short = [(r.identity["workload"], s) for r in (resolve({**cell, "seed": 0}) for cell in cells)
             if (s := inside_setup(r))]
    if short:
        workload, (events, setup) = short[0]
        print(f"{PROG}: warning: events: {len(short)} of {len(cells)} cells end inside their workload's set-up, "
              f"so no episode runs and every seed gives the same record (first: {workload} at {events:,} events "
              f"of {setup:,})", file=sys.stderr)


def _after_sweep(args: argparse.Namespace, sweep: str, exporter) -> None:
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
    from cluster.sweep import stored_baseline

    store = Store.read(args.directory)
    keys = args.keys.split(",") if args.keys else None
    print(format_results(aggregate(store.entries(), stored_baseline(store)), args.format, keys))
    return 0


def add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="run a sweep spec (TOML) on Ray and store its records")
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
    sw.add_argument("--metrics-host", default="127.0.0.1", help="address of the /metrics endpoint "
                    "(default 127.0.0.1)")
    sw.add_argument("--metrics-port", type=int, default=9464, help="its port (default 9464; 0: any free port)")
    sw.add_argument("--metrics-grace", type=float, default=None, metavar="S",
                    help=f"seconds the last values stay scrapeable after the sweep (default {GRACE:g} if "
                         "something scraped the endpoint during the sweep, else 0)")
    sw.add_argument("--pushgateway", metavar="URL", help="also push the final values to this Pushgateway, "
                    "grouped by sweep")
    sw.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
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
    from cluster.executor import RayExecutor
    from cluster.progress import Progress

    _check_port(args)
    paper.specs(args.quick)  # every spec loads and validates before Ray starts
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as err:
        raise ConfigError("out", f"a directory zonesim can create and write ({err.strerror})", args.out) from None
    exporter = _exporter(args, "paper", [])
    executor = RayExecutor(address=args.address, progress=exporter is not None)
    try:
        results, failed = paper.run_all(args.out, executor, args.quick, lambda name: [Progress(name)] + (
            [exporter.listener(name)] if exporter is not None else []), force=args.force)
    finally:
        executor.close()
    plots = _plots(results, args.out)
    rows = paper.summary(results)
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write(paper.report(rows, plots, args.quick))
    print(paper.summary_table(rows))
    print(f"\nreport: {path}; plots: {len(plots)} PNGs in {args.out}")
    if exporter is not None:
        _after_sweep(args, "paper", exporter)
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
    pp = sub.add_parser("paper", help="reproduce the paper's claims P1-P9: sweeps, report.md and plots")
    pp.add_argument("--quick", action="store_true", help="2 seeds and a quarter of the events (a few minutes)")
    pp.add_argument("--out", default="paper", metavar="DIR", help="where the sweeps, report and plots go "
                    "(default ./paper)")
    pp.add_argument("--address", help="Ray cluster to join (default: an embedded single-node Ray)")
    pp.add_argument("--metrics-host", default="127.0.0.1", help="address of the /metrics endpoint")
    pp.add_argument("--metrics-port", type=int, default=9464, help="its port (default 9464)")
    pp.add_argument("--metrics-grace", type=float, default=None, metavar="S",
                    help=f"seconds the endpoint stays up after the run (default {GRACE:g} if something scraped "
                         "it during the run, else 0)")
    pp.add_argument("--pushgateway", metavar="URL", help="push the final values to this Pushgateway")
    pp.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
    pp.add_argument("--force", action="store_true", help="a sweep whose spec changed: move its old records "
                    "aside and run it again")
    pp.set_defaults(func=cmd_paper)


# -- the service ----------------------------------------------------------------------------------


def _join_ray(address: str | None, embedded: bool = False) -> bool:
    """Join ``address``, else RAY_ADDRESS, else the cluster this machine runs (``ray start`` or a
    `zonesim serve` in the foreground); with ``embedded``, start one if there is none. Returns
    whether an embedded instance was started."""
    from cluster.executor import init_ray

    try:
        return init_ray(address, running_only=True)
    except ConnectionError:
        if not embedded:
            raise UsageError("no Ray cluster found: give --address, set RAY_ADDRESS, or start one "
                             "(`ray start --head`, or `zonesim serve` in another terminal)") from None
    return init_ray()


def _call(method, *args):
    """A coordinator call; the actor's ConfigError / StreamError / TraceError / StoreError come back as themselves."""
    import ray

    try:
        return ray.get(method.remote(*args))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ConfigError | StreamError | TraceError | StoreError):
            raise err.cause from None
        raise


def _show_status(rows: list[dict]) -> None:
    header = ("sweep", "state", "done", "failed", "directory")
    print("\n".join(table([header] + [(r["name"], r["state"], f"{r.get('done', 0)}/{r.get('total', 0)}",
                                       str(r.get("failed", 0)), r.get("directory", "")) for r in rows])))


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster import service

    if args.parallel < 1:
        raise ConfigError("parallel", "an integer >= 1", args.parallel)
    _check_port(args)
    embedded = _join_ray(args.address, embedded=True)
    metrics = None if args.no_metrics else (args.metrics_host, args.metrics_port)
    handle = service.start(os.path.abspath(args.root), args.parallel, metrics)
    running = _call(handle.ping)
    if running != os.path.abspath(args.root):  # get_if_exists: the cluster's service is already up
        raise ConfigError("root", f"a zonesim service already runs in this cluster, its sweeps under {running}; "
                          "submit to it, or give that root", args.root)
    if metrics:
        print(f"metrics: http://{args.metrics_host}:{args.metrics_port}/metrics (on the node running the actor)")
    print(f"zonesim service running ({service.NAMESPACE}/{service.NAME}), sweeps under {os.path.abspath(args.root)}")
    if not embedded:
        return 0  # the detached actor lives in the cluster
    print("embedded Ray: serving until interrupted (zonesim submit / status / cancel from another terminal)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster import service

    try:
        with open(args.spec, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("spec", f"a readable UTF-8 TOML file ({err})", args.spec) from None
    _join_ray(args.address)
    _show_status([_call(service.connect().submit, text, args.spec, args.force)])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cluster import service

    _join_ray(args.address)
    rows = _call(service.connect().status, args.sweep)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _show_status(rows)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from cluster import service

    _join_ray(args.address)
    _show_status([_call(service.connect().cancel, args.sweep)])
    return 0


def add_service_parsers(sub: argparse._SubParsersAction) -> None:
    address = {"help": "Ray cluster (default: RAY_ADDRESS, else the cluster running on this machine)"}
    sv = sub.add_parser("serve", help="run the sweep service: a named, detached Ray actor that queues sweeps")
    sv.add_argument("--address", **address)
    sv.add_argument("--root", default="sweeps", help="where the service keeps its sweeps (default ./sweeps)")
    sv.add_argument("--parallel", type=int, default=1, help="sweeps run at once (default 1)")
    sv.add_argument("--metrics-host", default="127.0.0.1", help="address of its /metrics endpoint (default 127.0.0.1)")
    sv.add_argument("--metrics-port", type=int, default=9465, help="its fixed port (default 9465)")
    sv.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
    sv.set_defaults(func=cmd_serve)
    sb = sub.add_parser("submit", help="queue a sweep spec on the service")
    sb.add_argument("spec", help="sweep spec file (TOML)")
    sb.add_argument("--address", **address)
    sb.add_argument("--force", action="store_true", help="a changed spec under an existing name: start over")
    sb.set_defaults(func=cmd_submit)
    st = sub.add_parser("status", help="the service's sweeps: state and progress")
    st.add_argument("sweep", nargs="?", help="one sweep (default: all)")
    st.add_argument("--address", **address)
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(func=cmd_status)
    cn = sub.add_parser("cancel", help="cancel a queued or running sweep (its records are kept)")
    cn.add_argument("sweep", help="sweep name")
    cn.add_argument("--address", **address)
    cn.set_defaults(func=cmd_cancel)


# -- the parser ----------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Simulate the kernel memory-mapping schemes of Bottomley, "
                    "OLS 2004 (stock 3G/1G, 4G/4G, unmapped page cache).")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,list,bench,trace,sweep,results,paper,serve,submit,status,cancel}")

    run = sub.add_parser("run", help="run one simulation and print its record")
    run.add_argument("--machine", help=f"machine preset (default {DEFAULTS['machine']}; see zonesim list)")
    run.add_argument("--policy", help=f"kernel mapping policy (default {DEFAULTS['policy']})")
    run.add_argument("--workload", help=f"event generator (default {DEFAULTS['workload']})")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a machine field, cost.NAME, policy or workload parameter (repeatable)")
    run.add_argument("--seed", type=int, help=f"the run's only randomness (default {DEFAULTS['seed']})")
    run.add_argument("--events", type=int, help="stream length, the same as --set events=N")
    run.add_argument("--engine", choices=sorted(ENGINES), default=DEFAULTS["engine"],
                     help=f"simulation engine (default {DEFAULTS['engine']})")
    run.add_argument("--json", action="store_true", help="print the record as JSON")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="show machines, costs, policies and workloads with their parameters")
    lst.set_defaults(func=cmd_list)

    b = sub.add_parser("bench", help="time the fast engine against the reference, one stream per machine")
    b.add_argument("--machine", action="append",
                   help="machine preset, repeatable (default: " + ", ".join(bench.DEFAULT_MACHINES) + ")")
    b.add_argument("--policy", action="append",
                   help="policy to bench, repeatable (default: every policy the machine runs)")
    b.add_argument("--events", type=int,
                   help=f"stream length (default {bench.DEFAULT_EVENTS}; with --generators {bench.GENERATOR_EVENTS})")
    b.add_argument("--repeat", type=int, default=1,
                   help="runs per engine, alternating; the best time of each is reported (default 1)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.add_argument("--generators", action="store_true",
                   help=f"time the workload generators instead (default {bench.GENERATOR_EVENTS} events each)")
    b.add_argument("--sweep", action="store_true", help="time the sweep driver on an embedded Ray against serial "
                   "runs and a multiprocessing.Pool")
    b.add_argument("--sims", type=int, default=64, help="with --sweep: simulations of about a second (default 64)")
    b.add_argument("--tiny", type=int, default=2000, help="with --sweep: tiny simulations (default 2000)")
    b.add_argument("--strace", nargs="?", const="", metavar="LOG",
                   help="time the strace importer instead, on LOG or on a fresh log of real programs")
    b.add_argument("--workload", action="append", help="with --generators: workload to time, repeatable "
                   "(default: all)")
    b.set_defaults(func=cmd_bench)

    add_trace_parser(sub)
    add_sweep_parsers(sub)
    add_service_parsers(sub)
    add_paper_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zonesim`` script; returns the exit code (2 for bad input)."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError, StreamError, TraceError, StoreError) as err:  # one line each
        message = " ".join(str(err).split())  # one line, whatever the message holds
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `zonesim list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush is quiet
        return 1
