"""Workloads: seeded event-stream generators for the core. Depends on ``core`` only."""

from core.errors import ConfigError
from workloads.base import Param, Workload
from workloads.generators import ALL

WORKLOADS: dict[str, Workload] = {w.name: w for w in ALL}


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ConfigError("workload", "one of " + ", ".join(sorted(WORKLOADS)), name)
    return WORKLOADS[name]


__all__ = ["WORKLOADS", "Param", "Workload", "get_workload"]
