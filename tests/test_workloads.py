"""The built-in generators: deterministic, valid on every machine and policy, shaped as documented.

Each generator runs small (a few processes, megabytes of shm and page cache) so that a stream of a
few tens of thousands of events is past its prologue and both engines, the reference included,
get through it quickly. The records of the two engines must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from core import events as E
from core.errors import ConfigError
from core.machine import get_machine
from core.policy import POLICIES, get_policy
from core.record import build_record
from core.sim import simulate
from workloads import WORKLOADS
from workloads.config import resolve
from workloads.generators import weights
from workloads.world import FILE_BASE, SHM_BASE, World

NAMES = ("mixed", "io", "forkexec", "kalloc", "pagecache", "stress")
SMALL = {"processes": 8, "anon_pages": 16, "shm": "8MiB", "pagecache": "64MiB", "files": 1024,
         "kalloc_blocks": 256, "pgtables": 64}
SMALL_BY_NAME = {"pagecache": {"mapped_file": "4MiB"}, "stress": {"mapped_file": "4MiB", "kmap_hold": 32},
                 "io": {"io_size": "256KiB"}}
PAIRS = [(m, p) for m in ("x86-pae-64g", "pa8800") for p in POLICIES if get_machine(m).arch in POLICIES[p].arches]


def small(name: str, events: int = 20_000, **more: object) -> dict[str, object]:
    return {**SMALL, **SMALL_BY_NAME.get(name, {}), "events": events, **more}


def events_of(name: str, seed: int = 0, machine: str = "x86-pae-64g", **sets: object) -> np.ndarray:
    r = resolve({"machine": machine, "workload": name, "seed": seed, "set": sets})
    return np.concatenate(list(r.stream))


def test_every_generator_is_listed() -> None:
    assert set(WORKLOADS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_stream_other_seed_other_stream(name: str) -> None:
    a, b = events_of(name, 3, **small(name)), events_of(name, 3, **small(name))
    assert a.size == b.size == 20_000
    assert np.array_equal(a, b)
    assert not np.array_equal(a, events_of(name, 4, **small(name)))


@pytest.mark.parametrize("name", NAMES)
def test_batches_are_bounded_and_handles_in_range(name: str) -> None:
    r = resolve({"workload": name, "set": small(name, 50_000, batch=7_000)})
    sizes = [b.size for b in r.stream]
    assert sizes == [7_000] * 7 + [1_000]
    every = events_of(name, **small(name, 50_000))
    used = every["handle"][E.NEEDS_HANDLE[every["kind"]]]
    assert used.min() >= 0 and used.max() < r.stream.max_handles


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("machine", "policy"), PAIRS)
def test_engines_agree_on_every_generator(name: str, machine: str, policy: str) -> None:
    """The same stream through the reference and the fast core, invariants checked after each."""
    records = []
    for engine in ("reference", "fast"):
        r = resolve({"machine": machine, "policy": policy, "workload": name, "set": small(name, 15_000)})
        k = simulate(r.machine, r.policy, r.stream, engine=engine, check=True)
        records.append(build_record(k, r.identity))
    assert records[0] == records[1]
    assert records[0]["events"] == 15_000
    assert records[0]["ops_on_failed"] == 0  # a valid stream never uses a page it failed to get


def kinds(stream: np.ndarray) -> np.ndarray:
    return np.bincount(stream["kind"], minlength=E.NKINDS)


def test_io_reads_span_one_page_to_io_size_and_mix_direct_and_cached() -> None:
    s = events_of("io", **small("io", 60_000, touch_rate=0.0, fault_rate=0.0, open_rate=0.0, syscall_rate=0.0))
    # every syscall starts one read or write; its pages follow before the next syscall
    calls = np.flatnonzero(s["kind"] == E.K_SYSCALL)
    per_call = np.add.reduceat((s["kind"] == E.K_COPY) | (s["kind"] == E.K_IO), calls)
    assert per_call.max() > 32  # multi-page requests exist (io_size 256 KiB = 64 pages)
    direct = (s["kind"] == E.K_IO) & (np.isin(s["handle"], s["handle"][s["kind"] == E.K_ALLOC_ANON]))
    assert direct.any() and (s["kind"] == E.K_ALLOC_PAGECACHE).any()
    assert (s["order"][s["kind"] == E.K_IO] == 1).any()  # writes go back to the device


def test_forkexec_churns_processes_with_teardown_frees() -> None:
    s = events_of("forkexec", **small("forkexec", 100_000))
    c = kinds(s)
    assert c[E.K_FORK] > 8 and c[E.K_EXEC] == c[E.K_FORK] and c[E.K_EXIT] == c[E.K_FORK] - 8
    teardown = (s["kind"] == E.K_FREE) & (s["order"] == 1)
    cow = 2  # cow_pages: the child's copies, gone with its exec
    assert teardown.sum() == c[E.K_EXIT] * (16 + cow)  # every private page of an exiting process, and the copies
    assert c[E.K_COW] == c[E.K_EXIT] * cow
    forks = s["addr"][s["kind"] == E.K_FORK]
    ptes = 16 + (8 << 20) // 4096  # the parent's private pages and the shm it maps
    assert set(forks.tolist()) == {0, ptes}  # init's forks at boot copy nothing
    assert (forks == 0).sum() == 8


def test_user_time_is_one_run_per_episode_and_a_tick_per_1_over_hz_of_it() -> None:
    """Every episode's process runs user_time (K_RUN); the timer interrupts it once per 1/hz of
    accumulated user time (K_IRQ), the remainder carried, so ticks = floor(runs x run / period)
    up to the one the stream's cut may split off. user_time=0 adds no event at all."""
    run_us, hz = 37.5, 250
    s = events_of("forkexec", **small("forkexec", 50_000, user_time=run_us, hz=hz))
    c = kinds(s)
    assert (s["addr"][s["kind"] == E.K_RUN] == 37_500).all()
    ticks = c[E.K_RUN] * 37_500 // (1_000_000_000 // hz)
    assert c[E.K_RUN] > 1000 and c[E.K_IRQ] in (ticks, ticks - 1)
    assert (s["kind"][np.flatnonzero(s["kind"] == E.K_IRQ) - 1] == E.K_RUN).all()  # the tick ends a run
    plain = events_of("forkexec", **small("forkexec", 50_000))
    assert not np.isin(plain["kind"], (E.K_RUN, E.K_IRQ)).any()


