"""Differential tests on the PA-RISC machines: the fast engine's parisc passes against the scalar
verbs of ``core.parisc``, on generated streams, long seeded streams and the mixed workload.

Besides the default policies, the variants switch the paper's techniques off one at a time, break
stock's flush_dcache_page, and shrink the kernel window until kmap_kernel's colour buckets fill (a
4-colour machine with one slot per colour and pool), so the exhaustion fallback, the stale-read
paths and the scalar pool path are all reached.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from streams import interpret
from test_differential import (
    CUTS,
    EXAMPLES,
    assert_no_differences,
    engine_differences,
    op_lists,
    random_batches,
    seeds_reaching,
    split,
)

from core import events as E
from core.events import ev, make_batch
from core.machine import Machine, get_machine, with_overrides
from core.policy import Policy, get_policy
from workloads import get_workload

MACHINES = {
    "pa-1024": {"memory": "64MiB"},
    "pa-4": {"memory": "64MiB", "congruence_stride": "16KiB"},
}
VARIANTS = {
    "stock": ("stock", {}),
    "stock-broken": ("stock", {"flush_dcache_page": "false"}),
    "unmapped": ("unmapped", {}),
    "unmapped-window": ("unmapped", {"kernel_window": "2x"}),  # two strides: one row per pool
    "unmapped-no-congruence": ("unmapped", {"congruent_kmap": "false", "equivalent_kernel": "false"}),
    "unmapped-deferred": ("unmapped", {"defer_dcache_flush": "true"}),
    "unmapped-deferred-kernel-index": ("unmapped", {"defer_dcache_flush": "true", "user_coherence_index": "false",
                                                    "congruent_kmap": "false"}),
    "unmapped-kernel-index": ("unmapped", {"user_coherence_index": "false", "flush_on_free": "false",
                                           "variable_pages": "false"}),
}
HARD = ("congruence_exhaustions", "stale_reads", "alias_violations", "alloc_failures", "cache_flush_all")


@cache
def machine(name: str) -> Machine:
    return with_overrides(get_machine("pa8800"), MACHINES[name])


@cache
def policy(variant: str, machine_name: str) -> Policy:
    name, settings_ = VARIANTS[variant]
    m = machine(machine_name)
    if settings_.get("kernel_window") == "2x":
        settings_ = {**settings_, "kernel_window": str(2 * m.congruence_stride)}
    return get_policy(name, m, settings_)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=op_lists(), cuts=CUTS, variant=st.sampled_from(sorted(VARIANTS)),
       machine_name=st.sampled_from(sorted(MACHINES)), max_handles=st.sampled_from([8, 64, 1024]),
       max_order=st.sampled_from([1, 3, 10]))
def test_engines_agree_on_generated_streams(ops, cuts, variant, machine_name, max_handles, max_order):
    m, p = machine(machine_name), policy(variant, machine_name)
    events = interpret(ops, max_handles, m.cpus, max_order)
    rec, problems = engine_differences(m, p, split(events, cuts, max_handles), max_handles)
    for key in HARD:
        if rec[key]:
            event(key)
    assert_no_differences(problems)


SEEDS = range(24)


def seeded_case(seed: int) -> tuple[Machine, Policy, list[np.ndarray], int]:
    rng = np.random.default_rng(1000 + seed)
    machine_name = sorted(MACHINES)[seed % len(MACHINES)]
    variant = sorted(VARIANTS)[seed % len(VARIANTS)]
    max_handles = int(rng.choice([64, 512]))
    m = machine(machine_name)
    max_order = int(rng.choice([1, 3, 10]))
    return m, policy(variant, machine_name), random_batches(rng, m.cpus, max_handles, max_order), max_handles


@pytest.mark.parametrize("seed", SEEDS)
def test_engines_agree_on_long_random_streams(seed):
    _, problems = engine_differences(*seeded_case(seed))
    assert_no_differences(problems)


def test_long_random_streams_reach_the_hard_paths():
    reached = seeds_reaching(seeded_case, SEEDS, HARD)
    assert all(reached.values()), f"seeds reaching each path: {reached}"


MIXED_SET = {"events": 60000, "shm": "16MiB", "processes": 24, "pagecache": "8MiB"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["stock", "unmapped", "unmapped-window"])
def test_engines_agree_on_the_mixed_workload(variant):
    m = get_machine("pa8800")
    p = get_policy(VARIANTS[variant][0], m, {"kernel_window": "8MiB"} if variant == "unmapped-window" else {})
    workload = get_workload("mixed")
    stream = workload.build({**workload.resolve(MIXED_SET), "cpus": m.cpus, "stack_order": m.kernel_stack_order}, 0)
    batches = list(stream)
    rec, problems = engine_differences(m, p, batches, stream.max_handles)
    assert rec["events"] == MIXED_SET["events"]
    assert_no_differences(problems)


@pytest.mark.parametrize("variant", ["unmapped", "unmapped-kernel-index"])
@pytest.mark.parametrize("order", [1, 6, 7, 8, 10])
def test_engines_agree_on_large_kernel_blocks(variant, order):
    """A mapped kernel block takes 2**order pool pages and, with 4 KiB pages only, as many TLB
    entries: page counts past 127 must not wrap in a narrow integer."""
    m, p = machine("pa-1024"), policy(variant, "pa-1024")
    batch = make_batch([ev(E.K_ALLOC_SLAB, 0, order), ev(E.K_ALLOC_SLAB, 1, 0), ev(E.K_FREE, 0)])
    _, problems = engine_differences(m, p, [batch], 8)
    assert_no_differences(problems)
