"""An embedded Ray started only when the sweep's work is worth its start-up.

A fresh single-node Ray costs this machine about 3.5-4.5 s to start (the GCS, the raylet, four
agents and the first workers, each a Python process importing Ray) and 0.1-0.4 s to shut down: more
than a sweep of a thousand tiny simulations costs in all. So ``EmbeddedRay`` begins by running
tasks in the driver's own process, one per ``wait``, and starts Ray in a background thread only
when its estimate of the work left (``backlog``: the simulations left, times the seconds per
simulation it has seen) passes ``start_after_s``.
Below that, once the work left passes ``HELPERS_AFTER_S``, the other CPUs are not left idle: a
spawned helper process per CPU beyond the driver's takes the newest tasks waiting (two at a
time), the driver the oldest (a spawn costs a tenth of Ray's start-up).
Once Ray is asked for, the helpers take nothing new and the driver keeps working in-process while
Ray starts; once Ray is up every task
not yet run goes to its workers: sent by the thread that started Ray the moment it is up, not when
the driver's simulation in hand ends, so the workers start (and pay their imports) meanwhile. The
records are the same wherever a task runs (a simulation is a pure function of its config);
``ran_here``, ``ran_beside`` and ``ran_on_ray`` count where they did.

Why 8 s: Ray is how zonesim runs a sweep (its workers report events as they go, and the code path
is the one a cluster takes); the helpers only spare a short sweep Ray's start-up. With Ray taking S
to start and D to stop on ``slots`` CPUs, work W (serial seconds) takes about W / slots on the
driver and its helpers, or S + (W - S) / slots + D once Ray is started: on one node Ray never wins
on time, and costs about S (1 - 1 / slots) + D, 2.3 s on two CPUs with S = 4 and D = 0.3, plus its
daemons' CPU (measured: 1.17x a Pool end to end over 64 one-second simulations). Work worth less
than ``START_AFTER_S`` = 8 s finishes on two CPUs in under 4 s, before a Ray asked for at its
start would be up.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool

from cluster.executor import ProgressSink, RayExecutor, WorkerDied
from cluster.worker import run_batch, run_batch_counted

START_AFTER_S = 8.0
HELPERS_AFTER_S = 1.0


class _Helpers:
    """``n`` spawned worker processes beside the driver, for work worth a spawn but not Ray's
    start-up: a helper costs about 0.4 core-seconds to spawn and import zonesim, on a CPU the
    driver leaves idle, against Ray's 5 core-seconds over 3-4.5 s. Spawned, not forked: the driver
    may hold Ray's threads (so a script that drives one guards its main module, as any spawning
    program must); they ignore SIGINT, which the driver handles for them.

    Each helper holds up to ``DEPTH`` tasks, one running and one queued behind it in the pool,
    so that it starts the next the moment one ends rather than at the driver's next turn (polled
    only then, a helper sat idle up to a task's length and ran a quarter of the work). The
    driver's thread alone calls these verbs: a done-callback that refilled from the pool's thread
    would take the pool's own lock twice when it breaks (Python 3.12 fails the futures under it).
    Handles are the caller's."""

    DEPTH = 2

    def __init__(self, n: int) -> None:
        self.n = n
        self.running: dict[int, futures.Future] = {}  # sent, result not taken yet
        self.broken = False  # a helper died: the pool takes no more work
        self._pool: futures.ProcessPoolExecutor | None = None

    def spawned(self) -> bool:
        return self._pool is not None

    def free(self) -> bool:
        """Whether a helper has room (a task counts as ended once it has, before its result is taken)."""
        return not self.broken and sum(not f.done() for f in self.running.values()) < self.DEPTH * self.n

    def send(self, handle: int, configs: list[dict[str, object]]) -> bool:
        """Whether the task went out (not if the pool has broken)."""
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = futures.ProcessPoolExecutor(self.n, mp_context=spawn, initializer=signal.signal,
                                                     initargs=(signal.SIGINT, signal.SIG_IGN))
        try:
            self.running[handle] = self._pool.submit(run_batch_counted, configs)
        except BrokenProcessPool:
            self.broken = True
            return False
        return True

    def finished(self, handles: Sequence[int], timeout: float = 0.0) -> list[int]:
        """The handles among ``handles`` whose task has finished, waiting up to ``timeout`` for one."""
        mine = {h: self.running[h] for h in handles if h in self.running}
        if timeout and mine:
            futures.wait(mine.values(), timeout, return_when=futures.FIRST_COMPLETED)
        return [h for h, future in mine.items() if future.done()]

    def result(self, handle: int) -> tuple[list[dict[str, object]], int]:
        """A finished task's entries and the events its simulations ran. A pool that breaks fails
        every task it holds, the queued ones too: each is charged an attempt it did not run."""
        try:
            return self.running.pop(handle).result()
        except BrokenProcessPool as err:
            self.broken = True
            raise WorkerDied(f"a helper process died: {err}") from None

    def cancel(self, handle: int) -> None:
        future = self.running.pop(handle, None)
        if future is not None:
            future.cancel()  # (a task already running finishes, unheard)

    def close(self) -> None:
        """Stop the helpers, once the tasks they hold have run (at most ``DEPTH`` each)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class EmbeddedRay:
    """The ``Executor`` verbs over the driver's process until Ray is up, then over ``RayExecutor``.

    Handles are ints whichever side runs the task. ``start_after_s`` 0 starts Ray at the first
    estimate; ``float('inf')`` never (a sweep that stays in-process)."""

    def __init__(self, num_cpus: int | None = None, progress: bool = False,
                 start_after_s: float = START_AFTER_S) -> None:
        self.slots = num_cpus or os.cpu_count() or 1
        self.start_after_s = start_after_s
        self.ran_here = self.ran_beside = self.ran_on_ray = 0  # in the driver, in its helpers, on Ray
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
        self._fastest = self._latest = float("inf")  # seconds per simulation: the least seen, the last task's
        self._left = 0  # simulations not finished, as backlog last heard
        self._helpers = _Helpers(self.slots - 1)
        self._ray: RayExecutor | None = None
        self._failed: BaseException | None = None
        self._up, self._closing = threading.Event(), threading.Event()
        # (held by both threads over _here, _remote and _by_ref: the starting thread promotes)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- Ray in the background ----------------------------------------------------------------------

    def backlog(self, sims: int) -> None:
        """Start Ray if the ``sims`` not finished yet are worth it (``worth_starting``)."""
        self._left = sims
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
        ready = [h for h in handles if h in self._done] or self._helpers.finished(handles)
        if ready:
            return ready
        with self._lock:
            self._promote()
            waiting = [h for h in handles if h in self._here]
            configs = self._here.pop(waiting[0]) if waiting else None  # the driver's: the oldest
            self._refill()
        if configs is not None:  # Ray is not up: the driver runs the oldest task itself
            handle = waiting[0]
            start = time.perf_counter()
            self._done[handle] = run_batch(configs, self._sink.report)
            self._here_s += time.perf_counter() - start
            self._observe(self._done[handle])
            self.ran_here += len(configs)
            return [handle, *self._helpers.finished(handles)]
        with self._lock:
            refs = [self._remote[h] for h in handles if h in self._remote]
        if not refs:
            return self._helpers.finished(handles, timeout)
        # (helpers still running their last tasks beside Ray: look at them again soon)
        on_ray = self._ray.wait(refs, min(timeout, 0.05) if self._helpers.running else timeout)
        return [self._by_ref[ref] for ref in on_ray] + self._helpers.finished(handles)

    def _refill(self) -> None:
        """Send the newest tasks waiting to helpers with room, while Ray is not asked for. (Called
        with the lock held.)"""
        while self._here and self._thread is None and self._helpers.free() and self.helpers_worth_it():
            handle = max(self._here)
            configs = self._here.pop(handle)
            if not self._helpers.send(handle, configs):
                self._here[handle] = configs
                return

    def helpers_worth_it(self) -> bool:
        """Whether the helpers are spawned, or worth spawning: the work left, at the fastest rate
        seen over two simulations at least (the first pays its imports: 83 ms against 21-27 ms for
        later ones, measured), passes ``HELPERS_AFTER_S``, a spawn's cost twice over."""
        return self._helpers.spawned() or (self.ran_here >= 2 and self._fastest * self._left > HELPERS_AFTER_S)

    def _observe(self, entries: list[dict[str, object]]) -> None:
        """The seconds per simulation of a task's ok entries (one that fails at once says nothing
        of what the others cost)."""
        ok = [float(e["seconds"]) for e in entries if e["status"] == "ok"]
        if ok:
            self._latest = sum(ok) / len(ok)
            self._fastest = min(self._fastest, self._latest)

    def result(self, handle: int) -> list[dict[str, object]]:
        if handle in self._done:
            return self._done.pop(handle)
        if handle in self._helpers.running:
            entries, events = self._helpers.result(handle)
            self._observe(entries)
            self.ran_beside += len(entries)
            self._sink.report(events)  # (a helper reports no live progress: its events come with its task)
            if self._thread is not None and not self._helpers.running:
                self._helpers.close()  # Ray's from now on
            return entries
        with self._lock:
            ref = self._remote.pop(handle)
            del self._by_ref[ref]
        entries = self._ray.result(ref)
        self.ran_on_ray += len(entries)
        return entries

    def cancel(self, handle: int) -> None:
        self._done.pop(handle, None)
        self._helpers.cancel(handle)
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
        cannot be stopped cleanly), and the helpers if any were spawned."""
        self._helpers.close()
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
        beside = f", {self.ran_beside} in its helper processes" if self.ran_beside else ""
        if self.started_at is None:
            return (f"ray: not started ({self.ran_here} simulations ran in the driver{beside}; the work never passed "
                    f"{self.start_after_s:g} s, Ray's start-up and shut-down)")
        up = f"up at {self.up_at:.1f} s" if self.up_at is not None else "never came up"
        return (f"ray: embedded, started at {self.started_at:.1f} s, {up}; {self.ran_on_ray} simulations ran on "
                f"its workers, {self.ran_here} in the driver meanwhile{beside}")
