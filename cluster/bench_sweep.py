"""``zonesim bench --sweep``: the sweep service's parallel efficiency and per-task overhead.

Three runs of the same list of simulations, in one invocation so the ratios come from one state
of a shared machine: serially in this process, through the driver on the embedded Ray that
``zonesim sweep`` uses (``EmbeddedRay``: started when the work is worth it, the driver working
meanwhile), and through a plain ``multiprocessing.Pool`` (the baseline that any distributed layer
must not lose to on one box). Then many tiny simulations, serially, through the same driver (which
does not start Ray for them, but shares them out with helper processes), through the driver on a
fresh Ray started at once (``--ray-start now``), and through a Pool. Every parallel side is timed
the same way, end to end from nothing: a clock starts before Ray is started as the Pool's starts
before it spawns its workers, and stops when Ray is shut down as the Pool's when its workers have
exited. Ray's start-up (``ray.init`` and a warm-up sweep) is reported apart, and so is each side's time on
workers already up (started, imports done, by a warm-up sweep of tiny simulations): the driver on a
Ray, and ``Pool.map``, for both lists. The two ratios say apart what Ray costs once (its daemons
starting beside the work) and what it costs per task.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass

from cluster.driver import run_sweep
from cluster.executor import RayExecutor
from cluster.executor_embedded import EmbeddedRay
from cluster.store import Store
from cluster.worker import run_one

# about a second each on the fast engine: the parisc passes run at about 2 M events/s
SECOND_SIM = {"machine": "pa8800", "policy": "unmapped", "workload": "mixed",
              "set": {"events": 2_000_000, "processes": 32, "shm": "64MiB"}}
TINY_SIM = {"machine": "pa8800", "policy": "unmapped", "workload": "io",
            "set": {"events": 300, "memory": "256MiB", "processes": 2, "anon_pages": 4, "pagecache": "1MiB",
                    "kmap_fraction": 0.0}}


@dataclass
class SweepBench:
    cpus: int
    sims: int
    serial_s: float
    ray_s: float  # end to end through the driver on EmbeddedRay, as zonesim sweep runs it
    pool_s: float
    speedup: float  # serial / ray: >= 1.8 wanted on 2 cores
    ray_vs_pool: float  # ray / pool, both end to end: <= 1.05 wanted
    ray_up_s: float  # when EmbeddedRay's Ray was up, seconds into ray_s (nan: never started)
    ray_ran_here: int  # simulations the driver ran itself while Ray started
    ray_down_s: float  # seconds EmbeddedRay's close took to shut Ray down (nan: never started)
    ray_startup_s: float  # a fresh Ray's ray.init and warm-up sweep, from the tiny forced run
    ray_warm_s: float  # the same simulations through the driver on a Ray already up
    pool_warm_s: float  # and through a Pool already up
    warm_ray_vs_pool: float  # ray_warm / pool_warm: what Ray costs per task, its start-up aside
    tiny_sims: int
    tiny_serial_s: float
    tiny_driver_s: float  # end to end through the driver on EmbeddedRay
    tiny_driver_started_ray: bool
    tiny_driver_beside: int  # of which its helper processes ran (the driver the rest, or Ray)
    tiny_ray_s: float  # end to end: a fresh Ray started at once, every simulation on its workers
    tiny_ray_warm_s: float  # the same sweep on a Ray already up
    tiny_pool_s: float  # end to end: a fresh Pool
    tiny_driver_vs_pool: float  # tiny_driver / tiny_pool: <= 1.5 wanted
    tiny_ray_vs_pool: float  # tiny_ray / tiny_pool
    overhead_ms: float  # extra CPU time per tiny simulation through the driver on a warm Ray: <= 5 wanted

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _configs(template: dict, n: int) -> list[dict]:
    return [{**template, "seed": seed} for seed in range(n)]


def _warm_up(cpus: int) -> list[dict]:
    """The tiny sweep that starts a side's workers and pays their imports before a timed run: four
    simulations per CPU, the same for Ray and the Pool so that their warm times compare."""
    return _configs(TINY_SIM, 4 * cpus)


def _serial(configs: list[dict]) -> float:
    start = time.perf_counter()
    for c in configs:
        assert run_one(c)["status"] == "ok"
    return time.perf_counter() - start


def _through_driver(configs: list[dict], executor) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(os.path.join(tmp, "bench"), "name = 'bench'\n", "bench")
        start = time.perf_counter()
        out = run_sweep(configs, store, executor)
        seconds = time.perf_counter() - start
        store.close()
    assert not out.failed and out.ran == len(configs)
    return seconds


def _ray(configs: list[dict], cpus: int) -> tuple[float, float, float]:
    """End to end on a fresh embedded Ray: (total seconds, of which start-up, the sweep alone).
    Start-up is ray.init and the ``_warm_up`` sweep (workers up, imports done), which a first real
    sweep would otherwise pay inside its own time."""
    start = time.perf_counter()
    executor = RayExecutor(num_cpus=cpus)
    try:
        _through_driver(_warm_up(cpus), executor)
        up = time.perf_counter() - start
        sweep = _through_driver(configs, executor)
    finally:
        executor.close()
    return time.perf_counter() - start, up, sweep


def _embedded(configs: list[dict], cpus: int) -> tuple[float, EmbeddedRay]:
    """End to end through the driver on a fresh EmbeddedRay: (seconds, the executor, which says
    where the simulations ran)."""
    start = time.perf_counter()
    executor = EmbeddedRay(num_cpus=cpus)
    try:
        _through_driver(configs, executor)
    finally:
        executor.close()
    return time.perf_counter() - start, executor


def _pool_map(pool, configs: list[dict]) -> float:
    start = time.perf_counter()
    assert all(e["status"] == "ok" for e in pool.map(run_one, configs, chunksize=1))
    return time.perf_counter() - start


def _pool(configs: list[dict], cpus: int) -> float:
    """End to end on a fresh Pool, from spawning its workers until they have exited."""
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(cpus) as pool:
        _pool_map(pool, configs)
    return time.perf_counter() - start


def _pool_warm(configs: list[dict], cpus: int) -> float:
    """The configs alone on a Pool already up: workers spawned and warmed by the same tiny sweep
    that ``_ray`` warms Ray's with."""
    with multiprocessing.get_context("spawn").Pool(cpus) as pool:
        _pool_map(pool, _warm_up(cpus))
        return _pool_map(pool, configs)


