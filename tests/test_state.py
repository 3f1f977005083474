"""The state zonesim reports is all the state it holds: every byte of NumPy memory a finished run
keeps alive is one of the arrays ``core.state`` names (tracemalloc sees NumPy's allocations in
its own domain), so an array added anywhere without being reachable from the kernel fails here."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from core.sim import simulate
from core.state import state_arrays, state_bytes
from workloads.config import resolve

CASES = [("pa8800", "stock"), ("pa8800", "unmapped"), ("pa8700", "unmapped"), ("x86-pae-64g", "stock"),
         ("x86-pae-64g", "4g4g"), ("x86-pae-64g", "unmapped")]


def numpy_bytes(snapshot: tracemalloc.Snapshot) -> int:
    traces = snapshot.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)])
    return sum(stat.size for stat in traces.statistics("filename"))


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("machine, policy", CASES)
def test_every_array_a_run_keeps_is_counted(machine: str, policy: str, engine: str) -> None:
    memory = "1GiB" if machine.startswith("pa") else "4GiB"
    r = resolve({"machine": machine, "policy": policy, "workload": "mixed", "engine": engine,
                 "set": {"events": 30_000, "memory": memory, "shm": "64MiB", "processes": 16}})
    gc.collect()
    tracemalloc.start()
    try:
        before = numpy_bytes(tracemalloc.take_snapshot())
        k = simulate(r.machine, r.policy, r.stream, engine=engine)
        del r
        gc.collect()
        held = numpy_bytes(tracemalloc.take_snapshot()) - before
    finally:
        tracemalloc.stop()
    counted = state_bytes(k)
    assert abs(held - counted) < 256, f"{held - counted} bytes of arrays held outside {sorted(state_arrays(k))}"
    assert counted >= k.machine.frames  # page_flags alone


def test_views_and_shared_arrays_count_once() -> None:
    a = np.zeros(1000, dtype=np.int64)
    arrays = state_arrays({"a": a, "view": a[10:], "again": [a]}, "x")
    assert arrays == {"x['again'][0]": a.nbytes} or (len(arrays) == 1 and sum(arrays.values()) == a.nbytes)
