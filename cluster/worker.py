"""The worker side of a sweep: plain functions, no Ray. ``run_one(config) -> entry`` runs one
simulation and never raises for the simulation's own failures: a config the simulator refuses or a
stream that breaks an invariant is a *failed* entry with its error, so one bad point cannot stop a
sweep. What reaches Ray is ``run_batch``, several configs in one task, because a task costs Ray a
few milliseconds and a tiny simulation costs less than that.
"""

from __future__ import annotations

import time
import traceback

from workloads.config import config_key, run_config


class Reporter:
    """Events simulated, sent to ``sink`` (anything with ``report(n)``) at most every ``every_s``
    seconds while a simulation runs and once at its end: the live-progress channel, a handful of
    small messages per second whatever the batch size."""

    def __init__(self, sink, every_s: float = 0.5) -> None:
        self.sink, self.every_s = sink, every_s
        self.pending = self.seen = 0
        self.last = time.monotonic()

    def __call__(self, seen: int) -> None:
        self.pending += seen - self.seen
        self.seen = seen
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.sink(self.pending)
        self.pending, self.last = 0, time.monotonic()


class ProgressSink:
    """Where workers report events simulated (an actor: fire-and-forget calls, summed here until
    the driver takes them)."""

    def __init__(self) -> None:
        self.events = 0

    def report(self, n: int) -> None:
        self.events += n

    def take(self) -> int:
        n, self.events = self.events, 0
        return n


def run_one(config: dict[str, object], sink=None) -> dict[str, object]:
    """One simulation as a store entry: ``status`` ok with the record, or failed with the error.
    ``sink(n)``, if given, hears about events as they are simulated."""
    start = time.perf_counter()
    entry: dict[str, object] = {"key": config_key(config), "config": config, "attempts": 1}
    report = Reporter(sink) if sink is not None else None
    try:
        entry.update(status="ok", record=run_config(config, on_batch=report), error=None)
    except Exception as err:  # noqa: BLE001 - any failure of one simulation is that simulation's result
        where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
        entry.update(status="failed", record=None, error=f"{type(err).__name__}: {err}{at}")
    if report is not None:
        report.flush()
    entry["seconds"] = time.perf_counter() - start
    return entry


def run_batch(configs: list[dict[str, object]], sink=None) -> list[dict[str, object]]:
    return [run_one(c, sink) for c in configs]


def run_batch_counted(configs: list[dict[str, object]]) -> tuple[list[dict[str, object]], int]:
    """``run_batch`` in a process that cannot report as it goes (a helper beside the driver): the
    entries and the events their simulations ran, failed ones' included, as a sink would have heard."""
    sink = ProgressSink()
    return run_batch(configs, sink.report), sink.take()
