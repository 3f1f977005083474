"""The Prometheus exporter: sweep progress, throughput, durations, retries and failures, live events
simulated, and the simulations' results per machine, policy and workload.

One ``Exporter`` owns one ``CollectorRegistry`` (injectable: tests read values back from a fresh
one) and hands out a driver listener per sweep. Names follow Prometheus conventions (base units,
``_total`` counters, ``_seconds``, ``_bytes``); ``FAMILIES`` is the one list of them, which the
dashboard is checked against. Labels are bounded sets: the sweep's name, machine, policy, workload,
the cell's other axes, and a small fixed ``state`` / ``status`` / ``kind``; never a seed or a config
hash.

The result gauges are the cells of ``cluster.aggregate`` (what ``zonesim results`` shows): one cell
per config but its seed, its ``cell`` label the config's axes other than machine, policy and workload
as ``Cell.axes`` writes them (``engine=fast events=2000000``), its value the mean over the cell's ok
simulations. They are not kept as gauges but computed when the registry is collected
(``SweepResults``, a custom collector over the ok entries each sweep has reported), so the exporter
and the results table cannot disagree on what a cell is or on its mean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server
from prometheus_client.core import GaugeMetricFamily

from cluster.aggregate import Cell, aggregate, cell_id

SWEEP = ("sweep",)
CELL = ("sweep", "machine", "policy", "workload", "cell")
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# name -> (type, help, labels)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "zonesim_sweep_simulations": ("gauge", "Simulations of the sweep by state (pending, running, ok, failed)",
                                  (*SWEEP, "state")),
    "zonesim_simulations_completed_total": ("counter", "Simulations recorded, by status (ok, failed)",
                                            (*SWEEP, "status")),
    "zonesim_task_duration_seconds": ("histogram", "Round trip of one task (a batch of simulations)", SWEEP),
    "zonesim_simulation_duration_seconds": ("histogram", "Run time of one simulation", SWEEP),
    "zonesim_retries_total": ("counter", "Simulations queued again because their worker died", SWEEP),
    "zonesim_events_simulated_total": ("counter", "Events simulated, reported by running workers as they go", SWEEP),
    "zonesim_result_simulations": ("gauge", "Ok simulations behind the zonesim_result_* means", CELL),
    "zonesim_result_flushes_per_io": ("gauge", "Mean page flushes issued for I/O per I/O request", CELL),
    "zonesim_result_alias_violations": ("gauge", "Mean alias violations per simulation", CELL),
    "zonesim_result_stale_reads": ("gauge", "Mean stale reads per simulation", CELL),
    "zonesim_result_kernel_mapped_peak_bytes": ("gauge", "Mean peak of kernel-mapped memory", CELL),
    "zonesim_result_lowmem_free_min_bytes": ("gauge", "Mean minimum of free lowmem", CELL),
    "zonesim_result_kmap_waits": ("gauge", "Mean kmap calls that slept per simulation", CELL),
    "zonesim_result_alloc_failures": ("gauge", "Mean failed allocations per simulation", CELL),
    "zonesim_result_congruence_exhaustions": ("gauge", "Mean congruence exhaustions per simulation", CELL),
    "zonesim_result_tlb_flushes": ("gauge", "Mean TLB flushes per simulation by kind (global, local, full)",
                                   (*CELL, "kind")),
    "zonesim_result_cache_flushes": ("gauge", "Mean cache flushes per simulation by kind (page, all, tmpalias)",
                                     (*CELL, "kind")),
    "zonesim_result_estimated_cycles": ("gauge", "Mean estimated cycles of the kernel work per simulation", CELL),
}

# result gauge -> (record key, extra labels)
RESULTS: dict[str, list[tuple[str, dict[str, str]]]] = {
    "zonesim_result_flushes_per_io": [("flushes_per_io", {})],
    "zonesim_result_alias_violations": [("alias_violations", {})],
    "zonesim_result_stale_reads": [("stale_reads", {})],
    "zonesim_result_kernel_mapped_peak_bytes": [("kernel_mapped_bytes_peak", {})],
    "zonesim_result_lowmem_free_min_bytes": [("lowmem_free_min_bytes", {})],
    "zonesim_result_kmap_waits": [("kmap_waits", {})],
    "zonesim_result_alloc_failures": [("alloc_failures", {})],
    "zonesim_result_congruence_exhaustions": [("congruence_exhaustions", {})],
    "zonesim_result_tlb_flushes": [(f"tlb_flush_{k}", {"kind": k}) for k in ("global", "local", "full")],
    "zonesim_result_cache_flushes": [(f"cache_flush_{k}", {"kind": k}) for k in ("page", "all", "tmpalias")],
    "zonesim_result_estimated_cycles": [("cycles_total", {})],
}


class _Scrapes:
    """A collector with no metrics that counts how often the registry was collected (each scrape
    of /metrics collects it once), so a sweep knows whether anything is watching."""

    def __init__(self) -> None:
        self.count = 0

    def collect(self):
        self.count += 1
        return iter(())


RESULT_FAMILIES = ("zonesim_result_simulations", *RESULTS)


class SweepResults:
    """The result gauges as a custom collector: each sweep's ok entries, aggregated into cells by
    ``cluster.aggregate`` when the registry is collected.

    One entry per config key: the first ok one. The same key can come twice (a config that finished
    twice, or a stored record through ``resumed`` that a run then reports again); counting it twice
    would weigh that seed double in the mean. A collection aggregates again only the cells that got
    entries since the last one, and does so outside the lock (a scrape of a large sweep must not
    hold up the driver's next ``add``); each cell is what ``aggregate`` gives for its entries."""

    def __init__(self) -> None:
        self._sweeps: dict[str, _SweepCells] = {}
        self._lock = threading.Lock()  # scrapes come on the endpoint's thread, entries on the driver's

    def add(self, sweep: str, entries: list[dict]) -> None:
        ok = [(cell_id(e["config"]), e) for e in entries if e.get("status") == "ok"]
        with self._lock:
            cells = self._sweeps.setdefault(sweep, _SweepCells())
            for cid, e in ok:
                if e["key"] not in cells.keys:
                    cells.keys.add(e["key"])
                    cells.entries.setdefault(cid, []).append(e)

    def forget(self, sweep: str) -> None:
        with self._lock:
            self._sweeps.pop(sweep, None)

    def settle(self, sweep: str) -> None:
        """A finished sweep keeps only its cells: aggregated once more, then its entries dropped,
        so a long-lived service holds a summary per sweep, not every record it ran. Its keys stay
        (strings), so an entry reported again is still ignored; none new comes for the sweep after
        this until it is forgotten (a sweep run again starts afresh)."""
        self.cells(sweep)
        with self._lock:
            cells = self._sweeps.get(sweep)
            if cells is not None:
                cells.entries = {}

    def cells(self, sweep: str) -> list[Cell]:
        """The sweep's cells, in the order of their cell ids."""
        with self._lock:
            cells = self._sweeps.get(sweep)
            if cells is None:
                return []
            stale = {cid: list(es) for cid, es in cells.entries.items()
                     if cid not in cells.done or cells.done[cid].n != len(es)}
        fresh = {cid: aggregate(es)[0] for cid, es in stale.items()}  # one cell id: one cell
        with self._lock:
            for cid, cell in fresh.items():
                if cid not in cells.done or cells.done[cid].n < cell.n:  # a scrape at the same time may be ahead
                    cells.done[cid] = cell
            return [cells.done[cid] for cid in sorted(cells.done)]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _families()
        with self._lock:
            sweeps = list(self._sweeps)
        for sweep in sweeps:
            for cell in self.cells(sweep):
                labels = [sweep, *(str(cell.config.get(k)) for k in CELL[1:4]), cell.axes()]
                families["zonesim_result_simulations"].add_metric(labels, cell.n)
                for name, sources in RESULTS.items():
                    for key, extra in sources:
                        if key in cell.stats:
                            families[name].add_metric([*labels, *extra.values()], cell.stats[key].mean)
        return iter(families.values())


class _SweepCells:
    """One sweep's ok entries, the first of each config key, by cell; and each cell as last aggregated.
    Entries only ever join a cell, so a cell aggregated from fewer entries than it has is stale.
    A settled sweep has no entries left, only its keys and its cells."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.entries: dict[str, list[dict]] = {}  # cell id -> its entries, in the order they came
        self.done: dict[str, Cell] = {}  # cell id -> the cell of its first done[cid].n entries


def _families() -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(name, FAMILIES[name][1], labels=FAMILIES[name][2]) for name in RESULT_FAMILIES}


class Exporter:
    """The metric families in one registry: instruments for progress, a collector for results."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._scrapes = _Scrapes()
        self.registry.register(self._scrapes)
        kinds = {"counter": Counter, "gauge": Gauge}
        self.m = {}
        for name, (kind, text, labels) in FAMILIES.items():
            if name in RESULT_FAMILIES:
                continue
            if kind == "histogram":
                self.m[name] = Histogram(name, text, labels, registry=self.registry, buckets=DURATION_BUCKETS)
            else:
                self.m[name] = kinds[kind](name, text, labels, registry=self.registry)
        self.results = SweepResults()
        self.registry.register(self.results)
        self.server = None

    def listener(self, sweep: str) -> SweepListener:
        return SweepListener(self, sweep)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the port (``port`` 0: one the OS picks)."""
        self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self.server.server_port

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def scrapes(self) -> int:
        """Collections of the registry so far: scrapes of /metrics, and pushes."""
        return self._scrapes.count

    def push(self, gateway: str, sweep: str) -> None:
        """The current values to a Pushgateway, grouped by sweep (they replace that group's last push)."""
        push_to_gateway(gateway, job="zonesim", grouping_key={"sweep": sweep}, registry=self.registry)

    def forget(self, sweep: str) -> None:
        """Drop a sweep's results, as a sweep starting again does (the service keeps a finished
        sweep's gauges until then: see ``cluster.service``)."""
        self.results.forget(sweep)


class SweepListener:
    """A driver listener feeding the exporter for one sweep (see cluster.driver)."""

    def __init__(self, e: Exporter, sweep: str) -> None:
        self.e, self.sweep = e, sweep
        self.state = {"pending": 0, "running": 0, "ok": 0, "failed": 0}

    def _states(self) -> None:
        for state, n in self.state.items():
            self.e.m["zonesim_sweep_simulations"].labels(self.sweep, state).set(n)

    def start(self, total: int, already: int) -> None:
        self.e.forget(self.sweep)  # a sweep run again (resumed, forced) is counted afresh
        self.state.update(pending=total - already, running=0, ok=already, failed=0)
        for status in ("ok", "failed"):  # present from the start, so rate() has a first sample
            self.e.m["zonesim_simulations_completed_total"].labels(self.sweep, status)
        self.e.m["zonesim_retries_total"].labels(self.sweep)
        self.e.m["zonesim_events_simulated_total"].labels(self.sweep)
        self._states()

    def update(self, entries: list[dict]) -> None:
        for entry in entries:
            status = "ok" if entry["status"] == "ok" else "failed"
            self.state[status] += 1
            self.e.m["zonesim_simulations_completed_total"].labels(self.sweep, status).inc()
            self.e.m["zonesim_simulation_duration_seconds"].labels(self.sweep).observe(float(entry["seconds"]))
        self.e.results.add(self.sweep, entries)
        self._states()

    def resumed(self, entries: list[dict]) -> None:
        """Records a resumed sweep stored before: into the result means (they are not completions
        of this run, so the counters do not move)."""
        self.e.results.add(self.sweep, entries)

    def running(self, queued: int, in_flight: int) -> None:
        """Simulations not handed out yet, and those in tasks in flight (from the driver's queue)."""
        self.state.update(pending=queued, running=in_flight)
        self._states()

    def task(self, seconds: float) -> None:
        self.e.m["zonesim_task_duration_seconds"].labels(self.sweep).observe(seconds)

    def retried(self, n: int) -> None:
        self.e.m["zonesim_retries_total"].labels(self.sweep).inc(n)

    def events(self, n: int) -> None:
        self.e.m["zonesim_events_simulated_total"].labels(self.sweep).inc(n)

    def finish(self, outcome) -> None:
        self.state["running"] = 0
        self._states()
        self.e.results.settle(self.sweep)


def wait_grace(seconds: float) -> None:
    """Keep the process (and so the endpoint) up for a last scrape after a sweep ends."""
    time.sleep(max(seconds, 0.0))
