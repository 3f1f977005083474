"""``zonesim bench``: the fast engine against the reference engine on one event stream.

The stream is generated once and held as a list of batches, so generating it is charged to no
engine. Each engine then runs it through ``core.sim.simulate`` on a freshly resolved machine and
policy. An engine's clock starts when ``simulate`` begins reading the stream, i.e. after the
kernel state is built: at 64 GB building that state takes about as long as a few hundred thousand
events, so it is timed on its own (``boot_s``, one ``Kernel(machine, policy, 1)``) rather than
hidden in the events per second. Invariants are checked after the clock stops and timed on their
own too (``check_s``, on the fast engine's kernel). Its share is given two ways:
``check_share`` against the in-process parts of a fast run, generating the stream, booting,
simulating and checking (``generate_s + boot_s + events / fast_events_per_s + check_s``), and
``check_command_share`` against a whole ``zonesim run`` of the same config timed as a process from
start to exit (``command_s``: the interpreter's start-up, imports and the record included).

The two records must be identical; keys that differ are reported in ``mismatch``. With
``repeat`` > 1 the engines run that many times each, alternating, and each keeps its best time:
on a shared machine a run can lose a quarter of its speed to other tenants, and the best of a few
runs is the least disturbed measure of what the code costs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from core.events import Stream
from core.invariants import check_all
from core.kernel import Kernel
from core.machine import get_machine
from core.policy import POLICIES
from core.record import RECORD_KEYS, build_record
from core.sim import simulate
from core.state import state_arrays, state_bytes
from workloads.config import DEFAULTS, resolve

DEFAULT_EVENTS = 2_000_000  # past the set-up phase (shm and the first forks) into steady state
# The 64 GB x86 box and the next-generation PA-RISC box, each with every policy it runs.
DEFAULT_MACHINES = ("x86-pae-64g", "pa8800")


def default_policies(machine: str) -> tuple[str, ...]:
    arch = get_machine(machine).arch
    return tuple(name for name, p in POLICIES.items() if arch in p.arches)


@dataclass
class PolicyBench:
    """One policy's line: both engines on the same stream."""

    policy: str
    reference_events_per_s: float
    fast_events_per_s: float
    ratio: float  # fast / reference
    state_bytes_per_frame: float  # every array the kernel holds after the run (core.state), per frame
    state_arrays: dict[str, float]  # the same by array name, bytes per frame
    boot_s: float  # building the machine's kernel state: Kernel(machine, policy, 1)
    check_s: float  # core.invariants.check_all on the fast engine's kernel (best of ``repeat``)
    check_share: float  # check_s / (generate_s + boot_s + fast run + check_s): see the module docstring
    command_s: float  # a whole ``zonesim run`` of this config, a process from start to exit (best of ``repeat``)
    check_command_share: float  # check_s / command_s
    mismatch: list[str]  # record keys on which the engines disagree; empty when they agree


@dataclass
class Bench:
    machine: str
    workload: str
    seed: int
    events: int
    generate_s: float
    results: list[PolicyBench]
    repeat: int = 1  # runs per engine; the best time of each is reported

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class _Clocked:
    """Batches that note when they are first read: the moment ``simulate`` has finished booting."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches
        self.started = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        self.started = time.perf_counter()
        return iter(self.batches)


def _config(machine: str, policy: str, events: int, seed: int) -> dict[str, object]:
    return {"machine": machine, "policy": policy, "seed": seed, "set": {"events": events}}


def _engine_run(config: dict[str, object], batches: list[np.ndarray], max_handles: int,
                engine: str) -> tuple[dict[str, object], Kernel, float, float]:
    """Run the batches on a fresh machine and policy; the record, the kernel, the run's seconds
    and the invariant check's."""
    r = resolve(config)  # the stream it builds is never read: the batches stand in for it
    clocked = _Clocked(batches)
    k = simulate(r.machine, r.policy, Stream(clocked, max_handles), engine=engine, check=False)
    seconds = time.perf_counter() - clocked.started
    start = time.perf_counter()
    check_all(k)
    return build_record(k, r.identity), k, seconds, time.perf_counter() - start


