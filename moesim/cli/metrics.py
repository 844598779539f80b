"""``moesim metrics TRACE``: cache hit rates at chosen cache sizes and SRP, per level, with CIs.

Layer level is summarised as the **mean over the selected layers** (each layer its own cache of
rho*k experts, or its own SRP threshold): that is the hit rate of a deployment giving every layer
the same per-layer cache, and what one compares with the model level (one cache shared by all
layers of rho*k*L experts). ``--per-layer`` adds one row per layer; ``--json`` always has them.
CIs are basic bootstraps over sequences (Liang et al. 2025); for the layer mean the same resamples
serve every layer, so the interval is that of the mean, not a mean of intervals.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesim.cli._common import format_table, print_json, progress
from moesim.errors import ConfigError, MissingExtraError, one_line
from moesim.trace.schema import PHASES

POLICIES = ("lru", "lfu", "fifo", "belady", "sch")
LEVELS = ("layer", "model", "both")
ACCOUNTING = ("reference", "request", "pinned")
COLD_FILL = ("free", "miss")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "metrics",
        help="hit rates of cache policies and SRP (segment routing best performance) of a trace",
        description=(
            "Hit rates of expert-cache policies at cache sizes rho x (active experts), and SRP with its "
            "i.i.d. baseline, at layer level (mean over layers, each with its own cache) and/or model "
            "level (one cache for all layers). See Liang et al. 2025, arXiv:2505.16056."
        ),
    )
    parser.add_argument("trace", metavar="TRACE", help="trace file (.parquet or .arrow)")
    parser.add_argument("--level", default="both", help="layer, model or both (default: both)")
    parser.add_argument(
        "--layers", default=None, help="trace layer indices to use, e.g. 0,3,8-11 (default: all)"
    )
    parser.add_argument(
        "--policies",
        default="lru,lfu,fifo,belady,sch",
        help="comma-separated cache policies from lru,lfu,fifo,belady,sch, or 'none' for SRP only",
    )
    parser.add_argument(
        "--segments", default="4,16,64", help="segment lengths m in tokens for SCH and SRP (default: 4,16,64)"
    )
    parser.add_argument(
        "--rho",
        default="1,2,3",
        help="cache sizes as multiples of the active experts (k per layer, k*L for the model; default: 1,2,3)",
    )
    parser.add_argument("--accounting", default="reference", help="reference, request or pinned (default: reference)")
    parser.add_argument("--cold-fill", default="free", help="free or miss (default: free)")
    parser.add_argument("--ci", action="store_true", help="add bootstrap confidence intervals over sequences")
    parser.add_argument("--ci-level", default=None, help="confidence level of the intervals; implies --ci (default: 0.95)")
    parser.add_argument("--num-boot", default="1000", help="bootstrap resamples (default: 1000)")
    parser.add_argument("--seed", default="0", help="bootstrap seed (default: 0)")
    parser.add_argument(
        "--phase", default=None, help="only tokens of this phase: prefill or decode (default: all tokens)"
    )
    parser.add_argument("--per-layer", action="store_true", help="also print one row per layer")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--plot", metavar="OUT.png", default=None, help="draw hit rate against rho per policy")
    parser.set_defaults(func=run)
    parser.error = _one_line_error  # bad arguments: one line and exit 2, like every MoesimError


def _one_line_error(message: str) -> None:
    print(f"moesim metrics: error: {one_line(message)}; see moesim metrics --help", file=sys.stderr)
    raise SystemExit(2)


# ---------------------------------------------------------------------- argument parsing
def _names(option: str, text: str, valid: tuple[str, ...], *, allow_none: bool = False) -> list[str]:
    if allow_none and text.strip().lower() in ("", "none"):
        return []
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in valid]
    if bad or not names:
        raise ConfigError(
            f"{option}: {bad[0] if bad else text!r} is not one of {', '.join(valid)}; "
            f"give a comma-separated list such as {','.join(valid[:2])}"
        )
    return list(dict.fromkeys(names))


def _choice(option: str, text: str, valid: tuple[str, ...]) -> str:
    if text not in valid:
        raise ConfigError(f"{option}: expected one of {', '.join(valid)}, got {text!r}")
    return text


def _integer(option: str, text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{option}: expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise ConfigError(f"{option}: expected an integer >= {low}, got {value}")
    return value


def _integers(option: str, text: str, example: str) -> list[int]:
    values: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ConfigError(f"{option}: {part!r} is not an integer or a range a-b; use e.g. {example}")
        values.extend(range(int(first), int(last or first) + 1))
    return list(dict.fromkeys(values))


def _floats(option: str, text: str, example: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers such as {example}, got {text!r}") from None
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"{option}: values must be positive numbers such as {example}, got {text!r}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Options:
    """Validated command-line options."""

    levels: tuple[str, ...]
    layers: list[int] | None
    policies: list[str]
    segments: list[int]
    rhos: list[float]
    accounting: str
    cold_fill: str
    ci: float | None
    num_boot: int
    seed: int
    per_layer: bool
    phase: str | None

    @property
    def boot(self) -> dict[str, Any]:
        """Keyword arguments of the bootstrap calls."""
        return dict(ci=self.ci, num_boot=self.num_boot, seed=self.seed)


def parse_options(args: argparse.Namespace) -> Options:
    """Check every option before any work starts, so a typo costs nothing."""
    from moesim.metrics.bootstrap import check_ci

    level = _choice("--level", args.level, LEVELS)
    ci = None
    if args.ci or args.ci_level is not None:
        try:
            ci = float(args.ci_level or 0.95)
        except ValueError:
            ci = float("nan")
        if not 0 < ci < 1:
            raise ConfigError(f"--ci-level: expected a confidence level in (0, 1) such as 0.95, got {args.ci_level!r}")
    num_boot = _integer("--num-boot", args.num_boot, 2)
    if ci is not None:
        check_ci(ci, num_boot)
    if args.plot is not None:
        _check_plot(args.plot)
    segments = _integers("--segments", args.segments, "4,16,64")
    if min(segments) < 1:
        raise ConfigError(f"--segments: segment lengths must be >= 1 token, got {min(segments)}")
    return Options(
        levels=("layer", "model") if level == "both" else (level,),
        layers=None if args.layers is None else _integers("--layers", args.layers, "0,3,8-11"),
        policies=_names("--policies", args.policies, POLICIES, allow_none=True),
        segments=segments,
        rhos=_floats("--rho", args.rho, "1,2,3"),
        accounting=_choice("--accounting", args.accounting, ACCOUNTING),
        cold_fill=_choice("--cold-fill", args.cold_fill, COLD_FILL),
        ci=ci,
        num_boot=num_boot,
        seed=_integer("--seed", args.seed, 0),
        per_layer=args.per_layer,
        phase=None if args.phase is None else _choice("--phase", args.phase, PHASES),
    )


def _check_plot(path: str) -> None:
    """Fail before the work, not after it, on a plot that cannot be written."""
    from moesim.report.metrics_plot import check_plot_path

    check_plot_path(path)
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtraError("plot", "matplotlib", "--plot")


# ---------------------------------------------------------------------- hit-rate summaries
def _rho_index(rho_grid: np.ndarray, rho: float, active: int) -> int:
    """Cache-size index of ``rho``; a cache larger than every key behaves as the largest."""
    if rho >= rho_grid[-1] - 1e-9:
        return len(rho_grid) - 1
    match = np.flatnonzero(np.isclose(rho_grid, rho, rtol=0, atol=1e-9))
    if not len(match):
        raise ConfigError(
            f"--rho: {rho:g} x {active} active experts = {rho * active:g} is not a whole number of "
            f"experts; use multiples of 1/{active} (e.g. 1,1.5,2)"
        )
    return int(match[0])


def _per_sequence_rates(curve: Any) -> np.ndarray:
    """float64 ``[S, C]`` hits / requests per sequence; NaN rows for sequences without requests."""
    hits = np.asarray(curve.hits, dtype=np.float64)
    requests = np.asarray(curve.num_requests, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = hits / requests
    rates[(requests[:, 0] == 0)] = np.nan
    rates[:, ~np.isfinite(np.asarray(curve.rate, dtype=np.float64))] = np.nan
    return rates


def summarise_curves(
    curves: list[Any], rhos: list[float], active: int, *, ci: float | None, num_boot: int, seed: int
) -> list[tuple[float, float, float]]:
    """``(rate, ci_low, ci_high)`` per rho of the mean over ``curves`` (layers of one trace).

    Each curve's rate is the mean over sequences of hits/requests (the paper's aggregation, as
    ``HitCurve.rate``); resamples reweight sequences identically for every curve.
    """
    from moesim.metrics import bootstrap

    index = [_rho_index(np.asarray(curves[0].rho), rho, active) for rho in rhos]
    rates = np.stack([_per_sequence_rates(c)[:, index] for c in curves], axis=1)  # [S, L, R]
    valid = np.isfinite(rates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cache size no sequence defines is NaN
        point = np.nanmean(rates, axis=0).mean(axis=0)
    if ci is None:
        return [(float(p), float("nan"), float("nan")) for p in point]
    weights = bootstrap.resample_counts(rates.shape[0], num_boot, seed).astype(np.float64)
    flat_rates = np.where(valid, rates, 0.0).reshape(rates.shape[0], -1)
    flat_valid = valid.reshape(rates.shape[0], -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        replicates = (weights @ flat_rates) / (weights @ flat_valid)  # [B, L*R]
    replicates = replicates.reshape(num_boot, *rates.shape[1:]).mean(axis=1)
    low, high = bootstrap.basic_interval(point, replicates, ci)
    return [(float(p), float(lo), float(hi)) for p, lo, hi in zip(point, low, high)]


# ---------------------------------------------------------------------- the command
def _jobs(options: Options, layers: list[int]) -> list[tuple[str, int | None, str, int | None]]:
    """(level, layer, policy, segment) of every hit curve to compute; SCH once per segment."""
    variants = [
        (policy, segment)
        for policy in options.policies
        for segment in (options.segments if policy == "sch" else [None])
    ]
    jobs = []
    for level in options.levels:
        for layer in layers if level == "layer" else [None]:
            jobs.extend((level, layer, policy, segment) for policy, segment in variants)
    return jobs


def _selected(trace, options: Options):
    """The trace restricted to ``--layers`` and the sorted layer indices (of the original trace)."""
    layers = list(range(trace.num_layers)) if options.layers is None else sorted(options.layers)
    bad = [x for x in layers if not 0 <= x < trace.num_layers]
    if bad:
        raise ConfigError(
            f"--layers: layer {bad[0]} is not in this trace; it has layers 0..{trace.num_layers - 1} "
            f"(model layers {list(trace.moe_layers)})"
        )
    # Model level pools exactly the selected layers.
    trace = trace.select(layers=layers, phase=options.phase)
    if options.phase is not None and trace.num_tokens == 0:
        raise ConfigError(f"--phase: the trace has no {options.phase} tokens; drop --phase or pick the other one")
    return trace, layers


def _hit_curves(trace, layers: list[int], options: Options) -> dict[tuple[str, str, int | None], list[Any]]:
    """``{(level, policy, segment): [HitCurve per selected layer, or the model curve]}``."""
    curves: dict[tuple[str, str, int | None], list[Any]] = {}
    jobs = _jobs(options, layers)
    if not jobs:
        return curves
    from moesim.metrics.hit_curve import hit_curve

    for level, layer, policy, segment in progress(jobs, total=len(jobs), desc="hit curves"):
        curve = hit_curve(
            trace,
            policy,
            level=level,
            layer=None if layer is None else layers.index(layer),
            segment=segment,
            accounting=options.accounting,
            cold_fill=options.cold_fill,
        )
        curves.setdefault((level, policy, segment), []).append(curve)
    return curves


def _hit_rows(curves, layers: list[int], active: dict[str, int], options: Options) -> list[dict[str, Any]]:
    rows = []
    for (level, policy, segment), group in curves.items():
        parts = [(None, group)] + ([(layer, [c]) for layer, c in zip(layers, group)] if level == "layer" else [])
        for layer, members in parts:
            summary = summarise_curves(members, options.rhos, active[level], **options.boot)
            rates = [dict(rho=r, rate=s[0], ci_low=s[1], ci_high=s[2]) for r, s in zip(options.rhos, summary)]
            rows.append(dict(level=level, layer=layer, policy=policy, segment=segment, rates=rates))
    return rows


def _srp_rows(trace, layers: list[int], options: Options) -> list[dict[str, Any]]:
    from moesim.metrics.srp import mean_srp, srp, srp_by_layer

    def interval(result):
        return result.confidence_interval(**options.boot) if options.ci else (np.nan, np.nan)

    rows = []
    for segment in progress(options.segments, total=len(options.segments), desc="SRP"):
        if "layer" in options.levels:
            by_layer = srp_by_layer(trace, segment)
            summary = mean_srp(by_layer, **options.boot)
            rows.append(_srp_row("layer", None, segment, summary, (summary.ci_low, summary.ci_high), by_layer))
            rows.extend(_srp_row("layer", x, segment, r, interval(r)) for x, r in zip(layers, by_layer))
        if "model" in options.levels:
            result = srp(trace, segment, level="model")
            rows.append(_srp_row("model", None, segment, result, interval(result)))
    return rows


def run(args: argparse.Namespace) -> int:
    from moesim.trace.io import read_trace

    options = parse_options(args)
    trace, layers = _selected(read_trace(args.trace), options)
    k, num_layers = trace.top_k, trace.num_layers
    active = {"layer": k, "model": k * num_layers}
    if options.policies:
        for level in options.levels:
            num_keys = trace.num_experts * (num_layers if level == "model" else 1)
            for rho in options.rhos:
                _rho_index(np.arange(1, num_keys + 1) / active[level], rho, active[level])

    curves = _hit_curves(trace, layers, options)
    hit_rows = _hit_rows(curves, layers, active, options)
    srp_rows = _srp_rows(trace, layers, options)

    if args.plot:
        from moesim.report.metrics_plot import plot_hit_curves

        series = {
            level: [
                (policy if segment is None else f"{policy} m={segment}", np.asarray(group[0].rho), _mean_rate(group))
                for (lvl, policy, segment), group in curves.items()
                if lvl == level
            ]
            for level in options.levels
        }
        title = (
            f"{trace.model or 'unknown model'} ({Path(args.trace).name})\n{trace.num_sequences} sequences, "
            f"{trace.num_tokens} tokens, {num_layers} MoE layers, E={trace.num_experts}, k={k}; "
            f"accounting={options.accounting}, cold fill {options.cold_fill}"
        )
        plot_hit_curves(series, args.plot, title=title, rhos=options.rhos)

    if args.json:
        print_json(
            dict(
                trace=dict(
                    path=args.trace,
                    model=trace.model,
                    num_sequences=trace.num_sequences,
                    num_tokens=trace.num_tokens,
                    num_experts=trace.num_experts,
                    top_k=k,
                    layers=layers,
                    moe_layers=list(trace.moe_layers),
                ),
                settings=dict(
                    accounting=options.accounting, cold_fill=options.cold_fill, phase=options.phase, **options.boot
                ),
                hit_rates=hit_rows,
                srp=srp_rows,
            )
        )
        return 0
    print(_title(trace, args.trace) + (f", {options.phase} tokens only" if options.phase else ""))
    if options.ci is not None and trace.num_sequences < 10:
        print(
            f"note: {trace.num_sequences} sequence(s); intervals resample whole sequences, so with this few "
            f"they understate the uncertainty (with 1 they have width 0)"
        )
    if hit_rows:
        print()
        print(_hit_table(hit_rows, options, num_layers))
    print()
    print(_srp_table(srp_rows, options, num_layers))
    if args.plot:
        print(f"\nplot written to {args.plot}")
    return 0


def _mean_rate(curves: list[Any]) -> np.ndarray:
    return np.mean([np.asarray(c.rate, dtype=np.float64) for c in curves], axis=0)


def _srp_row(level, layer, segment, result, interval, by_layer=None) -> dict[str, Any]:
    row = dict(
        level=level,
        layer=layer,
        segment=segment,
        srp=result.srp,
        ci_low=float(interval[0]),
        ci_high=float(interval[1]),
        baseline=result.baseline,
        lift=result.lift,
        rho_hat=result.rho_hat,
    )
    if by_layer is None:
        row.update(alpha=result.alpha, act_r=result.act_r)
    else:
        alphas = [r.alpha for r in by_layer]
        row.update(alpha_min=min(alphas), alpha_max=max(alphas))
    return row


# ---------------------------------------------------------------------- text output
def _title(trace, path: str) -> str:
    return (
        f"{path}: {trace.model or 'unknown model'}, {trace.num_sequences} sequences, {trace.num_tokens} tokens, "
        f"{trace.num_layers} MoE layers, E={trace.num_experts}, k={trace.top_k}"
    )


def _percent(value: float, low: float = float("nan"), high: float = float("nan"), ci: bool = False) -> str:
    if value != value:
        return "n/a"
    text = f"{100 * value:.2f}"
    if ci and low == low:
        text += f" [{100 * low:.2f}, {100 * high:.2f}]"
    return text


def _level_label(row: dict[str, Any], num_layers: int) -> str:
    if row["level"] == "model":
        return "model"
    return f"layer {row['layer']}" if row["layer"] is not None else f"layer (mean of {num_layers})"


def _hit_table(rows: list[dict[str, Any]], options: Options, num_layers: int) -> str:
    shown = [r for r in rows if r["layer"] is None or options.per_layer]
    ci = options.ci is not None
    headers = ["level", "policy", "m"] + [f"rho={rho:g}" for rho in options.rhos]
    body = [
        [_level_label(r, num_layers), r["policy"], r["segment"] if r["segment"] is not None else "-"]
        + [_percent(x["rate"], x["ci_low"], x["ci_high"], ci) for x in r["rates"]]
        for r in shown
    ]
    note = f", {100 * options.ci:g}% CI over sequences ({options.num_boot} resamples)" if ci else ""
    caption = (
        f"hit rate (%), cache = rho x active experts (k per layer, k*L at model level); "
        f"accounting={options.accounting}, cold fill {options.cold_fill}{note}"
    )
    return caption + "\n" + format_table(headers, body, align="lll" + "r" * len(options.rhos))


def _srp_table(rows: list[dict[str, Any]], options: Options, num_layers: int) -> str:
    shown = [r for r in rows if r["layer"] is None or options.per_layer]
    ci = options.ci is not None
    headers = ["level", "m", "SRP" + (f" [{100 * options.ci:g}% CI]" if ci else ""), "iid", "lift", "alpha", "rho_hat"]
    body = []
    for r in shown:
        alpha = r["alpha"] if "alpha" in r else (
            str(r["alpha_min"]) if r["alpha_min"] == r["alpha_max"] else f"{r['alpha_min']}-{r['alpha_max']}"
        )
        lift = _percent(r["lift"], r["ci_low"] - r["baseline"], r["ci_high"] - r["baseline"], ci)
        body.append(
            [
                _level_label(r, num_layers),
                r["segment"],
                _percent(r["srp"], r["ci_low"], r["ci_high"], ci),
                _percent(r["baseline"]),
                lift,
                alpha,
                f"{r['rho_hat']:.2f}",
            ]
        )
    caption = "SRP (%), segment routing best performance; iid = SRP of a uniform random top-k router, lift = SRP - iid"
    return caption + "\n" + format_table(headers, body, align="ll" + "r" * 5)
