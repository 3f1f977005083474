"""The embedded Ray started on demand (``cluster.executor_embedded.EmbeddedRay``): a sweep worth
less than Ray's start-up runs in the driver's process and never starts it; one worth more starts
Ray in the background, keeps working meanwhile and hands the rest to Ray's workers. Wherever a
simulation runs its record is the same. Real Ray, started and stopped by each test that needs it."""

from __future__ import annotations

import json
import os

import pytest
import ray
from conftest import children, run_cli
from test_driver import configs, store

from cluster.driver import run_sweep
from cluster.executor import LocalExecutor, RayExecutor, _stop_autoscaler_monitor
from cluster.executor_embedded import EmbeddedRay

pytestmark = pytest.mark.ray

# about a fifth of a second each (the reference engine; half that at 40,000 events on stop 28's
# machine, on which 32 of them finished before Ray was up): some run in the driver while Ray
# starts, the rest on its workers
SLOW = {"machine": "x86-pae-64g", "policy": "stock", "workload": "mixed", "engine": "reference",
        "set": {"events": 80000, "processes": 4, "anon_pages": 16, "shm": "8MiB", "pagecache": "8MiB", "files": 256}}


def records(s) -> dict[str, dict]:
    return {e["key"]: e["record"] for e in s.entries() if e["status"] == "ok"}


def seen(here_s: float, fastest: float, latest: float, start_after_s: float = 8.0, ran: int = 2,
         left: int = 0) -> EmbeddedRay:
    """An EmbeddedRay (never started) whose driver has run ``ran`` simulations in ``here_s``
    seconds, the fastest at ``fastest`` seconds each and the latest task at ``latest``, with
    ``left`` not finished."""
    executor = EmbeddedRay(num_cpus=2, start_after_s=start_after_s)
    executor._here_s, executor._fastest, executor._latest = here_s, fastest, latest
    executor.ran_here, executor._left = ran, left
    return executor


def test_ray_is_not_started_on_the_first_few_readings_of_tiny_simulations() -> None:
    """Two tiny simulations read at twice their cost (10 s for 2,000 of them) are no estimate;
    half a second of them, at their real cost (4.8 s), is, and does not pass the threshold."""
    assert not seen(0.01, 0.005, 0.005).worth_starting(2000)
    assert not seen(0.6, 0.0024, 0.0025).worth_starting(2000)
    assert seen(0.6, 0.0024, 0.0025).worth_starting(4000)  # 9.6 s left


def test_ray_starts_once_the_work_left_passes_the_threshold() -> None:
    assert seen(1.0, 1.0, 1.0).worth_starting(63)
    assert not seen(1.0, 1.0, 1.0).worth_starting(7)
    assert seen(0.0, float("inf"), float("inf"), start_after_s=0.0).worth_starting(1)
    assert not seen(60.0, 1.0, 1.0, start_after_s=float("inf")).worth_starting(10**6)


def test_after_the_threshold_the_latest_rate_counts_but_only_for_work_still_worth_it() -> None:
    """Later configs far costlier than the first start Ray once the driver has worked the
    threshold; a sweep near its end, with less than that left at the latest rate, does not."""
    assert seen(8.5, 0.002, 0.5).worth_starting(100)  # 50 s left at the latest rate
    assert not seen(7.5, 0.002, 0.5).worth_starting(100)  # (the driver has not worked 8 s yet)
    assert not seen(8.5, 0.0024, 0.003).worth_starting(300)  # 0.9 s left


def test_helpers_are_spawned_on_two_readings_for_more_than_a_second_of_work() -> None:
    """A first simulation pays its imports (83 ms against 21-27 ms): 39 more at that rate would pass
    a second, at the second's rate they do not; a thousand tiny ones do."""
    assert not seen(0.083, 0.083, 0.083, ran=1, left=39).helpers_worth_it()
    assert not seen(0.104, 0.021, 0.021, ran=2, left=38).helpers_worth_it()
    assert seen(0.03, 0.0023, 0.0023, ran=2, left=998).helpers_worth_it()


