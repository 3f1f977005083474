"""A run: boot a kernel, feed it a stream batch by batch, check invariants, build the record."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core import fast, reference
from core.errors import ConfigError, StreamError
from core.events import Stream, check_batch
from core.invariants import check_all
from core.kernel import Kernel
from core.machine import Machine
from core.policy import Policy
from core.record import build_record

ENGINES: dict[str, Callable[[Kernel, np.ndarray], None]] = {
    "fast": fast.run_batch,
    "reference": reference.run_batch,
}


def simulate(machine: Machine, policy: Policy, stream: Stream, engine: str = "fast",
             check: bool = True, on_batch: Callable[[int], None] | None = None) -> Kernel:
    """Run ``stream`` on a freshly booted kernel; the kernel state is returned for inspection.
    ``on_batch(events so far)`` is called after each batch (live progress for the sweep's metrics)."""
    if engine not in ENGINES:
        raise ConfigError("engine", "one of " + ", ".join(sorted(ENGINES)), engine)
    run_batch = ENGINES[engine]
    k = Kernel(machine, policy, stream.max_handles)
    seen = 0
    for number, batch in enumerate(stream):
        try:
            check_batch(batch, stream.max_handles, machine.cpus)
            run_batch(k, batch)
            if k.vi is not None:
                k.vi.cache.settle()
        except StreamError as err:  # say where: a trace or a log is fixed by finding the event
            raise StreamError(f"{stream.source}: batch {number} (events {seen}..{seen + len(batch) - 1}): "
                              f"{err}") from None
        seen += len(batch)
        if on_batch is not None:
            on_batch(seen)
    if check:
        check_all(k)
    return k


def run(machine: Machine, policy: Policy, stream: Stream, identity: dict[str, object],
        engine: str = "fast", check: bool = True, on_batch: Callable[[int], None] | None = None) -> dict[str, object]:
    """Simulate and return the flat record."""
    k = simulate(machine, policy, stream, engine=engine, check=check, on_batch=on_batch)
    return build_record(k, {**identity, "engine": engine})