def bench_sweep(sims: int = 64, tiny: int = 2000, cpus: int | None = None) -> SweepBench:
    cpus = cpus or os.cpu_count() or 1
    big, small = _configs(SECOND_SIM, sims), _configs(TINY_SIM, tiny)
    serial = _serial(big)
    tiny_serial = _serial(small)
    ray_s, embedded = _embedded(big, cpus)
    pool_s = _pool(big, cpus)
    ray_warm = _ray(big, cpus)[2]
    pool_warm = _pool_warm(big, cpus)
    tiny_driver, tiny_embedded = _embedded(small, cpus)
    tiny_ray, startup, tiny_warm = _ray(small, cpus)
    tiny_pool = _pool(small, cpus)
    overhead = (tiny_warm * cpus - tiny_serial) / tiny * 1000
    up = embedded.up_at if embedded.up_at is not None else float("nan")
    down = embedded.down_s if embedded.down_s is not None else float("nan")
    return SweepBench(
        cpus, sims, serial, ray_s, pool_s, serial / ray_s, ray_s / pool_s, up, embedded.ran_here, down, startup,
        ray_warm, pool_warm, ray_warm / pool_warm,
        tiny, tiny_serial, tiny_driver, tiny_embedded.started_at is not None, tiny_embedded.ran_beside,
        tiny_ray, tiny_warm, tiny_pool,
        tiny_driver / tiny_pool, tiny_ray / tiny_pool, overhead)


def format_sweep_bench(b: SweepBench) -> str:
    ok = {True: "yes", False: "NO"}
    started = "started Ray" if b.tiny_driver_started_ray else "Ray not started"
    started += f"; {b.tiny_driver_beside} in a helper process"
    return "\n".join([
        f"sweep: {b.sims} simulations of about a second each on {b.cpus} CPUs, one invocation",
        f"  serial in-process   {b.serial_s:8.2f} s",
        f"  driver on Ray       {b.ray_s:8.2f} s   end to end, Ray up at {b.ray_up_s:.2f} s, shut down in "
        f"{b.ray_down_s:.2f} s ({b.ray_ran_here} simulations in the driver meanwhile); speedup {b.speedup:.2f}x "
        f"(>= 1.8: {ok[b.speedup >= 1.8]})",
        f"  multiprocessing     {b.pool_s:8.2f} s   end to end; Ray / Pool {b.ray_vs_pool:.3f} "
        f"(<= 1.05: {ok[b.ray_vs_pool <= 1.05]})",
        f"  on workers already up   driver on Ray {b.ray_warm_s:.2f} s, Pool {b.pool_warm_s:.2f} s: Ray / Pool "
        f"{b.warm_ray_vs_pool:.3f} (Ray's start-up aside)",
        f"tiny: {b.tiny_sims} simulations, serial {b.tiny_serial_s:.2f} s; Pool {b.tiny_pool_s:.2f} s end to end",
        f"  driver as zonesim sweep runs it {b.tiny_driver_s:.2f} s end to end ({started}): driver / Pool "
        f"{b.tiny_driver_vs_pool:.2f} (<= 1.5: {ok[b.tiny_driver_vs_pool <= 1.5]})",
        f"  driver on a fresh Ray started at once {b.tiny_ray_s:.2f} s end to end (start-up {b.ray_startup_s:.2f} s, "
        f"then {b.tiny_ray_warm_s:.2f} s on Ray once up): Ray / Pool {b.tiny_ray_vs_pool:.2f}; "
        f"{b.overhead_ms:.2f} ms extra CPU per simulation on a warm Ray (<= 5: {ok[b.overhead_ms <= 5]})",
    ])
