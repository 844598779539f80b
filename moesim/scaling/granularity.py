"""The granularity law: do finer experts make an expert cache of fixed bytes exponentially better?

Granularity g splits every routed expert of a base model into g smaller ones: E -> gE experts,
intermediate size f -> f/g, top-k -> gk, so total, active and per-layer expert parameters stay
fixed (:meth:`ModelSpec.with_granularity`; fractions g < 1 merge experts). A GPU expert cache of
fixed *bytes* then holds g times as many experts. For a grid of granularities, cache budgets and
link bandwidths, the analysis simulates hit rate, miss penalty and decode tokens/s, fits the two
hit-rate laws of :mod:`moesim.scaling.laws` per cache budget, and finds for every bandwidth the
granularity that maximises tokens/s: each miss costs ``latency + bytes/bandwidth`` on the link and
each expert a kernel launch, and the fixed parts do not shrink with the expert, so past some g
finer experts cost more than their hits save.

Traces: the real trace where the granularity's shape is the real model's (g = 1 for the base model
the trace was recorded on), synthetic traces from the routing process fitted to it elsewhere
(:data:`moesim.scaling.traces.EXTRAPOLATION_RULE`). At the real shape the synthetic stand-in is
simulated too (``role = "calibration"`` rows), so the report shows how far the stand-in's hit rate
is from the real one: the extrapolation error that every other granularity inherits, at least.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from moesim import fields as F
from moesim.models import ModelSpec
from moesim.scaling import dataset
from moesim.scaling.config import (
    AnalysisFile,
    as_list,
    byte_list,
    fraction,
    fraction_label,
    rate_list,
    require,
    take,
    take_ints,
)
from moesim.scaling.laws import LawComparison, compare_laws, compare_pooled
from moesim.scaling.runner import SimPoint, run_points
from moesim.scaling.traces import TraceFamily
from moesim.scenario import apply_overrides
from moesim.units import parse_duration

ANALYSIS = "granularity"
SCHEMA_VERSION = 1
LABELS = {
    "role": pa.string(),  # "sweep" (the grid) or "calibration" (synthetic stand-in at the real shape)
    "granularity": pa.float64(),
    "granularity_label": pa.string(),
    "num_experts": pa.int64(),
    "top_k": pa.int64(),
    "expert_ffn_size": pa.int64(),
    "expert_bytes": pa.int64(),
    "cache_budget_bytes": pa.int64(),
    "capacity_experts": pa.int64(),
    "link_bandwidth_bps": pa.float64(),
    "link_latency_s": pa.float64(),
    "launch_s": pa.float64(),
    "trace_source": pa.string(),  # "real" | "synthetic"
}
DERIVED = {
    "transfer_s_per_miss": pa.float64(),  # latency + expert_bytes / bandwidth, alone on the link
    "fixed_cost_share": pa.float64(),  # (latency + launch) / (transfer + launch) of one missed expert
    "tokens_per_s_per_gbps": pa.float64(),  # decode tokens/s per GB/s of link bandwidth
}
SCHEMA = dataset.schema(LABELS, extra=DERIVED)
KEYS = (
    "granularities",
    "cache_budgets",
    "link_bandwidths",
    "link_latency",
    "sequences",
    "tokens_per_sequence",
    "fit_tokens",
    "calibrate",
    "workers",
)


@dataclass(frozen=True, kw_only=True)
class GranularityConfig:
    """The grid of a granularity analysis (the ``[scaling]`` table).

    Parameters
    ----------
    granularities : tuple of Fraction
        Factors g applied to the base model (``[1/2, 1, 2, 4, 8]``); each must keep E*g, k*g and
        f/g whole numbers.
    cache_budgets_bytes : tuple of int
        GPU expert-cache sizes in bytes (``["1GiB", "2GiB"]``); capacity = budget // expert bytes.
    link_bandwidths_bps : tuple of float
        Achieved host-to-GPU rates (``["8GB/s", "16GB/s"]``): the link's efficiency is set to 1.
    link_latency_s : float or None
        Per-transfer latency of the link (default: the hardware's).
    sequences, tokens_per_sequence : int or None
        The real sample replayed (first sequences, each cut to this many tokens); synthetic traces
        copy its lengths and positions. None: all of them / whole sequences.
    fit_tokens : int
        Tokens the routing fit uses.
    calibrate : bool
        Also simulate the synthetic stand-in at the real trace's shape.
    workers : int
        Worker processes for the simulations.
    """

    granularities: tuple[Fraction, ...]
    cache_budgets_bytes: tuple[int, ...]
    link_bandwidths_bps: tuple[float, ...]
    link_latency_s: float | None = None
    sequences: int | None = 4
    tokens_per_sequence: int | None = 128
    fit_tokens: int = 16384
    calibrate: bool = True
    workers: int = 1

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> GranularityConfig:
        take(table, "scaling", KEYS)
        require(
            table,
            ("granularities", "cache_budgets", "link_bandwidths"),
            "see scenarios/scaling-granularity.toml for an example",
        )
        grans = sorted(
            {
                fraction(f"scaling.granularities[{i}]", v)
                for i, v in enumerate(as_list("scaling.granularities", table["granularities"]))
            }
        )
        out: dict[str, Any] = {
            "granularities": tuple(grans),
            "cache_budgets_bytes": byte_list("scaling.cache_budgets", table["cache_budgets"]),
            "link_bandwidths_bps": rate_list("scaling.link_bandwidths", table["link_bandwidths"]),
        }
        if "link_latency" in table:
            out["link_latency_s"] = parse_duration(table["link_latency"], "scaling.link_latency")
        for key in ("sequences", "tokens_per_sequence"):
            if key in table:
                out[key] = None if table[key] in ("all", None) else F.check_int(f"scaling.{key}", table[key], minimum=1)
        out.update(take_ints(table, {"fit_tokens": 2, "workers": 1}))
        if "calibrate" in table:
            out["calibrate"] = F.check_bool("scaling.calibrate", table["calibrate"])
        return cls(**out)

    def settings(self) -> dict[str, Any]:
        return {
            "granularities": [fraction_label(g) for g in self.granularities],
            "cache_budgets_bytes": list(self.cache_budgets_bytes),
            "link_bandwidths_bps": list(self.link_bandwidths_bps),
            "link_latency_s": self.link_latency_s,
            "sequences": self.sequences,
            "tokens_per_sequence": self.tokens_per_sequence,
            "fit_tokens": self.fit_tokens,
            "calibrate": self.calibrate,
        }


def granular_spec(spec: ModelSpec, granularity: Fraction | int) -> ModelSpec:
    """``spec`` with every routed expert split into ``granularity`` (or merged, for g < 1).

    Whole factors use :meth:`ModelSpec.with_granularity`; a fraction p/q needs E*p/q, k*p/q and
    f*q/p to be whole numbers. The name gains ``-g<p/q>``.
    """
    g = Fraction(granularity)
    if g <= 0:
        F.fail("granularity", f"expected a positive factor, got {g}")
    experts, top_k, ffn = spec.num_experts * g, spec.top_k * g, spec.expert_ffn_size / g
    bad = [
        name
        for name, value in (("num_experts", experts), ("top_k", top_k), ("expert_ffn_size", ffn))
        if value.denominator != 1
    ]
    if bad:
        F.fail(
            "granularity",
            f"{fraction_label(g)} makes {bad[0]} of {spec.name} fractional "
            f"(E={spec.num_experts}, k={spec.top_k}, f={spec.expert_ffn_size}); pick a factor "
            f"that keeps E*g, k*g and f/g whole",
        )
    if g.denominator == 1:
        scaled = spec.with_granularity(g.numerator)
    else:
        scaled = spec.with_overrides(num_experts=int(experts), top_k=int(top_k), expert_ffn_size=int(ffn))
    return scaled.with_overrides(name=f"{spec.name}-g{fraction_label(g)}")


@dataclass(frozen=True)
class GranularityResult:
    """Rows (one per simulated point), fitted laws per cache budget and overall, the best
    granularity per (budget, bandwidth), the stand-in calibration and notes."""

    table: pa.Table
    fits: dict[int, LawComparison]
    pooled: LawComparison | None
    best: tuple[dict[str, Any], ...]
    calibration: tuple[dict[str, Any], ...]
    family: dict[str, Any]
    settings: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def document(self) -> dict[str, Any]:
        """The ``analysis.json`` document."""
        return {
            "analysis": ANALYSIS,
            "schema_version": SCHEMA_VERSION,
            "settings": self.settings,
            "trace_family": self.family,
            "laws": {str(budget): comparison.as_dict() for budget, comparison in self.fits.items()},
            "pooled_verdict": None
            if self.pooled is None
            else {
                "best": self.pooled.best,
                "delta_aic": self.pooled.delta_aic,
                "weights": self.pooled.weights,
                "distinguished": self.pooled.distinguished,
                "verdict": self.pooled.verdict,
            },
            "best_granularity": list(self.best),
            "calibration": list(self.calibration),
            "notes": list(self.notes),
        }

    def write(self, out_dir) -> None:
        dataset.write_dataset(out_dir, self.table, self.document())


def plan_points(
    base: dict[str, Any], spec: ModelSpec, hardware, family: TraceFamily, config: GranularityConfig
) -> list[SimPoint]:
    """Every simulation of the analysis: the grid, then the calibration points."""
    latency_s = hardware.h2d.latency_s if config.link_latency_s is None else config.link_latency_s
    points = []
    layers = spec.num_moe_layers
    per_layer = str(base.get("cache", {}).get("layout", "pool")).replace("_", "-") == "per-layer"
    for g in config.granularities:
        model = granular_spec(spec, g)
        expert_bytes = model.expert_bytes()
        roles = [("sweep", family.like_sample(model.num_experts, model.top_k, layers))]
        if config.calibrate and (model.num_experts, model.top_k, layers) == family.shape:
            roles.append(("calibration", family.like_sample(model.num_experts, model.top_k, layers, prefer_real=False)))
        for role, recipe in roles:
            bandwidths = config.link_bandwidths_bps if role == "sweep" else config.link_bandwidths_bps[:1]
            for budget in config.cache_budgets_bytes:
                # A per-layer layout's capacity is each layer's quota: the budget is split evenly.
                capacity = budget // expert_bytes // (layers if per_layer else 1)
                for bandwidth in bandwidths:
                    scenario = apply_overrides(
                        base,
                        [
                            ("model", model.to_dict()),
                            ("hardware.h2d.bandwidth_bps", float(bandwidth)),
                            ("hardware.h2d.efficiency", 1.0),
                            ("hardware.h2d.latency_s", float(latency_s)),
                            ("cache.capacity", int(capacity)),
                        ],
                    )
                    labels = {
                        "role": role,
                        "granularity": float(g),
                        "granularity_label": fraction_label(g),
                        "num_experts": model.num_experts,
                        "top_k": model.top_k,
                        "expert_ffn_size": model.expert_ffn_size,
                        "expert_bytes": expert_bytes,
                        "cache_budget_bytes": int(budget),
                        "capacity_experts": int(capacity),
                        "link_bandwidth_bps": float(bandwidth),
                        "link_latency_s": float(latency_s),
                        "launch_s": float(hardware.gpu.launch_s),
                        "trace_source": recipe.kind,
                    }
                    points.append(SimPoint(scenario=scenario, trace=recipe, labels=labels))
    return points


def _derive(row: dict[str, Any]) -> dict[str, Any]:
    transfer = row["link_latency_s"] + row["expert_bytes"] / row["link_bandwidth_bps"]
    fixed = row["link_latency_s"] + row["launch_s"]
    tokens = row.get("decode_tokens_per_s")
    return {
        **row,
        "transfer_s_per_miss": transfer,
        "fixed_cost_share": fixed / (transfer + row["launch_s"]),
        "tokens_per_s_per_gbps": None if tokens is None else tokens / (row["link_bandwidth_bps"] / 1e9),
    }


def analyse(
    rows: list[dict[str, Any]],
) -> tuple[dict[int, LawComparison], LawComparison | None, list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Fits per cache budget, pooled verdict, best granularity per (budget, bandwidth), calibration
    and notes, from the rows of a granularity analysis."""
    notes: list[str] = []
    sweep = [r for r in rows if r["role"] == "sweep" and r["status"] == "ok"]
    infeasible = [r for r in rows if r["status"] != "ok"]
    if infeasible:
        first = infeasible[0]
        notes.append(
            f"{len(infeasible)} point(s) could not run, e.g. g={first['granularity_label']} at "
            f"{first['cache_budget_bytes'] / 2**30:g} GiB: {first['reason']}"
        )
    fits: dict[int, LawComparison] = {}
    for budget in sorted({r["cache_budget_bytes"] for r in sweep}):
        by_experts: dict[int, list[float]] = {}
        for r in sweep:
            if r["cache_budget_bytes"] == budget:
                by_experts.setdefault(r["num_experts"], []).append(r["hit_rate"])
        spread = max((max(v) - min(v) for v in by_experts.values()), default=0.0)
        if spread > 1e-9:
            # Demand fetching with a timing-independent policy gives the same hits at any bandwidth.
            notes.append(
                f"hit rate at {budget / 2**30:g} GiB varies by {spread:.2e} across bandwidths "
                f"(the eviction policy sees timing); the fit uses the mean"
            )
        x = sorted(by_experts)
        if len(x) < 3:
            notes.append(
                f"cache budget {budget / 2**30:g} GiB: {len(x)} feasible granularities, too few to fit "
                f"a two-parameter law (need 3)"
            )
            continue
        fits[budget] = compare_laws(np.array(x, dtype=float), np.array([np.mean(by_experts[e]) for e in x]))
    pooled = compare_pooled(list(fits.values()))
    best = []
    for budget in sorted({r["cache_budget_bytes"] for r in sweep}):
        for bandwidth in sorted({r["link_bandwidth_bps"] for r in sweep}):
            group = sorted(
                (r for r in sweep if r["cache_budget_bytes"] == budget and r["link_bandwidth_bps"] == bandwidth),
                key=lambda r: r["granularity"],
            )
            if not group:
                continue
            top = max(group, key=lambda r: (r["decode_tokens_per_s"], -r["granularity"]))
            largest = group[-1]["granularity"]
            best.append(
                {
                    "cache_budget_bytes": budget,
                    "link_bandwidth_bps": bandwidth,
                    "best_granularity": top["granularity"],
                    "best_granularity_label": top["granularity_label"],
                    "best_num_experts": top["num_experts"],
                    "decode_tokens_per_s": top["decode_tokens_per_s"],
                    "tokens_per_s_per_gbps": top["tokens_per_s_per_gbps"],
                    "hit_rate": top["hit_rate"],
                    "turns": top["granularity"] < largest,
                    "tokens_per_s_by_granularity": {r["granularity_label"]: r["decode_tokens_per_s"] for r in group},
                }
            )
    calibration = []
    for r in rows:
        if r["role"] != "calibration" or r["status"] != "ok":
            continue
        real = next(
            (
                s
                for s in sweep
                if s["trace_source"] == "real"
                and s["cache_budget_bytes"] == r["cache_budget_bytes"]
                and s["link_bandwidth_bps"] == r["link_bandwidth_bps"]
                and s["granularity"] == r["granularity"]
            ),
            None,
        )
        if real is None:
            continue
        calibration.append(
            {
                "granularity": r["granularity"],
                "cache_budget_bytes": r["cache_budget_bytes"],
                "link_bandwidth_bps": r["link_bandwidth_bps"],
                "hit_rate_real": real["hit_rate"],
                "hit_rate_synthetic": r["hit_rate"],
                "hit_rate_gap": r["hit_rate"] - real["hit_rate"],
                "tokens_per_s_real": real["decode_tokens_per_s"],
                "tokens_per_s_synthetic": r["decode_tokens_per_s"],
                "tokens_per_s_ratio": r["decode_tokens_per_s"] / real["decode_tokens_per_s"],
            }
        )
    if calibration:
        worst = max(calibration, key=lambda c: abs(c["hit_rate_gap"]))
        notes.append(
            f"synthetic stand-in at the real shape: hit rate off by up to {100 * worst['hit_rate_gap']:+.1f} "
            f"points (real {100 * worst['hit_rate_real']:.1f}%, synthetic "
            f"{100 * worst['hit_rate_synthetic']:.1f}% at {worst['cache_budget_bytes'] / 2**30:g} GiB); "
            f"synthetic granularities carry at least this extrapolation error"
        )
    return fits, pooled, best, calibration, notes


def run_granularity(
    analysis: AnalysisFile,
    *,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> GranularityResult:
    """Run a granularity analysis from a loaded scaling scenario (see :class:`GranularityConfig`).

    Returns
    -------
    GranularityResult
        Write it with :meth:`GranularityResult.write`; render it with :func:`moesim.scaling.report.render`.

    Notes
    -----
    Krajewski et al. 2024, "Scaling Laws for Fine-Grained Mixture of Experts" (arXiv:2402.07871),
    define granularity G as the split factor used here (their loss law is a power law in G); Dai et
    al. 2024 (DeepSeekMoE, arXiv:2401.06066) split experts the same way with top-k scaled by G.
    """
    config = GranularityConfig.from_table(dict(analysis.table))
    scenario = analysis.scenario
    family = TraceFamily(
        analysis.trace_path,
        num_sequences=config.sequences,
        max_tokens_per_sequence=config.tokens_per_sequence,
        fit_tokens=config.fit_tokens,
        seed=scenario.seed,
    )
    base_shape = (scenario.model.num_experts, scenario.model.top_k, scenario.model.num_moe_layers)
    notes = []
    if base_shape != family.shape:
        notes.append(
            f"the base model {scenario.model.name} (E, k, L = {base_shape}) is not the real trace's shape "
            f"{family.shape}: every point uses synthetic traces"
        )
    points = plan_points(analysis.base, scenario.model, scenario.hardware, family, config)
    rows = run_points(points, workers=workers or config.workers, executor=executor, address=address, progress=progress)
    rows = [_derive(row) for row in rows]
    fits, pooled, best, calibration, more = analyse(rows)
    table = dataset.rows_table(rows, SCHEMA, ANALYSIS, SCHEMA_VERSION)
    settings = {
        **config.settings(),
        "scenario": scenario.name,
        "base_model": scenario.model.name,
        "hardware": scenario.hardware.name,
        "eviction": scenario.cache.eviction,
        "layout": scenario.cache.layout,
        "batch_size": scenario.workload.batch_size,
        "bandwidth_note": "link bandwidths are achieved rates (hardware.h2d.efficiency set to 1)",
        "miss_penalty_model": "latency + expert_bytes / bandwidth per transfer on the h2d link, plus one kernel "
        "launch per expert (gpu.launch_s); simulated stalls include queueing behind "
        "other transfers",
    }
    return GranularityResult(
        table=table,
        fits=fits,
        pooled=pooled,
        best=tuple(best),
        calibration=tuple(calibration),
        family=family.describe(),
        settings=settings,
        notes=tuple(notes + more),
    )


def hit_rate_matrix(table: pa.Table) -> tuple[list[int], list[int], np.ndarray]:
    """``(budgets, num_experts, hit[budget, E])`` of the sweep rows (NaN where infeasible), for plots."""
    rows = [r for r in table.to_pylist() if r["role"] == "sweep"]
    budgets = sorted({r["cache_budget_bytes"] for r in rows})
    experts = sorted({r["num_experts"] for r in rows})
    hit = np.full((len(budgets), len(experts)), math.nan)
    for r in rows:
        if r["status"] == "ok":
            hit[budgets.index(r["cache_budget_bytes"]), experts.index(r["num_experts"])] = r["hit_rate"]
    return budgets, experts, hit
