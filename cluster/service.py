"""The long-running sweep service: a named, detached Ray actor that queues sweeps and runs them.

``Coordinator`` is a plain class (tests drive it in-process with the local executor); Ray wraps it
only in ``start`` and ``connect``. It keeps every sweep in a directory under its root, the same
store ``zonesim sweep`` writes, plus a small ``service.json`` saying where the sweep stands
(queued, running, finished, failed, cancelled). A restarted actor (Ray restarts it after a crash)
reads those files and queues again every sweep that was queued or running: the store then runs
only what has no record. Sweeps run one after another on ``parallel`` runner threads (1 by
default: the cluster's CPUs are shared through the driver's in-flight bound, not by running more
sweeps), each through ``sweep.run_spec``, the code path of ``zonesim sweep``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from cluster.driver import Options
from cluster.spec import spec_from_text
from cluster.store import StoreError
from cluster.sweep import open_store, run_spec, store_notes

log = logging.getLogger("zonesim.service")

NAME, NAMESPACE = "zonesim-coordinator", "zonesim"
STATE = "service.json"
PENDING = ("queued", "running")


class Coordinator:
    """Sweeps by name: a queue, runner threads, and each sweep's state on disk."""

    def __init__(self, root: str, parallel: int = 1, executor: Callable[[], object] | None = None,
                 metrics: tuple[str, int] | None = None) -> None:
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.make_executor = executor or _ray_executor
        self.exporter = None
        # One endpoint for the service's whole life, every sweep in it. A finished sweep's results
        # are not forgotten: its gauges are what Grafana shows of it once it has ended (between
        # scrapes there is no knowing whether the last value was seen). They go when the sweep runs
        # again (its listener's start) or the service restarts. A running sweep's ok entries are
        # held, one per config key; a finished one keeps its cells only (SweepResults.settle).
        if metrics is not None:
            from cluster.metrics import Exporter

            self.exporter = Exporter()
            self.exporter.serve(*metrics)
        self.lock = threading.Condition()
        self.queue: deque[str] = deque()
        self.state: dict[str, dict] = {}
        self.cancelled: set[str] = set()
        self._resume()
        for _ in range(parallel):
            threading.Thread(target=self._runner, daemon=True).start()

    # -- the verbs of zonesim submit / status / cancel ------------------------------------------

    def submit(self, spec_text: str, source: str = "spec", force: bool = False) -> dict:
        """Validate and queue a sweep; its store is created (or resumed) now, so a refusal is the
        caller's error, not a failure later. The reply is its status, and in ``notes`` what opening
        the store did with a legacy log (``store_notes``), for the caller to say."""
        spec = spec_from_text(spec_text, source)
        directory = os.path.join(self.root, spec.name)
        with self.lock:
            if self.state.get(spec.name, {}).get("state") in PENDING:
                raise StoreError(f"sweep {spec.name} is already {self.state[spec.name]['state']}")
            store = open_store(spec, directory, force=force)
            store.close()
            self.cancelled.discard(spec.name)
            self._set(spec.name, state="queued", directory=directory, total=len(spec.configs()), done=0, failed=0,
                      submitted=time.time())
            self.queue.append(spec.name)
            self.lock.notify_all()
            return {**self.state[spec.name], "notes": store_notes(store)}

    def status(self, name: str | None = None) -> list[dict]:
        with self.lock:
            if name is not None and name not in self.state:
                raise StoreError(f"no sweep named {name} (known: {', '.join(sorted(self.state)) or 'none'})")
            return [dict(self.state[n]) for n in sorted(self.state) if name in (None, n)]

    def cancel(self, name: str) -> dict:
        with self.lock:
            [status] = self.status(name)
            if status["state"] == "queued":
                self.queue.remove(name)
                self._set(name, state="cancelled")
            elif status["state"] == "running":
                self.cancelled.add(name)  # the driver loop sees it at its next turn
            return dict(self.state[name])

    def ping(self) -> str:
        return self.root

    # -- running --------------------------------------------------------------------------------

    def _runner(self) -> None:
        while True:
            with self.lock:
                while not self.queue:
                    self.lock.wait()
                name = self.queue.popleft()
            try:
                self._set(name, state="running", started=time.time())
                self._run(name)
            except OSError as err:  # its directory went away or turned read-only: nowhere to record it
                self._unrecorded(name, err)

    def _run(self, name: str) -> None:
        directory = self.state[name]["directory"]
        try:
            with open(os.path.join(directory, "spec.toml")) as f:
                spec = spec_from_text(f.read(), name)
            executor = self.make_executor()
            listeners = [_Counts(self, name)] + ([self.exporter.listener(name)] if self.exporter else [])
            out = run_spec(spec, directory, executor, Options(), listeners, stop=lambda: name in self.cancelled)
            state = "cancelled" if out.cancelled else ("failed" if out.failed else "finished")
            self._set(name, state=state, finished=time.time(), failed=len(out.failed), error=None)
        except Exception as err:  # noqa: BLE001 - the service outlives one sweep's trouble
            self._set(name, state="failed", finished=time.time(), error=f"{type(err).__name__}: {err}")

    def _unrecorded(self, name: str, err: OSError) -> None:
        """A sweep whose state file cannot be written: failed in memory (what `zonesim status`
        shows), said on the service's log, and the queue goes on."""
        message = f"cannot record sweep {name}'s state: {err}"
        with self.lock:
            self.state[name].update(state="failed", finished=time.time(), error=message)
        log.error("%s", message)

    # -- state on disk --------------------------------------------------------------------------

    def _set(self, name: str, **fields: object) -> None:
        with self.lock:
            status = self.state.setdefault(name, {"name": name})
            status.update(fields)
            path = os.path.join(str(status["directory"]), STATE)
            with open(path + ".tmp", "w") as f:
                json.dump(status, f)
            os.replace(path + ".tmp", path)

    def _resume(self) -> None:
        """After a restart: every sweep that was queued or running is queued again, in the order
        it was submitted."""
        found = []
        for entry in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, entry, STATE)
            try:
                with open(path) as f:
                    status = json.load(f)
            except (OSError, ValueError):
                continue
            self.state[status["name"]] = status
            if status.get("state") in PENDING:
                found.append((status.get("submitted", 0), status["name"]))
        for _, name in sorted(found):
            self.state[name]["state"] = "queued"
            self.queue.append(name)


