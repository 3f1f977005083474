"""Differential tests: the fast engine against the scalar reference, its oracle.

On any valid event stream the two engines must build the identical record and leave the kernel in
the identical state: the same free lists in the same LIFO order, the same hot lists, the same
mem_map, the same kmap pool. Streams come from ``streams.interpret`` (hypothesis draws and shrinks
the op triples), from long seeded ``random_ops`` streams hypothesis would not reach, and from the
built-in ``mixed`` workload on the real 64 GB machine.

The small machine has 96 MiB of which 64 MiB is lowmem (a 960 MiB vmalloc reserve), so streams
of a few hundred events run zones dry, fall back to other zones, wrap the 8-slot kmap pool and sleep.

``ZONESIM_DIFF_EXAMPLES`` sets how many examples hypothesis runs (default 150); runs are
derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st
from streams import batched, interpret, random_ops

from core import events as E
from core.events import MAX_ORDER, Stream, ev, make_batch
from core.kernel import Kernel
from core.machine import Machine, get_machine, with_overrides
from core.policy import Policy, get_policy
from core.record import build_record
from core.sim import simulate
from workloads import get_workload

POLICIES = ("stock", "4g4g", "unmapped")
SMALL = {"memory": "96MiB", "vmalloc_reserve": str(960 << 20), "last_pkmap": 8, "kernel_image": "4MiB"}
MACHINE_VARIANTS = {
    "small": SMALL,
    "small-no-highmem": {**SMALL, "memory": "40MiB"},
    "small-pkmap4": {**SMALL, "last_pkmap": 4},
    "small-highpte": {**SMALL, "highpte": "true"},
    # ZONE_DMA all kernel image, ZONE_NORMAL ~3 MiB: kernel requests run Normal dry, fall back to
    # DMA, fail; the batched allocator routes them down the zonelist instead of cutting
    "small-lowmem": {**SMALL, "vmalloc_reserve": str((1024 - 8) << 20), "dma_zone": "4MiB"},
}
EXAMPLES = int(os.environ.get("ZONESIM_DIFF_EXAMPLES", "150"))


@cache
def machine(variant: str) -> Machine:
    return with_overrides(get_machine("x86-pae-64g"), MACHINE_VARIANTS[variant])


# unmapped's kmap ring cut to a thousandth of the freed window: 8 slots on the small machines, 1 on
# small-lowmem, so short streams wrap it and sleep on it.
SMALL_RING = {"unmapped_kmap_share": "0.001"}


@cache
def policy(name: str, variant: str) -> Policy:
    return get_policy(name, machine(variant), SMALL_RING if name == "unmapped" else {})


# -- comparing two finished runs -------------------------------------------------------------------


def state_of(k: Kernel) -> dict[str, object]:
    """Everything an engine leaves behind, by name. Arrays are views: compare before mutating."""
    mm, pk = k.mm, k.pk
    state: dict[str, object] = {}
    for z in mm.zones:
        state[f"{z.name}.free_pages"] = z.free_pages
        state[f"{z.name}.pcp_top"] = z.pcp_top
        state[f"{z.name}.pcp_stack"] = z.pcp[:z.pcp_top]
        for order, area in enumerate(z.free_area):
            state[f"{z.name}.free_area[{order}]"] = list(area)  # LIFO order is part of the state
    state.update({
        "page_flags": mm.page_flags,
        "page_order": mm.page_order,
        # page_address of every slot's page, and which slots the table chains (not how: the
        # engines may chain a bucket's entries in another order)
        "page_address": pk.page_address_htable.lookup(pk.pkmap_page),
        "page_address_entries": np.sort(pk.page_address_htable.entries()),
        "pkmap_count": pk.pkmap_count,
        "pkmap_page": pk.pkmap_page,
        "last_pkmap_nr": pk.last_pkmap_nr,
        "pkmap_mapped": pk.mapped,
        "waiters": list(pk.waiters),
        "handle_pfn": k.handle_pfn,
        "window_used": k.window_used,
    })
    state.update({f"c.{name}": value for name, value in k.c.as_dict().items()})
    if k.vi:
        vi, cache = k.vi, k.vi.cache
        keys, version, dirty = cache.snapshot()
        state.update({
            "vi.user_colour": vi.user_colour, "vi.kernel_colour": vi.kernel_colour, "vi.kmap_count": vi.kmap_count,
            "cache.keys": keys, "cache.version": version, "cache.dirty": dirty,
            "cache.mem_stale": cache.mem_stale, "cache.clock": cache.clock,
            "cache.stale_reads": cache.stale_reads,
        })
        for name, pool in (("kmaps", vi.kmaps), ("allocs", vi.allocs)):
            state.update({f"{name}.used": pool.used, f"{name}.counter": pool.counter,
                          f"{name}.exhaustions": pool.exhaustions, f"{name}.pages": pool.pages})
    return state


def describe_difference(a: object, b: object) -> str | None:
    """None if equal, else where the reference value ``a`` and the fast value ``b`` first part."""
    if isinstance(a, np.ndarray):
        if a.shape == b.shape and np.array_equal(a, b):
            return None
        if a.shape != b.shape:
            return f"shape {a.shape} != {b.shape}"
        at = np.flatnonzero(a != b)
        return f"{at.size} entries differ, first at [{at[0]}]: reference {a[at[0]]} != fast {b[at[0]]}"
    if a == b:
        return None
    if isinstance(a, list) and isinstance(b, list):
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return (f"lengths {len(a)} vs {len(b)}, first difference at [{first}]: "
                f"reference {a[first:first + 4]} != fast {b[first:first + 4]}")
    return f"reference {a!r} != fast {b!r}"


def engine_differences(m: Machine, p: Policy, batches: list[np.ndarray],
                       max_handles: int) -> tuple[dict[str, object], list[str]]:
    """Run both engines on the same batches: the reference's record and every difference found.
    Only plain data leaves: a failing example's traceback must not pin two kernels (at 64 GB,
    hundreds of MB) while hypothesis shrinks."""
    ref = simulate(m, p, Stream(batches, max_handles), engine="reference", check=True)
    fast = simulate(m, p, Stream(batches, max_handles), engine="fast", check=True)
    rec_ref, rec_fast = build_record(ref, {}), build_record(fast, {})
    problems = [f"record {key}: reference {rec_ref[key]!r} != fast {rec_fast[key]!r}"
                for key in rec_ref if rec_ref[key] != rec_fast[key]]
    a, b = state_of(ref), state_of(fast)
    problems += [f"state {key}: {why}" for key in a if (why := describe_difference(a[key], b[key]))]
    return rec_ref, problems


def assert_no_differences(problems: list[str]) -> None:
    assert not problems, "the engines differ:\n  " + "\n  ".join(problems)


def split(events: np.ndarray, cuts: list[int], max_handles: int) -> list[np.ndarray]:
    return list(batched(events, cuts, max_handles))


# -- generated streams -------------------------------------------------------------------------------

OP = st.tuples(st.integers(0, 5), st.integers(0, 2**20), st.integers(0, 2**20))


@st.composite
def op_lists(draw: st.DrawFn, max_drawn: int = 300) -> list[tuple[int, int, int]]:
    """Op lists of a drawn length (plain ``st.lists`` keeps most lists to a handful of ops, too few
    to fill the kmap pool). Each op carries a keep flag that shrinks toward dropping it, so a failing
    stream still shrinks op by op; about half the drawn ops are kept. At most 300 are drawn so that
    shrinking finishes inside hypothesis's time limit; longer streams are the seeded tests' job."""
    n = draw(st.integers(0, max_drawn))
    drawn = draw(st.lists(st.tuples(OP, st.booleans()), min_size=n, max_size=n))
    return [op for op, keep in drawn if keep]


CUTS = st.lists(st.integers(0, 2**20), max_size=8)
HARD_PATHS = ("alloc_failures", "kmap_waits", "kmap_waiters_at_end", "pkmap_wraps", "ops_on_failed")


def ballast(kernel_blocks: int, user_blocks: int, first_handle: int) -> np.ndarray:
    """Max-order blocks pinned for the whole run on handles of their own (slab first, then anon):
    they leave the random ops little enough memory to run zones dry, or fail themselves."""
    kinds = [E.K_ALLOC_SLAB] * kernel_blocks + [E.K_ALLOC_ANON] * user_blocks
    return make_batch(ev(kind, first_handle + i, order=MAX_ORDER - 1) for i, kind in enumerate(kinds))


def note_paths(rec: dict[str, object]) -> None:
    """Label the example with the hard paths it took (see --hypothesis-show-statistics) and steer
    generation toward sleeping kmaps, which random ops rarely reach (ballast takes care of failures)."""
    for key in HARD_PATHS:
        if rec[key]:
            event(key)
    target(float(rec["kmap_waits"]), label="kmap_waits")  # the rarest path: 8 pages kmapped at once


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=op_lists(), cuts=CUTS, policy_name=st.sampled_from(POLICIES),
       variant=st.sampled_from(sorted(MACHINE_VARIANTS)), max_handles=st.sampled_from([8, 64, 1024]),
       max_order=st.sampled_from([1, 3, 10]),
       kernel_blocks=st.integers(0, 24), user_blocks=st.integers(0, 8))
def test_engines_agree_on_generated_streams(ops, cuts, policy_name, variant, max_handles, max_order,
                                            kernel_blocks, user_blocks):
    m, p = machine(variant), policy(policy_name, variant)
    pinned = ballast(kernel_blocks, user_blocks, max_handles)
    events = np.concatenate([pinned, interpret(ops, max_handles, m.cpus, max_order)])
    handles = max_handles + pinned.size
    rec, problems = engine_differences(m, p, split(events, cuts, handles), handles)
    note_paths(rec)
    assert_no_differences(problems)


# -- long seeded streams -------------------------------------------------------------------------------

SEEDS = range(30)
ALLOC_HEAVY = (1, 1, 0.3, 0.6, 0.6, 1.0)  # frees rare: live pages pile up until the zones run dry


def seeded_case(seed: int) -> tuple[Machine, Policy, list[np.ndarray], int]:
    """Seed -> (machine, policy, batches, max_handles); the seed picks every knob."""
    rng = np.random.default_rng(seed)
    variant = sorted(MACHINE_VARIANTS)[seed % len(MACHINE_VARIANTS)]
    name = POLICIES[seed % len(POLICIES)]
    max_handles = int(rng.choice([64, 512, 4096]))
    max_order = int(rng.choice([1, 3, 10]))
    weights = ALLOC_HEAVY if seed % 2 else None
    m = machine(variant)
    return m, policy(name, variant), random_batches(rng, m.cpus, max_handles, max_order, weights), max_handles


def random_batches(rng: np.random.Generator, cpus: int, max_handles: int, max_order: int,
                   weights: tuple[float, ...] | None = None) -> list[np.ndarray]:
    """1,000 to 4,000 random ops as events, cut into batches at up to 11 random places."""
    ops = random_ops(rng, int(rng.integers(1000, 4001)), weights)
    events = interpret(ops, max_handles, cpus, max_order)
    cuts = rng.integers(0, events.size + 1, size=int(rng.integers(0, 12))).tolist()
    return split(events, cuts, max_handles)


def seeds_reaching(case, seeds, keys) -> dict[str, int]:
    """How many of ``seeds`` give a ``case(seed)`` whose reference record has each of ``keys`` > 0."""
    reached = dict.fromkeys(keys, 0)
    for seed in seeds:
        m, p, batches, max_handles = case(seed)
        rec = build_record(simulate(m, p, Stream(batches, max_handles), engine="reference"), {})
        for key in keys:
            reached[key] += rec[key] > 0
    return reached


@pytest.mark.parametrize("seed", SEEDS)
def test_engines_agree_on_long_random_streams(seed):
    _, problems = engine_differences(*seeded_case(seed))
    assert_no_differences(problems)


def test_long_random_streams_reach_the_hard_paths():
    """The seeds above are only worth running if they take the paths the fast engine cuts on."""
    reached = seeds_reaching(seeded_case, SEEDS, HARD_PATHS)
    assert all(reached.values()), f"seeds reaching each path: {reached}"


# -- the built-in workload on the real machine ---------------------------------------------------------

MIXED_SET = {"events": 60000, "shm": "16MiB", "processes": 24, "pagecache": "8MiB"}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [None, 4096], ids=["default-batch", "batch-4096"])
@pytest.mark.parametrize("policy_name", POLICIES)
def test_engines_agree_on_the_mixed_workload_at_64g(policy_name, batch):
    m = get_machine("x86-pae-64g")
    p = get_policy(policy_name, m)
    workload = get_workload("mixed")
    chosen = MIXED_SET if batch is None else {**MIXED_SET, "batch": batch}
    stream = workload.build({**workload.resolve(chosen), "cpus": m.cpus}, 0)
    batches = list(stream)  # built once, replayed by both engines
    rec, problems = engine_differences(m, p, batches, stream.max_handles)
    assert rec["events"] == MIXED_SET["events"]
    assert_no_differences(problems)


# 4 GiB with a 64 MiB lowmem: 64 processes mapping 256 MiB of shm need more PTE pages than stock
# lowmem holds, so this stream exhausts Normal and DMA while highmem is free (as the default run
# does at 64 GB, in a stream the reference can replay quickly).
STARVED = {"memory": "4GiB", "vmalloc_reserve": str((1024 - 64) << 20)}
STARVED_SET = {"events": 120000, "shm": "256MiB", "processes": 64, "pagecache": "8MiB"}


@pytest.mark.slow
@pytest.mark.parametrize("policy_name", POLICIES)
def test_engines_agree_when_lowmem_runs_out(policy_name):
    m = with_overrides(get_machine("x86-pae-64g"), STARVED)
    p = get_policy(policy_name, m)
    workload = get_workload("mixed")
    stream = workload.build({**workload.resolve(STARVED_SET), "cpus": m.cpus}, 0)
    batches = list(stream)
    rec, problems = engine_differences(m, p, batches, stream.max_handles)
    if policy_name == "stock":
        assert rec["alloc_failures"] > 0  # the path this test exists for
    assert_no_differences(problems)
