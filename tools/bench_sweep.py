"""Benchmark sweep throughput: points per second in this process, on local worker processes and on Ray.

    python tools/bench_sweep.py                     # the shipped GPT-OSS-20B cache sweep (36 points)
    python tools/bench_sweep.py --engine des        # heavier points (the SimPy reference engine)
    python tools/bench_sweep.py --max-steps 40      # lighter points: shows the per-point overhead

Every row is measured in this run on this machine, on the same sweep into a fresh results
directory: ``in-process`` (``--jobs 1``: no worker processes; the baseline), a pool of one
worker process (what process isolation, pickling and the results stream cost), a pool of
``--jobs`` workers, and Ray on a local cluster of ``--jobs`` CPUs (skipped without ray).

Columns: ``wall s`` from the start of the sweep (workers' start-up, trace staging, compaction
included) to the end; ``points/s`` = points / wall; ``steady points/s`` = points finished after
the first one, divided by the time since the first one finished (start-up excluded);
``speed-up`` and ``efficiency`` (speed-up / workers) of the steady rate against the in-process
baseline; ``sim s/point``: the mean time a worker spent in the point itself. All variants must
produce the same dataset (checked, wall-time columns aside).
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
from moesim.sweep import LocalExecutor, SweepRunner, available_cpus, plan_sweep, read_results  # noqa: E402

SCENARIO = REPO / "scenarios" / "sweep-gptoss-cache.toml"


def measure(plan, out: Path, executor, engine: str | None) -> dict:
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
    steady = (
        (len(finished) - 1) / (finished[-1] - finished[0])
        if len(finished) > 1 and finished[-1] > finished[0]
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
    parser.add_argument("--max-steps", type=int, default=None, help="override workload.max_steps (lighter points)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    args = parser.parse_args()

    overrides = [] if args.max_steps is None else [("workload.max_steps", args.max_steps)]
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
    rows, reference, baseline = [], None, None
    try:
        for i, (name, executor, workers) in enumerate(variants):
            result = measure(plan, work / f"run{i}", executor, args.engine)
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
