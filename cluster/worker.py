"""The worker side of a sweep: plain functions, no Ray. ``run_one(config) -> entry`` runs one
simulation and never raises for the simulation's own failures: a config the simulator refuses or a
stream that breaks an invariant is a *failed* entry with its error, so one bad point cannot stop a
sweep. What reaches Ray is ``run_batch``, several configs in one task, because a task costs Ray a
few milliseconds and a tiny simulation costs less than that.
"""

from __future__ import annotations

import time
import traceback

from cluster.store import config_key
from workloads.config import run_config


def run_one(config: dict[str, object]) -> dict[str, object]:
    """One simulation as a store entry: ``status`` ok with the record, or failed with the error."""
    start = time.perf_counter()
    entry: dict[str, object] = {"key": config_key(config), "config": config, "attempts": 1}
    try:
        entry.update(status="ok", record=run_config(config), error=None)
    except Exception as err:  # noqa: BLE001 - any failure of one simulation is that simulation's result
        where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
        entry.update(status="failed", record=None, error=f"{type(err).__name__}: {err}{at}")
    entry["seconds"] = time.perf_counter() - start
    return entry


def run_batch(configs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [run_one(c) for c in configs]
