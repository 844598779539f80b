"""``moesim sweep SCENARIO``: run a scenario over a grid of values into a results dataset."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a scenario over a grid of values (local processes or Ray) into a Parquet results dataset",
        description=(
            "Expand the scenario's [sweep] table and --grid/--zip axes into points (cartesian product; zip groups "
            "vary together), validate every point, run them on local processes or a Ray cluster and stream one "
            "row per point into DIR (results.parquet when done). Interrupt at any time and continue with --resume. "
            "A point that fails is recorded (status, error) and the others go on. Exit status: 0, or 1 when every "
            "point run failed; 2 for a bad scenario, grid or option (nothing runs); 130 when interrupted."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  moesim sweep scenarios/sweep-gptoss-cache.toml --out results/cache\n"
            "  moesim sweep S.toml --grid cache.capacity=96,192,288 --grid hardware=rtx4090-pcie4,h100-pcie5\n"
            "  moesim sweep S.toml --zip model=gpt-oss-20b,mixtral-8x7b --zip trace.path=a.parquet,b.parquet\n"
            "  moesim sweep S.toml --out results/cache --resume          # after a kill or with more values\n"
            "  moesim sweep S.toml --executor ray --address auto         # on a running Ray cluster\n"
            "  moesim report results/cache"
        ),
    )
    parser.add_argument("scenario", help="scenario TOML file; its [sweep] table (if any) gives the axes")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="sweep a dotted path over values, parsed like --set (repeatable; replaces the scenario's axis for PATH)",
    )
    parser.add_argument(
        "--zip",
        dest="zip_group",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="paths that vary together: all --zip options form one axis (equal-length lists)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base scenario value for every point, e.g. --set workload.batch_size=4",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="results directory (default: results/<scenario name>)"
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local processes (default) or a Ray cluster (extra: moesim[ray])",
    )
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="parallel workers (default: every CPU of this machine, or of the Ray cluster)",
    )
    parser.add_argument(
        "--address",
        default=None,
        metavar="RAY_ADDR",
        help="Ray cluster to use ('auto', 'ray://host:10001'); default: start a local one",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the dataset in --out: skip points it already holds"
    )
    parser.add_argument("--retry-failed", action="store_true", help="with --resume, run failed points again")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    parser.add_argument(
        "--engine",
        choices=("auto", "des", "fast"),
        default=None,
        help="simulation engine for every point (default: the scenario's, normally auto)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="longest a finished point waits before it is written to DIR (default: 2; 0: at once)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document (the points with --dry-run)")
    parser.add_argument(
        "--dry-run", action="store_true", help="expand and validate every point, print them, run nothing"
    )
    parser.set_defaults(func=main)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def main(args) -> int:
    import dataclasses
    from pathlib import Path

    from moesim.cli._common import format_table, print_json, progress
    from moesim.scenario import parse_assignment
    from moesim.sweep import SweepRunner, format_values, plan_sweep

    overrides = [parse_assignment(text) for text in args.overrides]
    plan = plan_sweep(args.scenario, grid=args.grid, zip_group=args.zip_group, overrides=overrides)
    axes = (
        ", ".join((" x ".join(a.paths) if a.is_zip else a.paths[0]) + f" ({len(a)})" for a in plan.spec.axes)
        or "no axes"
    )
    if args.dry_run and args.json:
        points = [{"index": p.index, "point_id": p.point_id, "values": p.values} for p in plan.points]
        print_json({"name": plan.name, "num_points": len(plan), "axes": plan.spec.to_dict(), "points": points})
        return 0
    if args.dry_run:
        print(f"sweep '{plan.name}': {len(plan)} points over {axes}; all valid")
        rows = [(p.index + 1, p.point_id, format_values(p.values)) for p in plan.points]
        print(format_table(["#", "point_id", "values"], rows, align="rll"))
        return 0
    out = Path(args.out) if args.out else Path("results") / plan.name
    runner = SweepRunner(
        plan,
        out,
        executor=args.executor,
        jobs=args.jobs,
        address=args.address,
        resume=args.resume,
        retry_failed=args.retry_failed,
        overwrite=args.overwrite,
        engine=args.engine,
        flush_interval_s=args.flush_interval,
    )
    with runner:
        skipped = len(plan) - len(runner.todo)
        say = print if not args.json else (lambda *a, **k: None)
        say(
            f"sweep '{plan.name}': {len(plan)} points over {axes}"
            + (f"; {skipped} already in {out}" if skipped else "")
            + f"; running {len(runner.todo)} on {runner.executor.name} x{runner.executor.jobs}",
            flush=True,
        )
        failures = []
        for outcome in progress(runner.run(), total=len(runner.todo), desc="points"):
            if outcome.status != "ok":
                failures.append(outcome)
    summary = runner.summary
    status = 1 if summary.num_failed and not summary.num_ok else 0
    if args.json:
        failed = [{"point_id": o.point.point_id, "values": o.point.values, "error": o.error} for o in failures]
        print_json({**dataclasses.asdict(summary), "results": str(out / "results.parquet"), "failures": failed})
        return status
    print(
        f"{summary.num_run} points in {summary.wall_s:.1f} s: {summary.num_ok} ok, {summary.num_failed} failed"
        + (f" ({summary.num_skipped} skipped)" if summary.num_skipped else "")
    )
    for outcome in failures[:5]:
        print(f"  failed: point {outcome.point.index + 1} ({format_values(outcome.point.values)}): {outcome.error}")
    if len(failures) > 5:
        print(f"  ... and {len(failures) - 5} more (see the error column)")
    _print_best(out)
    print(f"results: {out}/results.parquet; next: moesim report {out}")
    return status


def _print_best(out) -> None:
    from moesim.cli._common import format_table
    from moesim.report.sweep_report import best_points

    best = best_points(out, top=5)
    if best is not None:
        print("\nbest configurations (decode tokens/s):")
        print(format_table(best.headers, best.rows))
