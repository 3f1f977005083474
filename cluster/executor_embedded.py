"""An embedded Ray started only when the sweep's work is worth its start-up.

A fresh single-node Ray costs this machine about 3.5-4.5 s to start (the GCS, the raylet, four
agents and the first workers, each a Python process importing Ray) and 0.1-0.4 s to shut down: more
than a sweep of a thousand tiny simulations costs in all. So ``EmbeddedRay`` begins by running
tasks in the driver's own process, one per ``wait``, and starts Ray in a background thread only
when its estimate of the work left (``backlog``: the simulations left, times the seconds per
simulation it has seen) passes ``start_after_s``.
From then on the driver keeps working in-process while Ray starts, and once Ray is up every task
not yet run goes to its workers: sent by the thread that started Ray the moment it is up, not when
the driver's simulation in hand ends, so the workers start (and pay their imports) meanwhile. The
records are the same wherever a task runs (a simulation is a pure function of its config);
``ran_here`` and ``ran_on_ray`` count where they did.

The break-even: with Ray taking S to start and D to stop on ``slots`` CPUs, work W (serial
seconds) finishes in about W alone, or in S + (W - S) / slots + D with Ray started now. On two
CPUs with S = 4 and D = 0.3 that is W > 2 (S / 2 + D), about 4.6 s; but while Ray starts, the
thread starting it takes the driver's GIL (importing Ray, launching its processes), and the
driver's own simulations ran 1-1.6 s slower over those seconds (measured here): ``START_AFTER_S``
is 8.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from cluster.executor import ProgressSink, RayExecutor
from cluster.worker import run_batch

START_AFTER_S = 8.0


class EmbeddedRay:
    """The ``Executor`` verbs over the driver's process until Ray is up, then over ``RayExecutor``.

    Handles are ints whichever side runs the task. ``start_after_s`` 0 starts Ray at the first
    estimate; ``float('inf')`` never (a sweep that stays in-process)."""

    def __init__(self, num_cpus: int | None = None, progress: bool = False,
                 start_after_s: float = START_AFTER_S) -> None:
        self.slots = num_cpus or os.cpu_count() or 1
        self.start_after_s = start_after_s
        self.ran_here = self.ran_on_ray = 0
        self.started_at: float | None = None  # seconds after creation that Ray was asked for
        self.up_at: float | None = None  # and was up
        self.down_s: float | None = None  # seconds close took to shut it down
        self._created = time.perf_counter()
        self._num_cpus, self._progress = num_cpus, progress
        self._here: dict[int, list[dict[str, object]]] = {}  # submitted, not run yet, Ray not up
        self._done: dict[int, list[dict[str, object]]] = {}
        self._remote: dict[int, object] = {}  # handle -> Ray's object ref
        self._by_ref: dict[object, int] = {}
        self._next = 0
        self._sink = ProgressSink()  # events simulated in this process, taken with Ray's by progress
        self._here_s = 0.0  # seconds run in this process
        self._fastest = self._latest = float("inf")  # seconds per simulation: the least seen here, the last task's
        self._ray: RayExecutor | None = None
        self._failed: BaseException | None = None
        self._up, self._closing = threading.Event(), threading.Event()
        # (held by both threads over _here, _remote and _by_ref: the starting thread promotes)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- Ray in the background ----------------------------------------------------------------------

    def backlog(self, sims: int) -> None:
        """Start Ray if the ``sims`` not finished yet are worth it (``worth_starting``)."""
        if self._thread is None and self.worth_starting(sims):
            self.started_at = time.perf_counter() - self._created
            self._thread = threading.Thread(target=self._start_ray, name="zonesim-ray-start", daemon=True)
            self._thread.start()

    def worth_starting(self, sims: int) -> bool:
        """Whether ``sims`` more simulations are worth Ray's start-up, judged by what this process
        has run once it has worked half a second: the first few single simulations are no
        estimate of tiny ones, which read up to twice their cost while other processes start or
        wind down beside them (measured here: 9.9, 4.6 and 3.8 ms for the first three with Ray's
        workers starting, against a median of 2.3 ms), and 2,000 of them at 4 ms would pass the
        8 s threshold that 2.3 ms does not. The work left is their count times the
        fastest seconds per simulation seen here (the fastest, because a process's first
        simulation pays its imports and any one can lose time to GC or a neighbour). Whatever that
        estimate, once the driver has itself worked ``start_after_s`` the latest task's rate is
        trusted too, so a sweep whose later configs cost far more than its first loses at most
        that much; but only if what is left at that rate still passes ``start_after_s``, so that
        a sweep near its end does not start a Ray it would only wait for and shut down."""
        if self.start_after_s == 0:
            return True
        if self._here_s < min(0.5, self.start_after_s):
            return False
        if self._fastest * sims > self.start_after_s:
            return True
        return self._here_s >= self.start_after_s and self._latest * sims > self.start_after_s

    def _start_ray(self) -> None:
        # The thread lives until close: Ray's daemons are started with a parent-death signal, which
        # Linux sends when the *thread* that spawned them exits, not the process.
        try:
            ray = RayExecutor(num_cpus=self._num_cpus, progress=self._progress)
            with self._lock:
                self._ray = ray
                self.up_at = time.perf_counter() - self._created
                self._promote()
        except BaseException as err:  # noqa: BLE001 - re-raised in the driver's thread by wait
            self._failed = err
        self._up.set()
        self._closing.wait()

    def _promote(self) -> bool:
        """Once Ray is up, every task not run yet goes to its workers; whether it is up. (Called
        with the lock held.)"""
        if self._failed is not None:
            raise self._failed
        if self._ray is None:
            return False
        for handle, configs in self._here.items():
            self._send(handle, configs)
        self._here.clear()
        return True

    def _send(self, handle: int, configs: list[dict[str, object]]) -> None:
        ref = self._ray.submit(configs)
        self._remote[handle], self._by_ref[ref] = ref, handle

    # -- the Executor verbs ------------------------------------------------------------------------

    def submit(self, configs: list[dict[str, object]]) -> int:
        self._next += 1
        with self._lock:
            if self._promote():
                self._send(self._next, configs)
            else:
                self._here[self._next] = configs
        return self._next

    def wait(self, handles: Sequence[int], timeout: float) -> list[int]:
        ready = [h for h in handles if h in self._done]
        if ready:
            return ready
        with self._lock:
            self._promote()
            waiting = [h for h in handles if h in self._here]
            configs = self._here.pop(waiting[0]) if waiting else None
        if configs is not None:  # Ray is not up: the driver runs the oldest task itself
            handle = waiting[0]
            start = time.perf_counter()
            self._done[handle] = run_batch(configs, self._sink.report)
            seconds = time.perf_counter() - start
            self._here_s += seconds
            self._latest = seconds / len(configs)
            self._fastest = min(self._fastest, self._latest)
            self.ran_here += len(configs)
            return [handle]
        with self._lock:
            refs = [self._remote[h] for h in handles if h in self._remote]
        return [self._by_ref[ref] for ref in self._ray.wait(refs, timeout)] if refs else []

    def result(self, handle: int) -> list[dict[str, object]]:
        if handle in self._done:
            return self._done.pop(handle)
        with self._lock:
            ref = self._remote.pop(handle)
            del self._by_ref[ref]
        entries = self._ray.result(ref)
        self.ran_on_ray += len(entries)
        return entries

    def cancel(self, handle: int) -> None:
        self._done.pop(handle, None)
        with self._lock:
            self._here.pop(handle, None)
            ref = self._remote.pop(handle, None)
            if ref is not None:
                del self._by_ref[ref]
        if ref is not None:
            self._ray.cancel(ref)

    def progress(self) -> int:
        """Events simulated since the last call, in this process and by Ray's workers."""
        n = self._sink.take()
        if self._progress and self._up.is_set() and self._ray is not None:
            n += self._ray.progress()
        return n

    def close(self) -> None:
        """Shut Ray down if it was started (waiting for it to be up first: a half-started Ray
        cannot be stopped cleanly)."""
        if self._thread is None:
            return
        self._up.wait()
        start = time.perf_counter()
        try:
            if self._ray is not None:
                self._ray.close()
                self.down_s = time.perf_counter() - start
        finally:
            self._closing.set()
            self._thread.join()

    def describe(self) -> str:
        """Where the simulations ran, for the sweep's last lines."""
        if self.started_at is None:
            return (f"ray: not started ({self.ran_here} simulations ran in the driver; the work never passed "
                    f"{self.start_after_s:g} s, Ray's start-up and shut-down)")
        up = f"up at {self.up_at:.1f} s" if self.up_at is not None else "never came up"
        return (f"ray: embedded, started at {self.started_at:.1f} s, {up}; {self.ran_on_ray} simulations ran on "
                f"its workers, {self.ran_here} in the driver meanwhile")
