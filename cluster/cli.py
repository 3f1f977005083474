"""The ``zonesim`` command line: run one simulation, list what can be simulated, bench the engines,
record and inspect event traces; the parser of every subcommand, and ``main``. Sweeps, results and
the paper are ``cluster.cli_sweep``'s, the service's commands ``cluster.cli_service``'s, and what
they all share (the one-line usage error, the metrics flags) ``cluster.cli_base``'s.

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
from collections.abc import Sequence

from cluster import bench, cli_service, cli_sweep
from cluster.cli_base import PROG, Parser, UsageError
from cluster.store import StoreError
from cluster.text import show_value, table
from core import machine as machines
from core import policy as policies
from core.errors import ConfigError, StreamError
from core.sim import ENGINES, run
from workloads import WORKLOADS
from workloads.config import DEFAULTS, inside_setup, resolve
from workloads.errors import TraceError
from workloads.trace import trace_info, write_trace

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
    cli_sweep.add_sweep_parsers(sub)
    cli_service.add_service_parsers(sub)
    cli_sweep.add_paper_parser(sub)
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