def test_kalloc_churns_blocks_of_orders_zero_to_four() -> None:
    s = events_of("kalloc", **small("kalloc", 60_000))
    orders = np.unique(s["order"][s["kind"] == E.K_ALLOC_SLAB])
    assert set(orders.tolist()) == {0, 1, 2, 3, 4}
    assert kinds(s)[E.K_ALLOC_PGTABLE] > 64  # page tables replaced, not only the prologue's


def test_pagecache_maps_a_shared_file_at_one_address_in_every_process() -> None:
    s = events_of("pagecache", **small("pagecache", 60_000))
    mapped = (s["kind"] == E.K_ALLOC_PAGECACHE) & (s["addr"] >= FILE_BASE)
    assert mapped.sum() > 1024  # the 4 MiB file, then reclaimed pages faulted back
    # a file page keeps its address when it is faulted back: handle -> address is one-to-one
    pairs = np.unique(np.stack([s["handle"][mapped], s["addr"][mapped]]), axis=1)
    assert pairs.shape[1] == np.unique(s["handle"][mapped]).size == 1024
    assert ((s["kind"] == E.K_USER) & (s["order"] == 1)).any()


def test_mixed_maps_the_shm_at_an_shmlba_aligned_address() -> None:
    s = events_of("mixed", **small("mixed"))
    shm = (s["kind"] == E.K_ALLOC_PAGECACHE) & (s["addr"] >= SHM_BASE) & (s["addr"] < SHM_BASE + 2048)
    assert shm.sum() == 2048 and SHM_BASE % 1024 == 0


