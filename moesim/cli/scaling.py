"""``moesim scaling ...``: architecture budgets, the granularity law and serving cost, on the simulator.

    moesim scaling budget MODEL [--context N] [--json]
    moesim scaling architectures [SCENARIO] --flops-per-token X --active Y --total Z
                                 [--tolerance T] [--hardware H] [--trace T] [--top N] [--out DIR]
    moesim scaling granularity SCENARIO [--set K=V] [--out DIR]
    moesim scaling serving SCENARIO [--set K=V] [--out DIR]
    moesim scaling report DIR

Analyses write a results directory (``results.parquet``, ``analysis.json``, ``report.md`` and its
PNG figures) with ``--out``; ``report`` rebuilds the report of one.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scaling",
        help="scaling studies: architecture budgets, granularity law, serving cost",
        description="Scaling studies on the simulator: budgets of an architecture, configurations meeting a "
        "joint FLOPs/active/total budget ranked by simulated tokens/s, the granularity law of expert "
        "caches, and serving cost at equal quality.",
    )
    commands = parser.add_subparsers(dest="scaling_command", metavar="SCALING_COMMAND")

    budget = commands.add_parser("budget", help="total/active parameters, FLOPs per token and bytes of a model")
    budget.add_argument("model", help="model preset (see moesim models)")
    budget.add_argument("--context", type=int, default=4096, help="keys each token attends to (default 4096)")
    budget.add_argument("--formats", nargs="+", metavar="FMT", help="weight formats to give bytes in")
    budget.add_argument("--json", action="store_true", help="print the sheet as JSON")
    budget.set_defaults(func=_budget)

    arch = commands.add_parser(
        "architectures",
        help="configurations meeting FLOPs/active/total budgets, ranked by simulated tokens/s when offloaded",
    )
    arch.add_argument(
        "scenario",
        nargs="?",
        help="scaling scenario (default: built-in settings; see scenarios/scaling-architectures.toml)",
    )
    arch.add_argument("--flops-per-token", metavar="X", help="FLOPs per decoded token budget (e.g. 9.3e9)")
    arch.add_argument("--active", metavar="Y", help="active-parameter budget, embedding included (e.g. 3.3B)")
    arch.add_argument("--total", metavar="Z", help="total-parameter budget (e.g. 30.5B)")
    arch.add_argument("--tolerance", type=float, help="relative tolerance on each budget (default 0.05)")
    arch.add_argument("--context", type=int, help="context length of the FLOPs budget (default 4096)")
    arch.add_argument("--template", help="model preset giving vocabulary, attention style and formats")
    arch.add_argument("--hardware", help="machine preset to simulate on (default rtx4090-pcie4)")
    arch.add_argument("--trace", help="real trace the synthetic traces are fitted to")
    arch.add_argument("--top", type=int, default=10, help="configurations to print (default 10)")
    arch.add_argument("--max-simulations", type=int, help="family representatives to simulate (default 12)")
    _common_options(arch)
    arch.set_defaults(func=_architectures)

    for name, help_text in (
        ("granularity", "hit rate, miss penalty and tokens/s as experts get finer; fitted laws"),
        ("serving", "batch, tokens/s and cost per million tokens at equal quality, 4..128 experts"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("scenario", help=f"scaling scenario (e.g. scenarios/scaling-{name}.toml)")
        _common_options(sub)
        sub.set_defaults(func=_analysis, analysis=name)

    report = commands.add_parser("report", help="write report.md and figures for a results directory")
    report.add_argument("results", help="the --out directory of a scaling analysis")
    report.set_defaults(func=_report)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _common_options(parser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario value, e.g. --set scaling.granularities=[1,2,4] (repeatable)",
    )
    parser.add_argument("--workers", type=int, help="simulation workers (default: the scenario's scaling.workers)")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where simulations run: local processes or Ray (as moesim sweep)",
    )
    parser.add_argument("--address", help="Ray cluster address (with --executor ray)")
    parser.add_argument("--out", metavar="DIR", help="write results.parquet, analysis.json, report.md and figures")
    parser.add_argument("--json", action="store_true", help="print the analysis document as JSON")


def _budget(args) -> int:
    from moesim.cli._common import format_table, print_json
    from moesim.models import get_model
    from moesim.scaling.budget import DEFAULT_FORMATS, budget_sheet

    sheet = budget_sheet(get_model(args.model), context_len=args.context, formats=args.formats or DEFAULT_FORMATS)
    if args.json:
        print_json(sheet.as_dict())
    else:
        print(f"{sheet.model}")
        print(format_table(["quantity", "value"], sheet.rows(), align="lr"))
    return 0


def _run(args, analysis_file) -> object:
    from moesim.cli._common import progress
    from moesim.scaling.analyses import run_analysis

    started = time.perf_counter()
    result = run_analysis(
        analysis_file,
        workers=args.workers,
        executor=args.executor,
        address=args.address,
        progress=lambda rows: progress(rows, desc="simulating"),
    )
    wall_s = time.perf_counter() - started
    if args.out:
        from moesim.scaling.report import render

        result.write(args.out)
        render(args.out)
    return result, wall_s


def _finish(args, result, wall_s: float, text: list[str]) -> int:
    from moesim.cli._common import print_json

    if args.json:
        print_json(result.document())
        return 0
    text.append("")
    text.append(f"{result.table.num_rows} result rows in {wall_s:.1f} s")
    if args.out:
        text.append(f"results and report written to {args.out}/ (report.md)")
    print("\n".join(text))
    return 0


def _analysis(args) -> int:
    from moesim.scaling.config import load_analysis
    from moesim.scenario import parse_assignment

    analysis = load_analysis(args.scenario, [parse_assignment(t) for t in args.overrides], expected=args.analysis)
    result, wall_s = _run(args, analysis)
    text = _granularity_text(result) if args.analysis == "granularity" else _serving_text(result)
    return _finish(args, result, wall_s, text)


def _granularity_text(result) -> list[str]:
    from moesim.cli._common import format_table
    from moesim.units import format_bytes, format_rate

    text = []
    for budget, comparison in result.fits.items():
        fits = ", ".join(
            f"{f.law}: a={f.a:.4g} b={f.b:.4g} R^2={f.r_squared:.4f} AIC={f.aic:.1f}" for f in comparison.fits
        )
        text.append(f"{format_bytes(budget)} cache: {comparison.verdict} [{fits}]")
    if result.pooled is not None:
        text.append(f"overall: {result.pooled.verdict}")
    text.append("")
    text.append(
        format_table(
            ["cache", "link", "best g", "E", "tokens/s", "tokens/s per GB/s", "hit rate", "turns"],
            [
                [
                    format_bytes(b["cache_budget_bytes"]),
                    format_rate(b["link_bandwidth_bps"]),
                    b["best_granularity_label"],
                    b["best_num_experts"],
                    b["decode_tokens_per_s"],
                    b["tokens_per_s_per_gbps"],
                    b["hit_rate"],
                    "yes" if b["turns"] else "no",
                ]
                for b in result.best
            ],
        )
    )
    text += [f"note: {note}" for note in result.notes]
    return text


def _serving_text(result) -> list[str]:
    from moesim.cli._common import format_table
    from moesim.units import format_bytes

    rows = sorted(result.chosen(), key=lambda r: (r["mode"], r["num_experts"]))
    text = [f"quality proxy: {result.settings['quality_proxy']}", ""]
    text.append(
        format_table(
            [
                "mode",
                "E",
                "total params",
                "batch",
                "max batch",
                "KV",
                "expert cache",
                "hit rate",
                "tokens/s",
                "cost/M tokens",
            ],
            [
                [
                    r["mode"],
                    r["num_experts"],
                    f"{r['total_params'] / 1e9:.2f}B",
                    r["batch_size"],
                    r["max_batch_size"],
                    format_bytes(r["mem_kv_cache_bytes"] or 0),
                    format_bytes(r["cache_bytes"] or 0),
                    r["hit_rate"],
                    r["decode_tokens_per_s"],
                    r["cost_per_million_tokens"],
                ]
                for r in rows
            ],
        )
    )
    infeasible = sorted(
        {
            (r["num_experts"], r["mode"], r["reason"])
            for r in result.table.to_pylist()
            if r["status"] != "ok"
            and not any(c["num_experts"] == r["num_experts"] and c["mode"] == r["mode"] for c in rows)
        }
    )
    text += [f"E={e} {mode}: does not fit ({reason})" for e, mode, reason in infeasible]
    text += [f"note: {note}" for note in result.notes]
    return text


def _architectures(args) -> int:
    from moesim.cli._common import format_table
    from moesim.errors import ConfigError
    from moesim.scaling.architectures import CONFIG_HEADERS, config_cells
    from moesim.scaling.config import analysis_from_dict, load_analysis
    from moesim.scenario import parse_assignment

    overrides = [parse_assignment(t) for t in args.overrides]
    for flag, key in (
        ("flops_per_token", "flops_per_token"),
        ("active", "active_params"),
        ("total", "total_params"),
        ("tolerance", "tolerance"),
        ("context", "context_len"),
        ("template", "template"),
        ("max_simulations", "max_simulations"),
        ("trace", "trace"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append((f"scaling.{key}", str(Path(value).resolve()) if flag == "trace" else value))
    if args.hardware:
        overrides.append(("hardware", args.hardware))
    if args.scenario:
        analysis = load_analysis(args.scenario, overrides, expected="architectures")
    else:
        from moesim.scenario import apply_overrides

        if args.trace is None:
            raise ConfigError(
                "--trace: needed without a scenario file; give the real trace the synthetic traces "
                "are fitted to (e.g. traces/gpt-oss-20b-fingerprinting.parquet)"
            )
        base = {
            "name": "architectures",
            "model": args.template or "qwen3-30b-a3b",
            "hardware": "rtx4090-pcie4",
            "workload": {"prefill": False},
            "scaling": {"analysis": "architectures"},
        }
        analysis = analysis_from_dict(apply_overrides(base, overrides), base_dir=Path.cwd(), expected="architectures")
    result, wall_s = _run(args, analysis)
    ranked = result.ranked()[: max(args.top, 0)]
    budget = result.settings["budget"]
    text = [
        f"{result.num_candidates} configurations within {100 * budget['tolerance']:.3g}% of "
        f"{budget['flops_per_token'] / 1e9:.3g} GFLOP/token, {budget['active_params'] / 1e9:.3g}B active, "
        f"{budget['total_params'] / 1e9:.3g}B total; {len(result.ranked())} simulated on "
        f"{result.settings['hardware']} (one per experts/top-k/shared family)",
        "",
    ]
    text.append(
        format_table(
            [*CONFIG_HEADERS, "hit rate", "tokens/s", "status"],
            [[*config_cells(r), r["hit_rate"], r["decode_tokens_per_s"], r["status"]] for r in ranked],
        )
    )
    text.append("")
    text.append(f"traces: {result.family['extrapolation_rule']}")
    text += [f"note: {note}" for note in result.notes]
    return _finish(args, result, wall_s, text)


def _report(args) -> int:
    from moesim.scaling.report import render

    print(render(args.results))
    return 0
