"""Running a sweep into a results dataset: check, stage traces, run points, stream rows, compact.

Before any point runs, every trace file the sweep uses is read and validated once and checked
against the model of every point that replays it, so a wrong pairing fails in seconds, naming
the point. Parquet traces are then converted once to Arrow IPC in ``DIR/.traces/`` so workers
memory-map them (pages shared between processes) instead of each decoding its own copy.

Finished rows are buffered and written as one part file at most every ``flush_interval_s``
seconds (see :mod:`moesim.sweep.dataset` for why any kill leaves a readable dataset); at the
end the parts are compacted into ``results.parquet`` in expansion order, so the same sweep gives
the same file whichever executor ran it and in whatever order points finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import ConfigError, MoesimError
from moesim.sweep.dataset import ResultsWriter
from moesim.sweep.executors import LocalExecutor, make_executor
from moesim.sweep.plan import SweepPlan, SweepPoint
from moesim.sweep.spec import format_values
from moesim.sweep.worker import PointTask, run_point

TRACE_CACHE = ".traces"


@dataclass(frozen=True)
class PointOutcome:
    """One finished point, as the runner reports progress."""

    point: SweepPoint
    status: str
    wall_s: float
    error: str | None


@dataclass(frozen=True)
class SweepSummary:
    """What one :func:`run_sweep` call did.

    ``num_points`` is the size of the sweep; ``num_skipped`` points were already in the dataset
    (``--resume``); of the ``num_run`` run now, ``num_ok`` succeeded and ``num_failed`` failed.
    ``interrupted`` is True when the run stopped early (the dataset holds what finished).
    """

    out_dir: Path
    num_points: int
    num_skipped: int
    num_run: int
    num_ok: int
    num_failed: int
    wall_s: float
    executor: str
    jobs: int
    interrupted: bool


def check_traces(plan: SweepPlan) -> dict[str, Path]:
    """Read and validate each trace file of the sweep once and check it fits every point's model.

    Returns ``{key: path}`` of the distinct files (key: path, size and modification time).

    Raises
    ------
    TraceError, ConfigError
        Naming the first point whose trace is unreadable, invalid or of another shape.
    """
    from moesim.sim.build import check_trace_matches_model
    from moesim.trace import read_trace

    by_file: dict[Path, list[SweepPoint]] = {}
    for point in plan.points:
        if point.scenario.trace.path is not None:
            by_file.setdefault(Path(point.scenario.trace.path), []).append(point)
    files: dict[str, Path] = {}
    for path, points in by_file.items():
        first = points[0]
        where = f"sweep point {first.index + 1} of {len(plan)} ({format_values(first.values)})"
        try:
            trace = read_trace(path)
        except MoesimError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        for point in points:
            try:
                check_trace_matches_model(trace, point.scenario.model)
            except ConfigError as exc:
                raise ConfigError(
                    f"sweep point {point.index + 1} of {len(plan)} ({format_values(point.values)}): {exc}"
                ) from None
        del trace
        files[trace_key(path)] = path
    return files


def trace_key(path: Path) -> str:
    """A name for one version of a trace file: its stem and a hash of path, size and mtime."""
    info = os.stat(path)
    digest = hashlib.sha256(f"{Path(path).resolve()}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{Path(path).stem}-{digest}"


def stage_traces(files: dict[str, Path], cache_dir: Path) -> dict[str, Path]:
    """Arrow IPC versions of the traces (Parquet ones converted once into ``cache_dir``)."""
    from moesim.trace import read_trace, write_trace
    from moesim.trace.io import trace_format

    staged: dict[str, Path] = {}
    for key, path in files.items():
        if trace_format(path) == "ipc":
            staged[key] = path
            continue
        target = cache_dir / f"{key}.arrow"
        if not target.is_file():
            write_trace(read_trace(path, validate=False), target)  # validated by check_traces
        staged[key] = target
    return staged


class SweepRunner:
    """Runs the points of ``plan`` missing from the dataset in ``out_dir``.

    Use as a context manager and iterate :meth:`run` (one :class:`PointOutcome` per finished
    point, for progress bars); leaving the block flushes finished rows, compacts the dataset if
    every point ran, and releases the executor and the dataset lock::

        with SweepRunner(plan, "results/cache") as runner:
            for outcome in runner.run():
                ...
        print(runner.summary)

    Parameters
    ----------
    plan : SweepPlan
        From :func:`moesim.sweep.plan_sweep` or :func:`moesim.sweep.expand`.
    out_dir : path
        The results directory.
    executor : "local", "ray" or an executor object
        Where points run (see :mod:`moesim.sweep.executors`).
    jobs : int, optional
        Workers (local: processes, default all CPUs; ray: concurrent tasks, default the cluster's CPUs).
    address : str, optional
        Ray cluster address (``ray://host:10001`` or ``auto``); a local cluster without one.
    resume : bool
        Continue the dataset in ``out_dir``: points already there are skipped.
    retry_failed : bool
        With ``resume``, run again the points recorded as failed (their new rows replace the old).
    overwrite : bool
        Replace results already in ``out_dir``.
    engine : str, optional
        Simulation engine for every point ("auto", "des", "fast"); default each scenario's.
    flush_interval_s : float
        Longest time a finished row waits before it is written (0: write after every point).
    """

    def __init__(
        self,
        plan: SweepPlan,
        out_dir: str | os.PathLike,
        *,
        executor: Any = "local",
        jobs: int | None = None,
        address: str | None = None,
        resume: bool = False,
        retry_failed: bool = False,
        overwrite: bool = False,
        engine: str | None = None,
        flush_interval_s: float = 2.0,
    ):
        if engine is not None and engine not in ("auto", "des", "fast"):
            raise ConfigError(f"--engine: expected auto, des or fast, got {engine!r}")
        if flush_interval_s < 0:
            raise ConfigError(f"--flush-interval: expected seconds >= 0, got {flush_interval_s}")
        if retry_failed and not resume:
            raise ConfigError("--retry-failed: only meaningful with --resume")
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        self.plan = plan
        self.out_dir = Path(out_dir)
        self.executor = make_executor(executor, jobs=jobs, address=address) if isinstance(executor, str) else executor
        self.resume = resume
        self.retry_failed = retry_failed
        self.overwrite = overwrite
        self.engine = engine
        self.flush_interval_s = float(flush_interval_s)
        self.todo: tuple[SweepPoint, ...] = ()
        self.summary: SweepSummary | None = None
        self._writer: ResultsWriter | None = None
        self._files: dict[str, Path] = {}
        self._counts = {"ok": 0, "failed": 0}
        self._buffer: list[dict[str, Any]] = []
        self._started = 0.0
        self._complete = False
        self._stream: Iterator[Any] | None = None

    # ---- lifecycle
    def __enter__(self) -> SweepRunner:
        self._started = time.perf_counter()
        self._files = check_traces(self.plan)
        # the executor first: a cluster that cannot be reached leaves no dataset behind
        self.executor.__enter__()
        try:
            if self.resume:
                self._writer = ResultsWriter.resume(self.out_dir, self.plan)
            else:
                self._writer = ResultsWriter.create(self.out_dir, self.plan, overwrite=self.overwrite)
        except BaseException:
            self.executor.__exit__(None, None, None)
            raise
        try:
            done = self._writer.completed()
            self.todo = tuple(
                p
                for p in self.plan.points
                if p.point_id not in done or (self.retry_failed and done[p.point_id] != "ok")
            )
            self._writer.begin_run(
                executor=self.executor.name,
                jobs=self.executor.jobs,
                engine=self.engine or "scenario",
                points_todo=len(self.todo),
            )
        except BaseException:
            self._writer.close()
            self.executor.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        writer = self._writer
        if self._stream is not None:
            self._stream.close()  # an exception outside run()'s loop: stop the workers first
        try:
            self._flush()
            if self._complete:
                writer.compact(order=[p.point_id for p in self.plan.points])
                shutil.rmtree(self.out_dir / TRACE_CACHE, ignore_errors=True)
            state = "complete" if self._complete else "interrupted"
            writer.end_run(state, points_ok=self._counts["ok"], points_failed=self._counts["failed"])
        finally:
            try:
                self.executor.__exit__(exc_type, exc, tb)
            finally:
                writer.close()
        num_run = self._counts["ok"] + self._counts["failed"]
        self.summary = SweepSummary(
            out_dir=self.out_dir,
            num_points=len(self.plan),
            num_skipped=len(self.plan) - len(self.todo),
            num_run=num_run,
            num_ok=self._counts["ok"],
            num_failed=self._counts["failed"],
            wall_s=time.perf_counter() - self._started,
            executor=self.executor.name,
            jobs=self.executor.jobs,
            interrupted=not self._complete,
        )

    # ---- running
    def run(self) -> Iterator[PointOutcome]:
        """Run the points still to do; yields each as it finishes (in completion order)."""
        if self._writer is None:
            raise RuntimeError("use SweepRunner as a context manager: with SweepRunner(...) as runner")
        if self._stream is not None:
            raise RuntimeError("SweepRunner.run() runs the sweep once; make a new runner to run it again")
        points = {p.point_id: p for p in self.todo}
        handles: dict[str, Any] = {}
        if self.todo:
            cache = self.out_dir / TRACE_CACHE
            needed = {
                k: v
                for k, v in self._files.items()
                if any(p.scenario.trace.path is not None and Path(p.scenario.trace.path) == v for p in self.todo)
            }
            handles = self.executor.stage(stage_traces(needed, cache)) if needed else {}
        by_path = {str(path): handles.get(key) for key, path in self._files.items()}
        tasks = (self._task(p, by_path) for p in self.todo)
        heartbeat = self.flush_interval_s if self.flush_interval_s > 0 else None
        stream = self._stream = self.executor.map_unordered(run_point, tasks, heartbeat_s=heartbeat)
        last_flush = time.monotonic()
        try:
            for item in stream:
                if item is not None:
                    task, row, failure = item
                    if failure is not None:
                        row = {
                            "point_id": task.point_id,
                            "point_index": task.index,
                            "status": "failed",
                            "error_type": "WorkerLost",
                            "error": failure,
                            "wall_s": None,
                        }
                    point = points[task.point_id]
                    row["values"] = point.values
                    self._buffer.append(row)
                    self._counts[row["status"]] += 1
                    yield PointOutcome(
                        point=point, status=row["status"], wall_s=row.get("wall_s") or 0.0, error=row.get("error")
                    )
                if self._buffer and time.monotonic() - last_flush >= self.flush_interval_s:
                    self._flush()
                    last_flush = time.monotonic()
        finally:
            stream.close()  # stops the workers now if we are leaving early
        self._complete = True

    def _task(self, point: SweepPoint, by_path: dict[str, Any]) -> PointTask:
        path = point.scenario.trace.path
        return PointTask(
            point_id=point.point_id,
            index=point.index,
            raw=point.raw,
            base_dir=str(self.plan.base_dir),
            source=str(self.plan.source) if self.plan.source else None,
            engine=self.engine,
            trace=by_path.get(str(path)) if path is not None else None,
        )

    def _flush(self) -> None:
        if self._buffer and self._writer is not None:
            rows, self._buffer = self._buffer, []
            self._writer.append(rows)


def run_sweep(plan: SweepPlan, out_dir: str | os.PathLike, **options: Any) -> SweepSummary:
    """Run ``plan`` into the results dataset ``out_dir`` and return what happened.

    Takes the options of :class:`SweepRunner`. A point that fails is recorded with
    ``status = "failed"`` and its error; the others go on. Interrupting (Ctrl-C) keeps every
    finished point; run again with ``resume=True`` to finish.
    """
    with SweepRunner(plan, out_dir, **options) as runner:
        for _ in runner.run():
            pass
    assert runner.summary is not None
    return runner.summary


__all__ = [
    "LocalExecutor",
    "PointOutcome",
    "SweepRunner",
    "SweepSummary",
    "check_traces",
    "run_sweep",
    "stage_traces",
    "trace_key",
]