def test_a_sweep_worth_less_than_rays_start_up_runs_in_the_driver(tmp_path) -> None:
    executor = EmbeddedRay(num_cpus=2)
    s = store(tmp_path)
    try:
        out = run_sweep(configs(40), s, executor)
    finally:
        executor.close()
    assert out.ran == 40 and not out.failed
    assert executor.started_at is None and not ray.is_initialized()
    assert executor.ran_here + executor.ran_beside == 40 and executor.ran_on_ray == 0
    assert executor.describe().startswith(f"ray: not started ({executor.ran_here} simulations ran in the driver")
    local = store(tmp_path, "local")
    run_sweep(configs(40), local, LocalExecutor())
    assert records(s) == records(local)


def test_a_sweep_worth_a_spawn_but_not_ray_shares_out_with_a_helper_process(tmp_path) -> None:
    """Three seconds of work: a helper process takes tasks beside the driver, the records are the
    driver's own, and close leaves no helper running."""
    sims = [{**SLOW, "seed": seed} for seed in range(12)]
    before = children(os.getpid())
    executor = EmbeddedRay(num_cpus=2)
    s = store(tmp_path)
    try:
        out = run_sweep(sims, s, executor)
        # (spawn_main: the helpers, not the resource tracker that multiprocessing keeps for the process)
        helpers = {pid for pid, cmd in children(os.getpid()).items() if pid not in before and "spawn_main" in cmd}
    finally:
        executor.close()
    assert out.ran == 12 and not out.failed and executor.started_at is None
    assert executor.ran_here > 0 and executor.ran_beside > 0 and executor.ran_here + executor.ran_beside == 12
    assert f"{executor.ran_beside} in its helper processes" in executor.describe()
    assert helpers and not helpers & set(children(os.getpid())), "a helper outlived close"
    local = store(tmp_path, "local")
    run_sweep(sims, local, LocalExecutor())
    assert records(s) == records(local)


class WaitForRay:
    """A listener whose turns, once Ray is asked for, wait until it is up."""

    def __init__(self, executor: EmbeddedRay) -> None:
        self.executor = executor

    def tick(self) -> None:
        if self.executor.started_at is not None:
            assert self.executor._up.wait(120)


class KillHelpers:
    """A listener that SIGKILLs the helper processes the first turn a task is under way on one."""

    def __init__(self, executor: EmbeddedRay) -> None:
        self.executor, self.killed = executor, 0

    def tick(self) -> None:
        helpers = self.executor._helpers
        under_way = any(not future.done() for future in helpers.running.values())
        if not self.killed and under_way and helpers._pool is not None:
            for process in list(helpers._pool._processes.values()):
                process.kill()
                self.killed += 1


def test_a_helper_that_dies_has_its_task_retried_in_the_driver(tmp_path) -> None:
    sims = [{**SLOW, "seed": seed} for seed in range(12)]
    executor = EmbeddedRay(num_cpus=2)
    killer = KillHelpers(executor)
    s = store(tmp_path)
    try:
        out = run_sweep(sims, s, executor, listeners=[killer])
    finally:
        executor.close()
    assert killer.killed and executor._helpers.broken
    assert out.ran == 12 and not out.failed and out.retried >= 1
    assert executor.ran_here == 12 - executor.ran_beside
    local = store(tmp_path, "local")
    run_sweep(sims, local, LocalExecutor())
    assert records(s) == records(local)


def test_a_sweep_worth_more_starts_ray_and_hands_it_the_rest(tmp_path) -> None:
    """With a 1 s threshold, 32 fifth-of-a-second simulations (about 6 s of work) start Ray once
    half a second of them gives an estimate; the driver runs more while Ray starts (and a helper
    may have taken a task before), Ray's workers the rest. (Once Ray is asked for, the driver's
    turns wait for it to be up, so that a fast machine cannot finish first.)"""
    sims = [{**SLOW, "seed": seed} for seed in range(32)]
    executor = EmbeddedRay(num_cpus=2, start_after_s=1.0)
    s = store(tmp_path)
    try:
        out = run_sweep(sims, s, executor, listeners=[WaitForRay(executor)])
        assert ray.is_initialized()
    finally:
        executor.close()
    assert out.ran == 32 and not out.failed and not ray.is_initialized()
    assert executor.started_at is not None and executor.up_at is not None and executor.up_at > executor.started_at
    assert executor.ran_here >= 2 and executor.ran_on_ray > 0
    assert executor.ran_here + executor.ran_beside + executor.ran_on_ray == 32
    assert "simulations ran on its workers" in executor.describe()
    local = store(tmp_path, "local")
    run_sweep(sims, local, LocalExecutor())
    assert records(s) == records(local)


