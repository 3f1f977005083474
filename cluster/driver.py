"""The sweep driver: the one loop that hands simulations to an executor and records what returns.

It reads like a kernel main loop. Each turn it (1) tops the executor up to ``max_in_flight``
tasks, (2) waits for at least one to finish, (3) writes the finished entries to the store and lets
go of the task, and (4) tells its listeners (the progress line, later the metrics exporter).
Everything it needs is injected: the spec's configs, the store, the executor, the listeners, and
a ``stop`` callable the sweep service uses to cancel a sweep.

Batching: a task costs the executor milliseconds (Ray's scheduling and serialisation), a tiny
simulation less than that, so configs go out in batches sized from the seconds per simulation
seen so far, aiming at ``target_task_s`` per task; the first tasks are single configs so the
estimate comes quickly, and a batch never holds more than a fair share of what is left, so the
last tasks still spread over every slot.

Retries: when a worker process dies its task's configs go back to the front of the queue one by
one (one poisonous config cannot take others down with it), each at most ``retries`` more times,
then they are recorded as failed. A simulation that raises is recorded as failed at once: running
it again would raise again (a run is a pure function of its config).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cluster.executor import WorkerDied
from workloads.config import config_key

Entry = dict[str, object]
Config = dict[str, object]


# -- the seams: what the driver is given -----------------------------------------------------------


class Executor(Protocol):
    """Where tasks run (``cluster.executor``: ``LocalExecutor`` in-process, ``RayExecutor``). A task
    is a list of configs; its handle is whatever the executor hands back."""

    slots: int  # tasks that can run at once

    def submit(self, configs: list[Config]) -> Hashable: ...

    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        """The handles among ``handles`` that have finished (at least one, unless ``timeout`` passed)."""

    def result(self, handle: Hashable) -> list[Entry]:
        """A finished task's store entries; ``WorkerDied`` if its worker process died."""

    def cancel(self, handle: Hashable) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """An executor whose workers report events simulated as they go (``RayExecutor``)."""

    def progress(self) -> int:
        """Events reported since the last call."""


@runtime_checkable
class ScalesOut(Protocol):
    """An executor that starts its workers only when the work left is worth their start-up
    (``cluster.executor_embedded.EmbeddedRay``)."""

    def backlog(self, sims: int) -> None:
        """The simulations not finished yet (queued or in flight), told each turn."""


class Store(Protocol):
    """Where entries are recorded (``cluster.store.Store``)."""

    def done(self) -> set[str]:
        """Keys recorded ok: not run again."""

    def entries(self) -> Iterator[Entry]: ...

    def append(self, entries: Iterable[Entry]) -> int: ...


class Listener(Protocol):
    """Every verb the driver tells its listeners (the progress line, the exporter, the service's
    counts). A listener defines the verbs it needs: the driver asks each only for those it has."""

    def start(self, total: int, already: int) -> None:
        """The sweep's simulations, and how many were recorded before this run."""

    def resumed(self, entries: list[Entry]) -> None:
        """The ok entries a resumed store holds of this spec (asked only if something listens)."""

    def running(self, queued: int, in_flight: int) -> None: ...

    def task(self, seconds: float) -> None:
        """A task came back after ``seconds``."""

    def retried(self, n: int) -> None: ...

    def update(self, entries: list[Entry]) -> None:
        """Entries just recorded."""

    def events(self, n: int) -> None:
        """Events the workers reported since the last call (``ReportsProgress`` executors only)."""

    def tick(self) -> None:
        """Once per turn of the loop."""

    def finish(self, outcome: Outcome) -> None: ...


@dataclass
class Options:
    max_in_flight: int | None = None  # tasks at once; default twice the executor's slots
    retries: int = 2  # re-runs of a config whose worker died
    target_task_s: float = 0.25
    max_batch: int = 256


@dataclass
class Outcome:
    total: int  # simulations in the spec
    already: int  # recorded before this run (resume)
    ran: int = 0  # recorded by this run, ok or failed
    failed: list[Entry] = field(default_factory=list)
    retried: int = 0  # configs re-queued after a worker died
    seconds: float = 0.0
    cancelled: bool = False


