"""``moesim report RESULTS``: Markdown summary and PNG plots of sweep results or metrics JSON."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="Markdown summary and PNG plots of sweep results (or of moesim metrics --json output)",
        description=(
            "Read a results dataset (moesim sweep --out DIR, or its results.parquet) and write report.md with the "
            "best configurations and a table per swept dimension, plus plots: throughput against cache size, hit "
            "rate against rho, time breakdown, decode latency CDF. Given moesim metrics --json output instead, plot "
            "SRP and SCH against segment length. Nothing is re-simulated."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  moesim report results/cache                      # writes results/cache/report/\n"
            "  moesim report results/cache --metric decode_step_latency_s.p99 --points 3,7\n"
            "  moesim metrics TRACE --json > m.json && moesim report m.json"
        ),
    )
    parser.add_argument(
        "results", metavar="RESULTS", help="sweep results directory or results.parquet, or a moesim metrics --json file"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="output directory (default: RESULTS/report, or NAME-report beside a JSON file)",
    )
    parser.add_argument(
        "--metric",
        default="decode_tokens_per_s",
        help="column that ranks configurations (default: decode_tokens_per_s; times, latencies and "
        "bytes rank lowest first)",
    )
    parser.add_argument(
        "--points",
        default=None,
        metavar="P1,P2",
        help="points for the latency CDF: ids, unique id prefixes or point numbers "
        "(default: the best point of each policy)",
    )
    parser.add_argument("--top", type=int, default=10, metavar="N", help="rows in the best-configurations table")
    parser.set_defaults(func=main)


def main(args) -> int:
    from moesim.cli._common import format_table
    from moesim.errors import ConfigError
    from moesim.report.sweep_report import best_table, load_sweep_results, write_report

    if args.top < 1:
        raise ConfigError(f"--top: expected a number of rows >= 1, got {args.top}")
    from moesim.scaling.dataset import is_scaling_dataset

    if is_scaling_dataset(args.results):  # a `moesim scaling ...` results directory renders itself
        if args.out:
            raise ConfigError("--out: a scaling analysis writes its report into its own results directory")
        from moesim.scaling.report import render

        print(f"report: {render(args.results)}")
        return 0
    points = [p for p in (args.points or "").split(",") if p.strip()]
    files = write_report(args.results, args.out, metric=args.metric, points=points, top=args.top)
    if files.markdown.name == "report.md" and not files.markdown.parent.name.endswith("-report"):
        results = load_sweep_results(args.results)
        if results.ok:
            table = best_table(results, metric=args.metric, top=min(args.top, 5))
            print(format_table(table.headers, table.rows))
            print()
    print(f"report: {files.markdown}")
    for plot in files.plots:
        print(f"plot:   {plot}")
    return 0