@pytest.mark.parametrize(("sets", "field"), [
    ({"bogus": 1}, "bogus"),
    ({"churn": "0.6", "syscall_rate": "0.6"}, "syscall_rate + churn"),
    ({"pagecache": "64KiB", "kmap_fraction": "0.5"}, "pagecache"),
    ({"kmap_hold": 0}, "kmap_hold"),
    ({"io_size": "1KiB"}, "io_size"),
    ({"miss_rate": "1.5"}, "miss_rate"),
    ({"user_time": "-1"}, "user_time"),
    ({"user_time": "1500"}, "user_time"),  # longer than a tick at hz=1000
    ({"hz": 0}, "hz"),
])
def test_bad_parameters_name_the_field(sets: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        r = resolve({"workload": "mixed", "set": sets})
        next(iter(r.stream))
    assert str(err.value).startswith(field)


def test_unknown_workload_parameter_is_one_line_exit_2(zonesim) -> None:
    out = zonesim("run", "--workload", "io", "--set", "bogus=1")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("zonesim: error: bogus:")


def test_policy_pairs_cover_both_machines() -> None:
    assert {m for m, _ in PAIRS} == {"x86-pae-64g", "pa8800"}
    for m, p in PAIRS:
        get_policy(p, get_machine(m))


@pytest.mark.parametrize("machine", ["x86-pae-64g", "pa8800"])
def test_a_recorded_generator_replays_to_the_same_record(tmp_path, machine: str) -> None:
    """``--workload trace:PATH`` through the same config path as a generator."""
    from workloads.config import run_config
    from workloads.trace import write_trace

    sets = small("stress", 30_000)
    r = resolve({"machine": machine, "workload": "stress", "set": sets})
    path = str(tmp_path / "stress.trace")
    write_trace(path, r.stream, seed=0)
    live = run_config({"machine": machine, "policy": "unmapped", "workload": "stress", "set": sets})
    replay = run_config({"machine": machine, "policy": "unmapped", "workload": f"trace:{path}"})
    assert replay["workload"] == f"trace:{path}"
    assert {k: v for k, v in replay.items() if k != "workload"} == {k: v for k, v in live.items() if k != "workload"}


@pytest.mark.parametrize("machine", ["x86-pae-64g", "pa8800"])
def test_engines_agree_across_chunks_with_kmaps_held_over_the_boundary(machine: str) -> None:
    """Long reads make small chunks (a few hundred episodes), and a kmap held for 1,024 episodes
    is released chunks later: the hold queue and the page-cache ring carry across."""
    sets = {"processes": 4, "anon_pages": 16, "io_size": "1MiB", "kmap_hold": 1024, "kmap_fraction": 0.5,
            "pagecache": "1100MiB", "events": 250_000}
    r = resolve({"machine": machine, "policy": "unmapped", "workload": "io", "set": sets})
    from workloads.world import World
    assert World({**r.stream.params}, {"read": 1.0}, 0).per_chunk < 1024  # several chunks per hold
    records = []
    for engine in ("reference", "fast"):
        r = resolve({"machine": machine, "policy": "unmapped", "workload": "io", "set": sets})
        records.append(build_record(simulate(r.machine, r.policy, r.stream, engine=engine, check=True), r.identity))
    assert records[0] == records[1] and records[0]["kmap_calls"] > 100
    s = events_of("io", machine=machine, **sets)
    released = kinds(s)[E.K_KUNMAP]
    assert 0 < released < kinds(s)[E.K_KMAP]  # released 1,024 episodes later: some still held at the end


EMPTY = {"files": 0, "anon_pages": 0, "shm": 0, "pagecache": 0, "kalloc_blocks": 0, "pgtables": 0, "mapped_file": 0}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("empty", sorted(EMPTY))
def test_an_empty_structure_drops_its_episodes(name: str, empty: str) -> None:
    for machine, policy in (("x86-pae-64g", "stock"), ("pa8800", "unmapped")):
        r = resolve({"machine": machine, "policy": policy, "workload": name,
                     "set": {**small(name, 20_000), empty: EMPTY[empty]}})
        k = simulate(r.machine, r.policy, r.stream, check=True)
        assert build_record(k, r.identity)["events"] == 20_000


@pytest.mark.parametrize("name", NAMES)
def test_setup_events_is_the_prologue_length(name: str) -> None:
    """What the CLI warns with is what the generator yields before its first episode."""
    r = resolve({"workload": name, "set": small(name)})
    first = next(iter(r.stream))
    world = World({**WORKLOADS[name].resolve(small(name)), "cpus": 8, "stack_order": 1},
                  weights(WORKLOADS[name].resolve(small(name))), 0)
    assert r.stream.setup_events == world.prologue().size == world.setup_events
    assert first.size >= min(r.stream.setup_events, 20_000)


def test_a_stream_inside_the_set_up_is_warned_about_and_one_past_it_is_not(zonesim) -> None:
    out = zonesim("run", "--workload", "io", "--machine", "pa8800", "--events", "1000")
    assert out.returncode == 0
    assert out.stderr.startswith("zonesim: warning: events: 1,000 end inside the io workload's set-up")
    setup = resolve({"machine": "pa8800", "workload": "io"}).stream.setup_events
    out = zonesim("run", "--workload", "io", "--machine", "pa8800", "--events", str(setup + 1000))
    assert out.returncode == 0 and out.stderr == ""


def test_a_sweep_with_cells_inside_the_set_up_is_warned_about(tmp_path, capsys) -> None:
    from cluster.cli_sweep import warn_short_cells
    from cluster.sweep import load_spec

    spec = tmp_path / "short.toml"
    spec.write_text('name = "short"\nseeds = 2\n[base]\nmachine = "pa8800"\nworkload = "io"\n[grid]\n'
                    '"set.events" = [1000, 100000]\n')
    warn_short_cells(load_spec(str(spec)))
    err = capsys.readouterr().err
    assert err.startswith("zonesim: warning: events: 1 of 2 cells end inside their workload's set-up")
    assert "io at 1,000 events of 16,955" in err