class _Sizer:
    """Batch size from the mean seconds per simulation seen so far."""

    def __init__(self, o: Options) -> None:
        self.o, self.sims, self.seconds = o, 0, 0.0

    def observe(self, entries: Sequence[Entry]) -> None:
        self.sims += len(entries)
        self.seconds += sum(float(e.get("seconds", 0.0)) for e in entries)

    def size(self, left: int, slots: int) -> int:
        if self.sims < slots:  # no estimate yet: one per task
            return 1
        per_sim = max(self.seconds / self.sims, 1e-6)
        fair = max(left // (2 * slots), 1)
        return int(max(1, min(self.o.target_task_s / per_sim, self.o.max_batch, fair)))


def run_sweep(configs: Iterable[Config], store: Store, executor: Executor, options: Options | None = None,
              listeners: Sequence[Listener] = (), stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Run every config the store has no ok record of; returns what happened."""
    o = options or Options()
    start = time.perf_counter()
    configs = list(configs)
    done = store.done()
    queue = deque(c for c in configs if config_key(c) not in done)
    out = Outcome(total=len(configs), already=len(configs) - len(queue))
    _hook(listeners, "start", out.total, out.already)
    if out.already and any(hasattr(listener, "resumed") for listener in listeners):
        wanted = {config_key(c) for c in configs}  # what a resumed store already holds of this spec
        _hook(listeners, "resumed", [e for e in store.entries() if e["status"] == "ok" and e["key"] in wanted])
    limit = o.max_in_flight or 2 * executor.slots
    attempts: dict[str, int] = {}
    sizer = _Sizer(o)
    in_flight: dict[object, list[dict[str, object]]] = {}
    sent: dict[object, float] = {}  # when each task in flight was submitted
    polled = 0.0
    while queue or in_flight:
        if stop():
            _cancel(executor, in_flight)
            out.cancelled = True
            break
        # -- top up: at most `limit` tasks in flight ---------------------------------------------
        while queue and len(in_flight) < limit:
            n = sizer.size(len(queue), executor.slots)
            batch = [queue.popleft() for _ in range(min(n, len(queue)))]
            handle = executor.submit(batch)
            in_flight[handle], sent[handle] = batch, time.perf_counter()
        running = sum(len(b) for b in in_flight.values())
        _hook(listeners, "running", len(queue), running)
        if isinstance(executor, ScalesOut):
            executor.backlog(len(queue) + running)
        # -- wait for something to finish -----------------------------------------------------------
        for handle in executor.wait(list(in_flight), timeout=1.0):
            batch = in_flight.pop(handle)
            _hook(listeners, "task", time.perf_counter() - sent.pop(handle))
            retried = out.retried
            entries = _collect(executor, handle, batch, attempts, queue, o, out)
            if out.retried > retried:
                _hook(listeners, "retried", out.retried - retried)
            # -- record, then let go of the task: nothing of it stays in the driver ---------------
            if entries:
                store.append(entries)
                sizer.observe(entries)
                out.ran += len(entries)
                out.failed += [e for e in entries if e["status"] != "ok"]
            _hook(listeners, "update", entries)
        if isinstance(executor, ReportsProgress) and (not (queue or in_flight) or time.perf_counter() - polled >= 0.5):
            _hook(listeners, "events", executor.progress())  # the workers' live reports, twice a second
            polled = time.perf_counter()
        _hook(listeners, "tick")
    out.seconds = time.perf_counter() - start
    _hook(listeners, "finish", out)
    return out


def _collect(executor: Executor, handle: Hashable, batch: list[Config], attempts: dict[str, int],
             queue: deque[Config], o: Options, out: Outcome) -> list[Entry]:
    """A finished task's entries; if its worker died, its configs go back in the queue or, past
    their retries, come back as failed entries."""
    try:
        entries = executor.result(handle)
    except WorkerDied as err:
        failed = []
        for config in reversed(batch):
            key = config_key(config)
            attempts[key] = attempts.get(key, 1) + 1
            if attempts[key] <= 1 + o.retries:
                queue.appendleft(config)
                out.retried += 1
            else:
                failed.append({"key": key, "config": config, "status": "failed", "record": None,
                               "error": f"worker died {attempts[key] - 1} times: {err}",
                               "attempts": attempts[key] - 1, "seconds": 0.0})
        return failed[::-1]
    for e in entries:
        e["attempts"] = attempts.get(str(e["key"]), 1)
    return entries


def _hook(listeners: Sequence[Listener], name: str, *args: object) -> None:
    """A ``Listener`` verb: listeners without it are not asked, so none has to define a verb it ignores."""
    for listener in listeners:
        verb = getattr(listener, name, None)
        if verb is not None:
            verb(*args)


def _cancel(executor: Executor, in_flight: dict) -> None:
    for handle in in_flight:
        executor.cancel(handle)
    in_flight.clear()