def _boot_seconds(config: dict[str, object]) -> float:
    r = resolve(config)
    start = time.perf_counter()
    Kernel(r.machine, r.policy, 1)
    return time.perf_counter() - start


def _command_seconds(config: dict[str, object]) -> float:
    """A ``zonesim run`` of ``config`` as a user starts it: the interpreter, the imports, the
    stream, the simulation, the check and the record, until the process has exited."""
    argv = [sys.executable, "-m", "cluster", "run", "--machine", str(config["machine"]), "--policy",
            str(config["policy"]), "--seed", str(config["seed"]), "--events", str(config["set"]["events"])]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_policy(config: dict[str, object], batches: list[np.ndarray], max_handles: int,
                 repeat: int = 1, generate_s: float = 0.0) -> PolicyBench:
    """Both engines on ``batches`` under one policy (best of ``repeat`` alternating runs each), the
    boot time of its kernel state and the invariant check's time."""
    events = sum(len(b) for b in batches)
    ref, _, ref_s, _ = _engine_run(config, batches, max_handles, "reference")
    fast, k, fast_s, check_s = _engine_run(config, batches, max_handles, "fast")
    for _ in range(repeat - 1):
        ref_s = min(ref_s, _engine_run(config, batches, max_handles, "reference")[2])
        _, _, seconds, checked = _engine_run(config, batches, max_handles, "fast")
        fast_s, check_s = min(fast_s, seconds), min(check_s, checked)
    ref_rate, fast_rate = events / ref_s, events / fast_s
    boot_s = _boot_seconds(config)
    command_s = min(_command_seconds(config) for _ in range(repeat))
    return PolicyBench(
        policy=str(config["policy"]),
        reference_events_per_s=ref_rate,
        fast_events_per_s=fast_rate,
        ratio=fast_rate / ref_rate,
        state_bytes_per_frame=state_bytes(k) / k.machine.frames,
        state_arrays={name: n / k.machine.frames for name, n in state_arrays(k).items()},
        boot_s=boot_s,
        check_s=check_s,
        check_share=check_s / (generate_s + boot_s + fast_s + check_s),
        command_s=command_s,
        check_command_share=check_s / command_s,
        mismatch=[key for key in RECORD_KEYS if ref[key] != fast[key]],
    )


def run_bench(machine: str = str(DEFAULTS["machine"]), policies: Sequence[str] | None = None,
              events: int = DEFAULT_EVENTS, seed: int = 0, repeat: int = 1) -> Bench:
    """Generate one stream of the default workload, then bench every policy on it."""
    if events < 1:
        raise ConfigError("events", "an integer >= 1", events)
    if repeat < 1:
        raise ConfigError("repeat", "an integer >= 1", repeat)
    policies = policies or default_policies(machine)
    configs = [_config(machine, p, events, seed) for p in policies]
    first = resolve(configs[0])  # also rejects a bad machine name before any work is done
    for config in configs[1:]:
        resolve(config)  # and a bad policy name
    start = time.perf_counter()
    batches = list(first.stream)
    generate_s = time.perf_counter() - start
    results = [bench_policy(c, batches, first.stream.max_handles, repeat, generate_s) for c in configs]
    return Bench(machine=first.machine.name, workload=str(first.identity["workload"]), seed=seed,
                 events=sum(len(b) for b in batches), generate_s=generate_s, results=results, repeat=repeat)


def format_bench(b: Bench) -> str:
    """The report as an aligned table, one line per policy."""
    best = f", best of {b.repeat} runs per engine" if b.repeat > 1 else ""
    head = (f"{b.machine}, workload {b.workload}, seed {b.seed}: {b.events} events "
            f"(generated in {b.generate_s:.2f} s, not timed below{best})")
    columns = ("policy", "reference ev/s", "fast ev/s", "fast/ref", "state B/frame", "boot s", "check ms",
               "check/run", "zonesim run s", "check/command")
    rows = [columns] + [
        (r.policy, f"{r.reference_events_per_s:,.0f}", f"{r.fast_events_per_s:,.0f}", f"{r.ratio:.1f}x",
         f"{r.state_bytes_per_frame:.2f}", f"{r.boot_s:.2f}", f"{r.check_s * 1e3:.1f}",
         f"{r.check_share:.1%}", f"{r.command_s:.2f}", f"{r.check_command_share:.1%}")
        for r in b.results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [head] + ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                enumerate(zip(row, widths, strict=True))) for row in rows]
    return "\n".join(lines)