class _Counts:
    """A driver listener that keeps the service's counts of one sweep current."""

    def __init__(self, c: Coordinator, name: str) -> None:
        self.c, self.name = c, name

    def start(self, total: int, already: int) -> None:
        self.c._set(self.name, total=total, done=already, failed=0)

    def update(self, entries: list[dict]) -> None:
        with self.c.lock:
            status = self.c.state[self.name]
            failed = sum(1 for e in entries if e["status"] != "ok")
            self.c._set(self.name, done=status["done"] + len(entries), failed=status["failed"] + failed)


def _ray_executor():
    from cluster.executor import RayExecutor

    return RayExecutor(progress=True)


# -- Ray at the boundary ---------------------------------------------------------------------------


def start(root: str, parallel: int = 1, metrics: tuple[str, int] | None = None):
    """The detached, named, restartable coordinator actor (in the cluster ``ray.init`` joined)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on this node: its metrics endpoint (and root directory) are where `zonesim serve` was run
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(Coordinator).options(name=NAME, namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
                                            max_task_retries=-1, num_cpus=0, max_concurrency=16,
                                            get_if_exists=True, scheduling_strategy=here)
    handle = actor.remote(root, parallel, None, metrics)
    ray.get(handle.ping.remote())
    return handle


def connect():
    import ray

    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        raise StoreError("no zonesim service in this Ray cluster: start one with `zonesim serve --address ADDR`") \
            from None
