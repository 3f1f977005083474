"""Workloads: seeded event-stream generators for the core. Depends on ``core`` only."""

from core.errors import ConfigError
from workloads.base import Param, Workload
from workloads.generators import ALL
from workloads.trace import trace_workload

WORKLOADS: dict[str, Workload] = {w.name: w for w in ALL}


def get_workload(name: str) -> Workload:
    """A built-in generator by name, or ``trace:PATH``: the replay of a recorded trace."""
    if name.startswith("trace:"):
        return trace_workload(name.removeprefix("trace:"))
    if name not in WORKLOADS:
        raise ConfigError("workload", "one of " + ", ".join(sorted(WORKLOADS)) + ", or trace:PATH", name)
    return WORKLOADS[name]


__all__ = ["WORKLOADS", "Param", "Workload", "get_workload"]