# -- generators ----------------------------------------------------------------------------------

GENERATOR_EVENTS = 4_000_000  # past every generator's prologue
GENERATOR_TARGET = 10_000_000  # events per second: generation must not be what a run waits for


@dataclass
class GeneratorBench:
    workload: str
    events: int
    seconds: float  # best of ``repeat`` runs
    events_per_s: float


def bench_generators(names: Sequence[str] | None = None, events: int = GENERATOR_EVENTS,
                     repeat: int = 1, machine: str = str(DEFAULTS["machine"])) -> list[GeneratorBench]:
    """Each workload's stream (its default parameters on ``machine``) generated to the end and
    thrown away; the best time of ``repeat`` runs."""
    from workloads import WORKLOADS

    if events < 1:
        raise ConfigError("events", "an integer >= 1", events)
    out = []
    for name in names or list(WORKLOADS):
        config = {"machine": machine, "workload": name, "set": {"events": events}}
        resolve(config)  # a bad name fails before any timing
        best, count = float("inf"), 0
        for _ in range(repeat):
            start = time.perf_counter()
            count = sum(b.size for b in resolve(config).stream)
            best = min(best, time.perf_counter() - start)
        out.append(GeneratorBench(name, count, best, count / best))
    return out


def format_generators(results: Sequence[GeneratorBench], repeat: int) -> str:
    best = f", best of {repeat} runs" if repeat > 1 else ""
    rows = [("workload", "events", "seconds", "M events/s", f">= {GENERATOR_TARGET / 1e6:.0f} M/s")]
    rows += [(r.workload, f"{r.events:,}", f"{r.seconds:.3f}", f"{r.events_per_s / 1e6:.1f}",
              "yes" if r.events_per_s >= GENERATOR_TARGET else "NO") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"generators: each workload's default stream generated and discarded{best}"]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
              for row in rows]
    return "\n".join(lines)


# -- strace import -------------------------------------------------------------------------------

STRACE_LINES = 200_000
STRACE_TARGET = 100_000  # lines per second


def make_strace_log(directory: str, lines: int = STRACE_LINES) -> str:
    """A log of real programs (tar over zonesim's own sources, sort, a Python script that forks),
    traced now with `strace -f -tt`, repeated until it has ``lines`` lines."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("strace") is None:
        raise ConfigError("strace", "the strace program on PATH (Debian package strace)")
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = os.path.join(directory, "numbers")
    with open(data, "w") as f:
        f.write("\n".join(str((i * 7919) % 100_003) for i in range(50_000)))
    programs = [["tar", "-cf", os.path.join(directory, "src.tar"), "-C", src, "core", "workloads", "cluster"],
                ["sort", "--parallel=1", "-o", os.path.join(directory, "sorted"), data],
                [sys.executable, "-c", "import os, subprocess; subprocess.run(['cat', os.devnull]); "
                 f"open({data!r}).read()"]]
    one = []
    for i, argv in enumerate(programs):
        log = os.path.join(directory, f"{i}.log")
        subprocess.run(["strace", "-f", "-tt", "-o", log, *argv], check=True, capture_output=True)
        with open(log) as f:
            one += f.read().splitlines(keepends=True)
    path = os.path.join(directory, "bench.log")
    with open(path, "w") as f:
        written = 0
        while written < lines:
            f.writelines(one)
            written += len(one)
    return path


def bench_strace(log: str | None = None, repeat: int = 1) -> dict[str, object]:
    """`trace from-strace`'s conversion of ``log`` (or of a fresh log of real programs), best of
    ``repeat`` runs."""
    import tempfile

    from workloads import strace

    with tempfile.TemporaryDirectory() as tmp:
        path = log or make_strace_log(tmp)
        runs = [strace.bench_strace(path) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    return {"log": log or "generated: tar, sort, python under strace -f -tt", **best}
