"""``moesim run SCENARIO``: simulate one scenario and print (or save) its results."""

from __future__ import annotations

import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="simulate a scenario (TOML) and report throughput, latency, hit rate, traffic",
        description="Simulate one scenario: replay its trace through the modelled machine.",
    )
    parser.add_argument("scenario", help="scenario TOML file (see scenarios/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario value, e.g. --set cache.capacity=64 (repeatable)")
    parser.add_argument("--engine", choices=("auto", "des", "fast"), default=None,
                        help="simulation engine (default: the scenario's, normally auto)")
    parser.add_argument("--out", metavar="DIR", help="write steps.parquet, layers.parquet, summary.json, scenario.json")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=main)


def main(args) -> int:
    from moesim.cli._common import print_json
    from moesim.report.run_summary import format_run
    from moesim.scenario import load_scenario, load_trace, parse_assignment
    from moesim.sim import run
    from moesim.sim.output import write_result_dir

    scenario = load_scenario(args.scenario, [parse_assignment(text) for text in args.overrides])
    trace = load_trace(scenario)
    started = time.perf_counter()
    result = run(trace, scenario, engine=args.engine)
    wall_s = time.perf_counter() - started
    if args.out:
        write_result_dir(result, args.out)
    if args.json:
        print_json({"summary": result.summary, "scenario": result.scenario})
    else:
        print(format_run(result.summary, result.scenario, wall_s=wall_s))
        if args.out:
            print(f"\nresults written to {args.out}/")
    return 0
