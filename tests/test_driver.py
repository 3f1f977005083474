"""The driver loop with the in-process executor: fast, no Ray. Real Ray is in tests/test_sweep_ray.py."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster.cli import main
from cluster.driver import Options, run_sweep
from cluster.executor import LocalExecutor, WorkerDied
from cluster.store import Store, StoreError
from cluster.sweep import load_spec, run_spec
from workloads.config import config_key

ROOT = Path(__file__).resolve().parent.parent

TINY = {"events": 3000, "processes": 4, "anon_pages": 8, "shm": "4MiB", "pagecache": "8MiB", "files": 256}


def configs(n: int, **extra: object) -> list[dict]:
    return [{"machine": "pa8800", "policy": "unmapped", "workload": "mixed", "seed": s, "set": {**TINY, **extra}}
            for s in range(n)]


def store(tmp_path, name: str = "s") -> Store:
    return Store.open(str(tmp_path / name), "name = 'test'\n", "digest-1")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, total: int, already: int) -> None:
        self.events.append(("start", total, already))

    def update(self, entries: list[dict]) -> None:
        self.events.append(("update", len(entries)))

    def tick(self) -> None:
        pass

    def finish(self, outcome) -> None:
        self.events.append(("finish", outcome.ran))


def test_every_config_is_recorded_once_and_a_rerun_runs_nothing(tmp_path) -> None:
    s, rec = store(tmp_path), Recorder()
    out = run_sweep(configs(6), s, LocalExecutor(slots=2), listeners=[rec])
    assert (out.total, out.already, out.ran, out.failed) == (6, 0, 6, [])
    assert s.done() == {config_key(c) for c in configs(6)}
    assert rec.events[0] == ("start", 6, 0) and rec.events[-1] == ("finish", 6)
    assert sum(n for kind, n, *_ in rec.events if kind == "update") == 6
    s.close()
    again, resumed = store(tmp_path), []

    class Resumed(Recorder):
        def resumed(self, entries: list[dict]) -> None:
            resumed.extend(entries)

    out = run_sweep(configs(8), again, LocalExecutor(), listeners=[Resumed()])
    assert (out.already, out.ran) == (6, 2)  # only the two new seeds
    assert sorted(e["config"]["seed"] for e in resumed) == list(range(6))  # what was there, told once


def test_a_simulation_that_raises_is_a_failed_entry_and_the_sweep_goes_on(tmp_path) -> None:
    bad = {"machine": "x86-pae-64g", "workload": "trace:/nonexistent/zonesim.trace", "seed": 0, "set": {}}
    s = store(tmp_path)
    out = run_sweep([bad, *configs(2)], s, LocalExecutor())
    assert out.ran == 3 and len(out.failed) == 1
    [failed] = out.failed
    assert failed["status"] == "failed" and "TraceError" in failed["error"] and "/nonexistent" in failed["error"]
    assert len(s.done()) == 2


class Dying(LocalExecutor):
    """Workers die on the first ``deaths`` results."""

    def __init__(self, deaths: int) -> None:
        super().__init__()
        self.deaths = deaths

    def result(self, handle: int) -> list[dict]:
        entries = super().result(handle)
        if self.deaths:
            self.deaths -= 1
            raise WorkerDied("WorkerCrashedError: killed")
        return entries


def test_configs_of_a_dead_worker_are_retried_and_attempts_recorded(tmp_path) -> None:
    s = store(tmp_path)
    out = run_sweep(configs(3), s, Dying(deaths=2), Options(retries=2))
    assert out.failed == [] and len(s.done()) == 3 and out.retried == 2
    attempts = sorted(e["attempts"] for e in s.entries())
    assert attempts == [1, 1, 3] or attempts == [1, 2, 2]


def test_past_its_retries_a_config_is_recorded_as_failed(tmp_path) -> None:
    s = store(tmp_path)
    out = run_sweep(configs(1), s, Dying(deaths=5), Options(retries=1))
    [failed] = out.failed
    assert failed["error"].startswith("worker died 2 times") and failed["attempts"] == 2
    assert s.done() == set()


def test_stop_cancels_what_is_in_flight(tmp_path) -> None:
    s = store(tmp_path)
    calls = iter([False, True])
    out = run_sweep(configs(10), s, LocalExecutor(), Options(max_in_flight=1), stop=lambda: next(calls, True))
    assert out.cancelled and out.ran == 1 and len(s.done()) == 1


def test_batches_grow_for_tiny_simulations(tmp_path) -> None:
    sizes = []

    class Counting(LocalExecutor):
        def submit(self, batch):
            sizes.append(len(batch))
            return super().submit(batch)

    run_sweep(configs(40, events=500), store(tmp_path), Counting(slots=1), Options(target_task_s=10.0))
    assert sizes[0] == 1 and max(sizes) > 1 and sum(sizes) == 40


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(f) for name, f in vars(cls).items()
            if callable(f) and not name.startswith("_")}


def test_every_listener_and_executor_speaks_the_drivers_protocols() -> None:
    """The driver asks a listener only for the verbs it has, so a misspelt or mis-signed verb would
    never be called and nothing would fail: every listener's public methods must be Listener verbs
    with their parameters, and every executor must have every Executor verb."""
    from cluster.driver import Executor, Listener, ReportsProgress, ScalesOut
    from cluster.executor import RayExecutor
    from cluster.executor_embedded import EmbeddedRay
    from cluster.metrics import SweepListener
    from cluster.progress import Progress
    from cluster.service import _Counts

    verbs = _public(Listener)
    for listener in (SweepListener, Progress, _Counts, Recorder):
        for name, signature in _public(listener).items():
            assert name in verbs, f"{listener.__name__}.{name} is no Listener verb"
            assert list(signature.parameters) == list(verbs[name].parameters), f"{listener.__name__}.{name}"
    wanted = _public(Executor)
    for executor in (LocalExecutor, RayExecutor, EmbeddedRay):
        have = _public(executor)
        for name, signature in wanted.items():
            assert name in have and list(have[name].parameters) == list(signature.parameters), \
                f"{executor.__name__}.{name}"
    assert isinstance(RayExecutor.__new__(RayExecutor), ReportsProgress)
    assert not isinstance(LocalExecutor(), ReportsProgress)
    assert isinstance(EmbeddedRay(), ReportsProgress) and isinstance(EmbeddedRay(), ScalesOut)
    assert list(_public(EmbeddedRay)["backlog"].parameters) == list(_public(ScalesOut)["backlog"].parameters)


def test_every_verb_the_driver_tells_is_a_listener_verb() -> None:
    """The other side of the protocol: a ``_hook(listeners, "name", ...)`` in the driver with a
    name no Listener verb has (or the wrong number of arguments) would be asked of no listener and
    fail nowhere. Read from driver.py's source: every call names a verb, and every verb is told
    (and a ``hasattr(listener, "name")`` asks for a verb)."""
    import ast

    from cluster import driver

    verbs = _public(driver.Listener)
    told = set()
    for node in ast.walk(ast.parse(Path(driver.__file__).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_hook":
            name = node.args[1]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str), \
                f"driver.py:{node.lineno}: a _hook verb must be a string literal to be checked"
            assert name.value in verbs, f"driver.py:{node.lineno}: {name.value} is no Listener verb"
            assert len(node.args) - 2 == len(verbs[name.value].parameters) - 1, f"driver.py:{node.lineno}"
            told.add(name.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr" \
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "listener":
            assert node.args[1].value in verbs, f"driver.py:{node.lineno}: asks a listener for no Listener verb"
    assert told == set(verbs)


SWEEP = """
import sys
from cluster.driver import Options
from cluster.executor import LocalExecutor
from cluster.sweep import load_spec, run_spec
run_spec(load_spec(sys.argv[1]), sys.argv[2], LocalExecutor(), Options(target_task_s=0.001))  # a record a task
"""


def stored(directory: Path) -> int:
    try:
        return len(Store.read(str(directory)))
    except StoreError:  # not created yet
        return 0


def results(directory: Path, capsys) -> str:
    """What `zonesim results DIR --format json --keys all` prints."""
    assert main(["results", str(directory), "--format", "json", "--keys", "all"]) == 0
    return capsys.readouterr().out


def test_a_driver_killed_mid_sweep_and_resumed_gives_the_aggregates_of_an_uninterrupted_run(tmp_path, capsys):
    """Issue 17's acceptance test: a real sweep process SIGKILLed once its store holds some records."""
    path = tmp_path / "spec.toml"
    path.write_text('name = "killed"\nseeds = 12\nbaseline = "stock"\n[base]\nmachine = "pa8800"\n'
                    '[base.set]\n' + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items()) +
                    '[grid]\npolicy = ["stock", "unmapped"]\n')
    spec = load_spec(str(path))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", SWEEP, str(path), str(killed)], cwd=ROOT, env=env) as sweep:
        deadline = time.monotonic() + 60
        while stored(killed) < 3 and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        sweep.send_signal(signal.SIGKILL)
    before = {e["key"]: e for e in Store.read(str(killed)).entries()}
    assert 3 <= len(before) < 24, len(before)
    out = run_spec(spec, str(killed), LocalExecutor(), resume=True)
    assert (out.total, out.already, out.ran) == (24, len(before), 24 - len(before))  # only the missing ones
    after = list(Store.read(str(killed)).entries())
    assert sorted(e["key"] for e in after) == sorted(config_key(c) for c in spec.configs())  # each once
    assert [e for e in after if e["key"] in before] == list(before.values())  # the earlier records untouched
    clean = run_spec(spec, str(tmp_path / "clean"), LocalExecutor())
    assert (clean.ran, clean.failed) == (24, [])
    shown = results(killed, capsys)
    assert [c["n"] for c in json.loads(shown)["cells"]] == [12, 12]
    assert shown == results(tmp_path / "clean", capsys)
