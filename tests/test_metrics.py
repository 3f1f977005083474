"""The exporter: values read back from a fresh registry, a real scrape checked by promtool, a push to
a real Pushgateway."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from conftest import free_port
from prometheus_client import CollectorRegistry

from cluster.metrics import FAMILIES, Exporter
from workloads.config import config_key

RECORD = {"machine": "pa8800", "policy": "unmapped", "workload": "io", "seed": 0, "flushes_per_io": 0.5,
          "alias_violations": 0, "stale_reads": 0, "kernel_mapped_bytes_peak": 100 << 20,
          "lowmem_free_min_bytes": 1 << 30, "kmap_waits": 2, "alloc_failures": 0, "congruence_exhaustions": 0,
          "tlb_flush_global": 1, "tlb_flush_local": 10, "tlb_flush_full": 0, "cache_flush_page": 40,
          "cache_flush_all": 0, "cache_flush_tmpalias": 7, "cycles_total": 1000}


def entry(status: str = "ok", seconds: float = 0.3, sets: dict | None = None, **record: object) -> dict:
    """A store entry as the driver reports it: its key, the config its record came from (with
    ``sets`` as its ``set`` table), and the record."""
    full = {**RECORD, **record}
    config = {k: full[k] for k in ("machine", "policy", "workload", "seed")} | ({"set": sets} if sets else {})
    return {"key": config_key(config), "config": config, "status": status, "seconds": seconds,
            "record": full if status == "ok" else None}


def fed() -> tuple[Exporter, CollectorRegistry]:
    registry = CollectorRegistry()
    e = Exporter(registry)
    listener = e.listener("s1")
    listener.start(5, 1)
    listener.running(2, 2)
    listener.update([entry(seed=1, alias_violations=4, cycles_total=3000), entry("failed", 0.1)])
    listener.task(0.7)
    listener.retried(2)
    listener.events(12345)
    return e, registry


def test_progress_throughput_and_results_read_back() -> None:
    _, r = fed()
    value = r.get_sample_value
    states = {s: value("zonesim_sweep_simulations", {"sweep": "s1", "state": s}) for s in
              ("pending", "running", "ok", "failed")}
    assert states == {"pending": 2, "running": 2, "ok": 2, "failed": 1}  # 1 from before + 1 now
    assert value("zonesim_simulations_completed_total", {"sweep": "s1", "status": "failed"}) == 1
    assert value("zonesim_retries_total", {"sweep": "s1"}) == 2
    assert value("zonesim_events_simulated_total", {"sweep": "s1"}) == 12345
    assert value("zonesim_task_duration_seconds_count", {"sweep": "s1"}) == 1
    assert value("zonesim_simulation_duration_seconds_sum", {"sweep": "s1"}) == pytest.approx(0.4)
    cell = {"sweep": "s1", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert value("zonesim_result_alias_violations", cell) == 4
    assert value("zonesim_result_estimated_cycles", cell) == 3000
    assert value("zonesim_result_cache_flushes", {**cell, "kind": "tmpalias"}) == 7
    assert value("zonesim_result_tlb_flushes", {**cell, "kind": "local"}) == 10


def test_result_gauges_are_means_over_a_cells_simulations() -> None:
    e, r = fed()
    e.listener("s1").update([entry(seed=2, alias_violations=0, cycles_total=1000)])
    cell = {"sweep": "s1", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert r.get_sample_value("zonesim_result_simulations", cell) == 2
    assert r.get_sample_value("zonesim_result_alias_violations", cell) == 2
    assert r.get_sample_value("zonesim_result_estimated_cycles", cell) == 2000


def test_names_and_labels_follow_the_conventions() -> None:
    for name, (kind, text, labels) in FAMILIES.items():
        assert name.startswith("zonesim_") and text
        assert name.endswith("_total") == (kind == "counter"), name
        assert not {"seed", "key", "config", "hash"} & set(labels), name
        if "bytes" in name or "seconds" in name:
            assert name.split("_")[-1] in ("bytes", "seconds"), name  # base unit last


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_a_real_scrape_passes_promtool_check_metrics() -> None:
    e, _ = fed()
    port = e.serve("127.0.0.1", 0)
    try:
        text = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        e.close()
    assert 'zonesim_sweep_simulations{state="ok",sweep="s1"} 2.0' in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""  # not even a lint warning


def test_the_endpoint_binds_loopback_by_default_address() -> None:
    e, _ = fed()
    port = e.serve("127.0.0.1", 0)
    try:
        assert e.server.server_address[0] == "127.0.0.1"
        assert "zonesim_result_simulations" in scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        e.close()


@pytest.fixture
def pushgateway():
    port = free_port()
    p = subprocess.Popen(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while True:
            try:
                scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert time.monotonic() < end and p.poll() is None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(10)


def test_final_values_go_to_a_real_pushgateway_grouped_by_sweep(pushgateway) -> None:
    e, _ = fed()
    e.push(pushgateway, "s1")
    text = scrape(f"http://{pushgateway}/metrics")
    assert 'zonesim_sweep_simulations{instance="",job="zonesim",state="ok",sweep="s1"} 2' in text
    assert ('zonesim_result_alias_violations{cell="engine=fast",instance="",job="zonesim",machine="pa8800",'
            'policy="unmapped",sweep="s1",workload="io"} 4') in text


def test_a_resumed_sweeps_stored_records_count_in_the_result_means() -> None:
    registry = CollectorRegistry()
    listener = Exporter(registry).listener("s2")
    listener.start(3, 2)
    listener.resumed([entry(seed=0, alias_violations=2), entry(seed=1, alias_violations=4)])
    listener.update([entry(seed=2, alias_violations=6)])
    cell = {"sweep": "s2", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert registry.get_sample_value("zonesim_result_simulations", cell) == 3
    assert registry.get_sample_value("zonesim_result_alias_violations", cell) == 4
    assert registry.get_sample_value("zonesim_simulations_completed_total", {"sweep": "s2", "status": "ok"}) == 1


def test_a_sweep_run_again_is_counted_afresh() -> None:
    registry = CollectorRegistry()
    e = Exporter(registry)
    first = e.listener("s3")
    first.start(2, 0)
    first.update([entry(seed=0, alias_violations=2), entry(seed=1, alias_violations=4)])
    again = e.listener("s3")  # the service runs it again: its two records come back through resumed
    again.start(2, 2)
    again.resumed([entry(seed=0, alias_violations=2), entry(seed=1, alias_violations=4)])
    cell = {"sweep": "s3", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert registry.get_sample_value("zonesim_result_simulations", cell) == 2
    assert registry.get_sample_value("zonesim_result_alias_violations", cell) == 3


@pytest.mark.parametrize("given, scraped, waits", [
    (None, False, 0.0),  # nothing watched the sweep: no grace wait
    (None, True, 15.0),  # something scrapes: the last values stay up one more interval
    (3.0, False, 3.0),  # the user asked
    (0.0, True, 0.0),  # or asked for none
])
def test_the_grace_wait_only_when_something_scrapes_or_is_asked_for(monkeypatch, given, scraped, waits) -> None:
    import argparse

    from cluster import cli_sweep, metrics

    waited = []
    monkeypatch.setattr(metrics, "wait_grace", waited.append)
    e, _ = fed()
    port = e.serve("127.0.0.1", 0)
    if scraped:
        scrape(f"http://127.0.0.1:{port}/metrics")  # a real scrape of the real endpoint
    assert (e.scrapes > 0) == scraped
    cli_sweep.after_sweep(argparse.Namespace(metrics_grace=given, pushgateway=None), "s1", e)
    assert waited == ([waits] if waits else [])
    assert e.server is None  # closed either way


def test_result_gauges_are_the_cells_of_zonesim_results() -> None:
    """Two cells that share machine, policy and workload but not a ``set`` value are two series,
    each the mean ``cluster.aggregate`` gives that cell (the old gauges averaged the two)."""
    from cluster.aggregate import aggregate

    entries = [entry(seed=s, alias_violations=v) for s, v in ((0, 2), (1, 4))]
    entries += [entry(seed=s, alias_violations=v, sets={"events": 2000}) for s, v in ((0, 10), (1, 30), (2, 50))]
    registry = CollectorRegistry()
    listener = Exporter(registry).listener("s4")
    listener.start(len(entries), 0)
    listener.update(entries + [entry("failed")])
    base = {"sweep": "s4", "machine": "pa8800", "policy": "unmapped", "workload": "io"}
    value = registry.get_sample_value
    for cell in aggregate(entries):
        labels = {**base, "cell": cell.axes()}
        assert value("zonesim_result_simulations", labels) == cell.n
        assert value("zonesim_result_alias_violations", labels) == cell.stats["alias_violations"].mean
    assert value("zonesim_result_alias_violations", {**base, "cell": "engine=fast events=2000"}) == 30
    assert value("zonesim_result_alias_violations", {**base, "cell": "engine=fast"}) == 3


def test_an_ok_entry_reported_twice_counts_once() -> None:
    """A config that finished twice, or came through ``resumed`` and again through ``update``: the
    first ok entry of a key is the cell's, a later one of the same key is ignored."""
    registry = CollectorRegistry()
    listener = Exporter(registry).listener("s5")
    listener.start(2, 1)
    listener.resumed([entry(seed=0, alias_violations=2)])
    listener.update([entry(seed=0, alias_violations=2), entry(seed=1, alias_violations=4)])
    listener.update([entry(seed=1, alias_violations=40)])  # a retried task that finished twice
    cell = {"sweep": "s5", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert registry.get_sample_value("zonesim_result_simulations", cell) == 2
    assert registry.get_sample_value("zonesim_result_alias_violations", cell) == 3


def test_a_collection_aggregates_again_only_the_cells_that_got_entries() -> None:
    """A cell with no entries since the last collection is the same Cell as then; one that got some
    is exactly what ``aggregate`` gives for all the sweep's entries."""
    from cluster.aggregate import aggregate
    from cluster.metrics import SweepResults

    results = SweepResults()
    entries = [entry(seed=s, alias_violations=s, cycles_total=1000 + s) for s in range(3)]
    entries += [entry(seed=s, alias_violations=3 * s, sets={"events": 2000}) for s in range(3)]
    results.add("s6", entries)
    before = {cell.axes(): cell for cell in results.cells("s6")}
    more = [entry(seed=3, alias_violations=7, sets={"events": 2000}), entry(seed=4, sets={"events": 2000})]
    results.add("s6", more)
    after = {cell.axes(): cell for cell in results.cells("s6")}
    assert after["engine=fast"] is before["engine=fast"]
    assert after["engine=fast events=2000"].n == 5
    assert {k: c.as_dict() for k, c in after.items()} == {c.axes(): c.as_dict() for c in aggregate(entries + more)}


def test_a_finished_sweep_keeps_its_cells_and_lets_go_of_its_entries() -> None:
    """What a scrape shows of a sweep is the same before and after it finishes; after, the
    collector holds its cells only (a service that has run many sweeps keeps a summary of each)."""
    registry = CollectorRegistry()
    exporter = Exporter(registry)
    listener = exporter.listener("s7")
    def shown() -> set:
        return {(m.name, tuple(sorted(x.labels.items())), x.value) for m in registry.collect() for x in m.samples
                if m.name.startswith("zonesim_result")}

    entries = [entry(seed=s, alias_violations=s) for s in range(4)]
    listener.start(4, 0)
    listener.update(entries[:2])
    assert shown()  # a scrape mid-sweep: the cell of two entries
    listener.update(entries[2:])
    listener.finish(None)  # no scrape since the last two: settle aggregates them before letting go
    assert exporter.results._sweeps["s7"].entries == {}
    after = shown()
    fresh = CollectorRegistry()
    other = Exporter(fresh).listener("s7")
    other.start(4, 0)
    other.update(entries)
    assert after == {(m.name, tuple(sorted(x.labels.items())), x.value) for m in fresh.collect() for x in m.samples
                     if m.name.startswith("zonesim_result")}
    cell = {"sweep": "s7", "machine": "pa8800", "policy": "unmapped", "workload": "io", "cell": "engine=fast"}
    assert registry.get_sample_value("zonesim_result_simulations", cell) == 4
