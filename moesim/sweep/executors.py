"""Where sweep points run: local processes (default) or a Ray cluster.

An executor ships trace files to its workers once (:meth:`stage`) and runs a function over tasks,
yielding ``(task, result, failure)`` as each finishes, in completion order: ``failure`` is None,
or a one-line reason when the infrastructure lost the task (a worker process died). Functions
that raise are the caller's business: :func:`moesim.sweep.worker.run_point` never does.

* :class:`LocalExecutor` with ``jobs = 1`` runs tasks in the calling process; otherwise it uses a
  ``spawn`` process pool (safe with threads, numba and macOS/Windows), keeps ``2 x jobs`` tasks in
  flight, and when a worker dies (out of memory, a crash in native code) re-runs the tasks that
  were in flight one at a time on a fresh pool, so only the task that kills a worker on its own
  is reported lost.
* :class:`RayExecutor` submits Ray tasks to ``ray.init(address)`` (a local cluster of ``jobs``
  CPUs without an address) and puts each trace file in the object store once.

Both yield ``None`` when nothing finished within ``heartbeat_s``, so the caller can flush
finished rows even while long points run.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError, MissingExtraError, SweepError

EXECUTORS = ("local", "ray")

Outcome = tuple[Any, Any, str | None]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(os.cpu_count() or 1, 1)


def make_executor(kind: str = "local", *, jobs: int | None = None, address: str | None = None):
    """The executor called ``kind`` ("local" or "ray"); ConfigError for other names or options."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"--jobs: expected a number of workers >= 1, got {jobs!r}")
    if kind == "local":
        if address is not None:
            raise ConfigError("--address: only the ray executor connects to a cluster; add --executor ray")
        return LocalExecutor(jobs)
    if kind == "ray":
        return RayExecutor(address=address, jobs=jobs)
    raise ConfigError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {kind!r}")


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; only the driver should act on it (it flushes
    # finished rows and stops the pool), not every worker with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_version() -> str:
    from moesim import __version__
    from moesim.sweep import worker  # noqa: F401  (what every task imports)

    return __version__


class LocalExecutor:
    """Tasks in this process (``jobs = 1``) or a ``spawn`` process pool of ``jobs`` workers."""

    name = "local"

    def __init__(self, jobs: int | None = None, *, in_process: bool | None = None):
        self.jobs = jobs or available_cpus()
        self.in_process = self.jobs == 1 if in_process is None else in_process

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def stage(self, files: dict[str, Path]) -> dict[str, tuple[str, str, str]]:
        """Workers share the machine's files: they memory-map the staged Arrow files."""
        return {key: ("file", key, str(path)) for key, path in files.items()}

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Iterable[Any], *, heartbeat_s: float | None = None
    ) -> Iterator[Outcome | None]:
        if self.in_process:
            for task in tasks:
                yield task, fn(task), None
            return
        yield from self._pool_map(fn, iter(tasks), heartbeat_s)

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint
        )

    def _pool_map(self, fn, tasks: Iterator[Any], heartbeat_s: float | None) -> Iterator[Outcome | None]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        window = 2 * self.jobs
        suspects: deque[Any] = deque()  # in flight when a worker died: re-run alone to find the culprit
        inflight: dict[Any, Any] = {}
        isolating = False
        finished = False
        pool = self._new_pool()
        try:
            while True:
                limit = 1 if (suspects or isolating) else window
                while len(inflight) < limit:
                    if suspects:
                        task, isolating = suspects.popleft(), True
                    else:
                        task = next(tasks, None)
                        if task is None:
                            break
                    inflight[pool.submit(fn, task)] = task
                if not inflight:
                    finished = True
                    return
                done, _ = wait(inflight, timeout=heartbeat_s, return_when=FIRST_COMPLETED)
                if not done:
                    yield None
                    continue
                for future in done:
                    if future not in inflight:  # already handled with a broken pool
                        continue
                    task = inflight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        lost = [task, *inflight.values()]
                        inflight.clear()
                        _stop(pool)
                        pool = self._new_pool()
                        if len(lost) == 1:
                            isolating = False
                            yield (
                                task,
                                None,
                                (
                                    "a worker process died running this point (killed, out of "
                                    "memory or crashed in native code)"
                                ),
                            )
                        else:
                            suspects.extend(lost)
                        break
                    except Exception as exc:  # e.g. a result that cannot be unpickled
                        yield task, None, f"{type(exc).__name__}: {exc}"
                    else:
                        if isolating and not inflight:
                            isolating = False
                        yield task, result, None
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:  # interrupted or abandoned: do not wait for running points
                _stop(pool)


def _stop(pool) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


class RayExecutor:
    """Ray tasks (one CPU each) on the cluster at ``address``, or a local one of ``jobs`` CPUs.

    Workers must be able to import this moesim (install it on every node, or share the
    environment). Trace files travel through the object store, so nodes need no shared storage.
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MissingExtraError("ray", "ray", "--executor ray") from None
        self.address = address
        self.requested_jobs = jobs
        self.jobs = jobs or 0
        self._started = False

    def __enter__(self) -> RayExecutor:
        import logging

        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            if self.address is None:
                options["num_cpus"] = self.requested_jobs or available_cpus()
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SweepError(
                    f"--address {self.address}: cannot connect to the Ray cluster "
                    f"({' '.join(str(exc).split())[:200]}); check the address (ray status)"
                ) from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.jobs = min(self.requested_jobs, cpus) if self.requested_jobs else cpus
        self._check_workers()
        return self

    def _check_workers(self) -> None:
        """Fail now, not once per point, when the cluster's workers cannot run this moesim."""
        import ray

        from moesim import __version__

        try:
            theirs = ray.get(ray.remote(num_cpus=0, max_retries=0)(_worker_version).remote(), timeout=300)
        except ray.exceptions.RayError as exc:
            self.__exit__(None, None, None)
            detail = " ".join(str(exc).split())[-200:]
            raise SweepError(
                f"--executor ray: the cluster's workers cannot import moesim ({detail}); install this "
                f"moesim (and its dependencies) on every node"
            ) from None
        if theirs != __version__:
            self.__exit__(None, None, None)
            raise SweepError(
                f"--executor ray: the cluster's workers run moesim {theirs}, this driver {__version__}; "
                f"install the same version everywhere"
            )

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._started:
            ray.shutdown()
            self._started = False

    def stage(self, files: dict[str, Path]) -> dict[str, tuple[str, str, list]]:
        """Put each file's bytes in the object store once; workers map them without copying."""
        import numpy as np
        import ray

        return {key: ("object", key, [ray.put(np.fromfile(path, dtype=np.uint8))]) for key, path in files.items()}

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Iterable[Any], *, heartbeat_s: float | None = None
    ) -> Iterator[Outcome | None]:
        import ray

        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        tasks = iter(tasks)
        inflight: dict[Any, Any] = {}
        finished = False
        try:
            while True:
                while len(inflight) < 2 * max(self.jobs, 1):
                    task = next(tasks, None)
                    if task is None:
                        break
                    inflight[remote.remote(task)] = task
                if not inflight:
                    finished = True
                    return
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=heartbeat_s)
                if not done:
                    yield None
                    continue
                for ref in done:
                    task = inflight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield task, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                    else:
                        yield task, result, None
        finally:
            if not finished:
                for ref in inflight:
                    ray.cancel(ref, force=True)
