"""Benchmark sweep throughput: points per second in this process, on local worker processes and on Ray.

    python tools/bench_sweep.py                     # the shipped GPT-OSS-20B sweep (36 points) on all 33 prompts
    python tools/bench_sweep.py --sequences 2       # the sweep as shipped: light points, overhead shows
    python tools/bench_sweep.py --engine des        # the SimPy reference engine (much heavier points)

Every row is measured in this run on this machine, on the same sweep into a fresh results
directory: ``in-process`` (``--jobs 1``: no worker processes; the baseline), a pool of one
worker process (what process isolation, pickling and the results stream cost), a pool of
``--jobs`` workers, and Ray on a local cluster of ``--jobs`` CPUs (skipped without ray).

Before the rows, one point runs in this process so numba's on-disk cache holds the compiled
kernels; worker processes then load them instead of compiling (a cold cache costs each new
worker tens of seconds, which would otherwise dominate every row).

Columns: ``wall s`` from the start of the sweep (workers' start-up, trace staging, compaction
included) to the end; ``points/s`` = points / wall; ``steady points/s`` = points finished after
the first ``workers`` (each worker's first point carries its start-up), divided by the time
since then; ``speed-up`` and ``efficiency`` (speed-up / workers) of the steady rate against the
in-process baseline; ``sim s/point``: the mean time a worker spent in a point (first points
included). All variants must produce the same dataset (checked, wall-time columns aside).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moesim.cli._common import format_table  # noqa: E402
from moesim.sweep import (  # noqa: E402
    LocalExecutor,
    SweepRunner,
    available_cpus,
    plan_sweep,
    read_results,
    run_sweep,
)

SCENARIO = REPO / "scenarios" / "sweep-gptoss-cache.toml"


def measure(plan, out: Path, executor, engine: str | None, workers: int) -> dict:
    """Run the whole sweep; returns wall time, completion times and the per-point times."""
    started = time.perf_counter()
    finished = []
    with SweepRunner(plan, out, executor=executor, engine=engine, flush_interval_s=2.0) as runner:
        for _ in runner.run():
            finished.append(time.perf_counter() - started)
    wall_s = time.perf_counter() - started
    table = read_results(out)
    statuses = set(table.column("status").to_pylist())
    if statuses != {"ok"}:
        raise SystemExit(f"{out}: points failed ({statuses}); the benchmark needs a clean sweep")
    sim_s = table.column("wall_s").to_numpy()
    first = min(workers, len(finished)) - 1  # the last of the workers' first points
    steady = (
        (len(finished) - 1 - first) / (finished[-1] - finished[first])
        if finished and finished[-1] > finished[first]
        else float("nan")
    )
    return {
        "wall_s": wall_s,
        "points": len(finished),
        "steady": steady,
        "sim_s": float(sim_s.mean()),
        "table": table.drop_columns(["wall_s"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, default=SCENARIO, help="sweep scenario (default: the shipped one)")
    parser.add_argument("--jobs", type=int, default=available_cpus(), help="workers for the parallel rows")
    parser.add_argument("--engine", choices=("auto", "des", "fast"), default=None, help="simulation engine")
    parser.add_argument(
        "--sequences",
        type=int,
        default=33,
        help="trace.max_sequences of every point (default 33: the whole shipped trace)",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="override workload.max_steps (lighter points)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    args = parser.parse_args()

    overrides = [("trace.max_sequences", args.sequences)]
    if args.max_steps is not None:
        overrides.append(("workload.max_steps", args.max_steps))
    plan = plan_sweep(args.scenario, overrides=overrides)
    variants = [
        ("in-process", LocalExecutor(1), 1),
        ("local pool", LocalExecutor(1, in_process=False), 1),
        ("local pool", LocalExecutor(args.jobs), args.jobs),
    ]
    if not args.no_ray:
        try:
            from moesim.sweep import RayExecutor

            variants.append(("ray (local cluster)", RayExecutor(jobs=args.jobs), args.jobs))
        except ImportError as exc:
            print(f"ray row skipped: {exc}")
    work = Path(tempfile.mkdtemp(prefix="moesim-bench-sweep-"))
    warm_up = plan_sweep(args.scenario, overrides=[*overrides, ("workload.max_steps", 2)])
    run_sweep(warm_up, work / "warm-up", jobs=1, engine=args.engine)
    rows, reference, baseline = [], None, None
    try:
        for i, (name, executor, workers) in enumerate(variants):
            result = measure(plan, work / f"run{i}", executor, args.engine, workers)
            if reference is None:
                reference, baseline = result["table"], result["steady"]
            elif not result["table"].equals(reference):
                raise SystemExit(f"{name} x{workers}: the dataset differs from the in-process one")
            speedup = result["steady"] / baseline
            rows.append(
                (
                    name,
                    workers,
                    result["points"],
                    result["wall_s"],
                    result["points"] / result["wall_s"],
                    result["steady"],
                    speedup,
                    speedup / workers,
                    result["sim_s"],
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"sweep {plan.name}: {len(plan)} points, engine {args.engine or 'scenario default'}, {available_cpus()} CPUs, "
        f"load average at the end {load} (other work on the machine slows the parallel rows); all datasets identical"
    )
    print(
        format_table(
            [
                "executor",
                "workers",
                "points",
                "wall s",
                "points/s",
                "steady points/s",
                "speed-up",
                "efficiency",
                "sim s/point",
            ],
            rows,
            align="lrrrrrrrr",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