def test_the_tasks_waiting_go_to_ray_the_moment_it_is_up_not_at_the_drivers_next_call() -> None:
    """Ray comes up while the driver is busy with a simulation of its own: the tasks waiting are
    sent then by the thread that started Ray, so they run while the driver makes no call at all."""
    executor = EmbeddedRay(num_cpus=2, start_after_s=0.0)
    try:
        handles = [executor.submit([{**SLOW, "seed": seed}]) for seed in range(3)]
        executor.backlog(3)  # (0 s of work already passes a 0 s threshold: Ray starts now)
        assert executor._up.wait(120) and executor._failed is None
        assert not executor._here and sorted(executor._remote) == handles
        ray.wait(list(executor._remote.values()), num_returns=3, timeout=120)  # the driver calls nothing
        assert sorted(executor.wait(handles, timeout=0)) == handles
        assert all(e["status"] == "ok" for h in handles for e in executor.result(h))
    finally:
        executor.close()
    assert (executor.ran_here, executor.ran_on_ray) == (0, 3)


def test_the_cli_says_where_a_sweep_ran_and_the_records_do_not_depend_on_it(tmp_path) -> None:
    spec = tmp_path / "tiny.toml"
    spec.write_text('name = "tiny"\nseeds = 6\n[base]\nmachine = "pa8800"\nworkload = "io"\n'
                    '[base.set]\nevents = 20000\nprocesses = 4\nanon_pages = 16\npagecache = "32MiB"\n')
    auto = run_cli("sweep", str(spec), "--out", str(tmp_path / "auto"), "--no-metrics", timeout=300)
    now = run_cli("sweep", str(spec), "--out", str(tmp_path / "now"), "--no-metrics", "--ray-start", "now",
                  timeout=300)
    assert auto.returncode == now.returncode == 0, auto.stderr + now.stderr
    assert "ray: not started (" in auto.stderr
    assert "ray:" not in now.stderr  # every simulation on Ray's workers: nothing to say

    def cells(directory: str) -> list[dict]:
        out = run_cli("results", str(tmp_path / directory), "--format", "json", "--keys", "all")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["cells"]

    assert cells("auto") == cells("now")
    bad = run_cli("sweep", str(spec), "--out", str(tmp_path / "bad"), "--ray-start", "later")
    assert bad.returncode == 2 and "--ray-start" in bad.stderr and "Traceback" not in bad.stderr


def test_an_embedded_ray_works_at_the_drivers_priority_and_close_stops_what_it_started() -> None:
    """Workers at nice 0, as the driver that runs tasks beside them; the autoscaler monitor is
    gone once ``_stop_autoscaler_monitor`` returns, with the rest of the instance still up (so
    shutdown need not wait out its SIGTERM); and every process the instance started is gone once
    ``close`` returns."""
    before = children(os.getpid())
    executor = RayExecutor(num_cpus=1)
    try:
        assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0  # a lambda: pickled by value
        started = {pid: cmd for pid, cmd in children(os.getpid()).items() if pid not in before}
        monitors = {pid for pid, cmd in started.items() if "monitor.py" in cmd and "log_monitor" not in cmd}
        assert monitors, started
        _stop_autoscaler_monitor(ray)
        left = children(os.getpid())
        assert not monitors & set(left) and set(started) - monitors <= set(left)
    finally:
        executor.close()
    assert not set(started) & set(children(os.getpid())), "still running after close"
