"""Where a sweep's tasks run. The driver sees four verbs (submit, wait, result, cancel) and a slot
count (the ``cluster.driver.Executor`` protocol); Ray appears only in ``RayExecutor``.
``LocalExecutor`` runs tasks in the calling process, for fast tests of the driver and the store
without a cluster.

A task is a list of configs; its result is the list of their store entries (``worker.run_batch``).
A worker process that dies mid-task (killed, out of memory, its node gone) is reported as
``WorkerDied`` rather than retried inside Ray, so the driver decides what is retried and counts
the attempts it records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cluster.worker import ProgressSink, run_batch


def init_ray(address: str | None = None, num_cpus: int | None = None, running_only: bool = False) -> bool:
    """The one place zonesim calls ``ray.init``: join ``address`` (or RAY_ADDRESS), else with
    ``running_only`` the cluster this machine runs (ConnectionError if none), else start an embedded
    single-node instance. Driver logs stay off (the CLI reports); True if it started one."""
    import ray

    options = {"log_to_driver": False, "logging_level": "ERROR"}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **options)
        return False
    if running_only:
        ray.init(address="auto", **options)
        return False
    # Ray runs workers at nice 15 so that a cluster's raylet keeps its heartbeats under saturated
    # workers. On an embedded node the simulations are the job: at nice 15 its workers starve
    # whenever anything at nice 0 runs (another job, the driver working while Ray starts).
    # (address "local": a new instance even if this machine runs a `ray start` cluster, which
    # ray.init would otherwise join, and refuse the _system_config for)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _system_config={"worker_niceness": 0},
             **options)
    return True


class WorkerDied(Exception):
    """The process running a task died before returning it."""


class LocalExecutor:
    """Runs each task when it is submitted, in this process."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self._done: dict[int, list[dict[str, object]]] = {}
        self._next = 0

    def submit(self, configs: list[dict[str, object]]) -> int:
        self._next += 1
        self._done[self._next] = run_batch(configs)
        return self._next

    def wait(self, handles: Sequence[int], timeout: float) -> list[int]:
        return list(handles)

    def result(self, handle: int) -> list[dict[str, object]]:
        return self._done.pop(handle)

    def cancel(self, handle: int) -> None:
        self._done.pop(handle, None)

    def close(self) -> None:
        pass


class _Report:
    """``sink(n)`` for the workers: a picklable call of the sink actor's ``report``."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __call__(self, n: int) -> None:
        self.handle.report.remote(n)


class RayExecutor:
    """Tasks as Ray remote functions on an embedded single-node Ray or an existing cluster.

    ``address`` None: join the cluster named by ``RAY_ADDRESS`` if set (as under ``ray job
    submit``), else start an embedded local instance; otherwise join ``address``. If Ray is already
    initialised in this process (the sweep service's actor), it is used as it is."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, progress: bool = False) -> None:
        import ray

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            init_ray(address, num_cpus=num_cpus)
        self._task = ray.remote(max_retries=0)(run_batch)
        self.slots = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self._sink = ray.remote(ProgressSink).options(num_cpus=0).remote() if progress else None
        self._report = _Report(self._sink) if self._sink is not None else None

    def submit(self, configs: list[dict[str, object]]):
        return self._task.remote(configs, self._report)

    def progress(self) -> int:
        """Events simulated since the last call, as the workers reported them."""
        return self._ray.get(self._sink.take.remote()) if self._sink is not None else 0

    def wait(self, handles: Sequence, timeout: float) -> list:
        ready, _ = self._ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:  # and whatever else has finished meanwhile, without waiting again
            more, _ = self._ray.wait([h for h in handles if h not in ready], num_returns=len(handles) - len(ready),
                                     timeout=0)
            ready += more
        return ready

    def result(self, handle) -> list[dict[str, object]]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(handle)
        except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.OutOfMemoryError,
                exceptions.RaySystemError) as err:
            raise WorkerDied(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None

    def cancel(self, handle) -> None:
        self._ray.cancel(handle, force=True)

    def close(self) -> None:
        if self._owns:
            _stop_autoscaler_monitor(self._ray)
            self._ray.shutdown()


def _stop_autoscaler_monitor(ray) -> None:
    """SIGKILL the embedded instance's autoscaler monitor before ``ray.shutdown``, which would
    spend a second on it: shutdown stops the GCS first, then sends the monitor SIGTERM, whose
    handler reports its own death to that GCS and hangs until shutdown's one-second grace runs out
    (measured here: 1.0 of 1.3 s). A single node of fixed size has nothing for the monitor to
    scale, nor state for it to save. Ray keeps the process handle in private state; if that moves,
    shutdown simply takes the second again."""
    try:  # a driver that joined a cluster has a node object that started no processes
        started = ray._private.worker._global_node.all_processes
        monitors = started.get(ray._private.ray_constants.PROCESS_TYPE_MONITOR, [])
    except AttributeError:
        return
    for info in monitors:
        info.process.kill()
        info.process.wait(timeout=5)  # (a SIGKILLed child: at once, unless stuck in the kernel)
