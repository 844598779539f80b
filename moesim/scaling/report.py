"""Markdown reports with PNG plots for the scaling analyses' results datasets.

``render(directory)`` reads ``results.parquet`` and ``analysis.json`` (:mod:`moesim.scaling.dataset`),
writes ``report.md`` and one or two figures beside them, and returns the report's path. Only the
numbers in the dataset are used, so a report can be rebuilt at any time. matplotlib is imported
inside the plotting functions (Agg backend).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from moesim.scaling.dataset import read_dataset
from moesim.trace.io import atomic_path, atomic_write_text
from moesim.units import format_bytes, format_rate

VERSIONS = {"granularity": 1, "serving": 1, "architectures": 1}
_DPI = 110


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(ncols: int = 1, *, width: float = 5.2, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: Path) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    plt.close(fig)
    return path.name


def _header(title: str, document: dict[str, Any]) -> list[str]:
    lines = [f"# {title}", ""]
    family = document.get("trace_family") or {}
    if family:
        params = family.get("fitted_params", {})
        lines += [
            f"Real trace: `{Path(str(family.get('real_trace', ''))).name}` ({family.get('real_model')}, "
            f"E={family.get('real_shape', {}).get('num_experts')}, k={family.get('real_shape', {}).get('top_k')}, "
            f"{family.get('real_shape', {}).get('num_layers')} MoE layers).",
            "",
            "Fitted routing: "
            + ", ".join(
                f"{k} {params[k]:.3g}"
                for k in ("popularity_skew", "popularity_tail", "persistence", "cross_layer", "sequence_affinity")
                if k in params
            )
            + ".",
            "",
            f"Extrapolation rule: {family.get('extrapolation_rule')}.",
            "",
        ]
    notes = document.get("notes") or []
    if notes:
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    return lines


# ---------------------------------------------------------------------------------------- granularity
def _granularity(directory: Path, rows: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    import numpy as np

    from moesim.scaling.laws import LAWS

    settings = document.get("settings", {})
    laws = document.get("laws", {})
    sweep = [r for r in rows if r["role"] == "sweep"]
    budgets = sorted({r["cache_budget_bytes"] for r in sweep})
    bandwidths = sorted({r["link_bandwidth_bps"] for r in sweep})
    lines = _header("Granularity law: expert caches of fixed bytes as experts get finer", document)
    lines += [
        f"Base model `{settings.get('base_model')}` on `{settings.get('hardware')}`, "
        f"{settings.get('eviction')} eviction ({settings.get('layout')}), batch {settings.get('batch_size')}; "
        f"granularities {', '.join(settings.get('granularities', []))}. {settings.get('bandwidth_note', '')}. "
        f"Miss penalty model: {settings.get('miss_penalty_model', '')}.",
        "",
    ]
    # Figure 1: hit rate against E with both laws.
    plt, fig, axes = _figure(1)
    ax = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, budget in enumerate(budgets):
        color = colors[i % len(colors)]
        points = sorted(
            {
                (r["num_experts"], r["hit_rate"])
                for r in sweep
                if r["cache_budget_bytes"] == budget and r["status"] == "ok"
            }
        )
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", color=color, label=f"{format_bytes(budget)} cache")
        fit = laws.get(str(budget))
        if fit:
            grid = np.geomspace(min(p[0] for p in points), max(p[0] for p in points), 100)
            for law_fit, style in zip(fit["fits"], ("-", "--")):
                if law_fit["law"] == "exponential":
                    curve = 1 - law_fit["a"] * np.exp(-law_fit["b"] * grid)
                else:
                    curve = 1 - law_fit["a"] * grid ** (-law_fit["b"])
                ax.plot(grid, curve, style, color=color, linewidth=1, alpha=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("experts per layer E (finer ->)")
    ax.set_ylabel("hit rate")
    ax.set_title("hit rate at fixed cache bytes; solid: 1-a·exp(-bE), dashed: 1-a·E^-b", fontsize=9)
    ax.legend(fontsize=8)
    hit_png = _save(plt, fig, directory / "granularity_hit_rate.png")
    lines += [f"![hit rate against number of experts]({hit_png})", "", "## Fitted laws", ""]
    law_rows = []
    for budget in budgets:
        fit = laws.get(str(budget))
        if not fit:
            continue
        for law_fit in fit["fits"]:
            law_rows.append(
                [
                    format_bytes(budget),
                    law_fit["formula"],
                    _num(law_fit["a"]),
                    _num(law_fit["b"]),
                    _num(law_fit["r_squared"]),
                    _num(law_fit["aic"]),
                    " ".join(f"{v:+.3f}" for v in law_fit["residuals"]),
                    "**best**" if law_fit["law"] == fit["best"] else "",
                ]
            )
    lines += [_table(["cache", "law", "a", "b", "R^2", "AIC", "residuals (by E)", ""], law_rows), ""]
    for budget in budgets:
        fit = laws.get(str(budget))
        if fit:
            lines.append(f"- {format_bytes(budget)}: {fit['verdict']}.")
    pooled = document.get("pooled_verdict")
    if pooled:
        lines += ["", f"**Verdict**: {pooled['verdict']}."]
    lines.append("")
    # Figure 2: tokens/s against g, one panel per budget.
    plt, fig, axes = _figure(len(budgets) or 1, width=4.2)
    for ax, budget in zip(axes, budgets):
        for j, bandwidth in enumerate(bandwidths):
            group = sorted(
                (
                    r
                    for r in sweep
                    if r["cache_budget_bytes"] == budget
                    and r["link_bandwidth_bps"] == bandwidth
                    and r["status"] == "ok"
                ),
                key=lambda r: r["granularity"],
            )
            if not group:
                continue
            xs = [r["granularity"] for r in group]
            ys = [r["decode_tokens_per_s"] for r in group]
            color = colors[j % len(colors)]
            ax.plot(xs, ys, "o-", color=color, label=format_rate(bandwidth))
            top = max(range(len(ys)), key=lambda i: ys[i])
            ax.plot([xs[top]], [ys[top]], "*", color=color, markersize=13)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("granularity g")
        ax.set_title(f"{format_bytes(budget)} expert cache", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("decode tokens/s (star: best g)")
    tokens_png = _save(plt, fig, directory / "granularity_tokens.png")
    lines += ["## Where finer stops paying", "", f"![tokens/s against granularity]({tokens_png})", ""]
    def _label_value(label: str) -> Fraction:  # granularity labels such as "1/2", "1", "8"
        try:
            return Fraction(label)
        except (ValueError, ZeroDivisionError):
            return Fraction(0)

    best_rows = []
    for best in document.get("best_granularity", []):
        by_g = best.get("tokens_per_s_by_granularity", {})
        best_rows.append(
            [
                format_bytes(best["cache_budget_bytes"]),
                format_rate(best["link_bandwidth_bps"]),
                best["best_granularity_label"],
                best["best_num_experts"],
                _num(best["decode_tokens_per_s"]),
                _num(best["tokens_per_s_per_gbps"]),
                _pct(best["hit_rate"]),
                "yes" if best["turns"] else "no (still rising)",
                " / ".join(f"{g}: {v:.1f}" for g, v in sorted(by_g.items(), key=lambda item: _label_value(item[0]))),
            ]
        )
    lines += [
        _table(
            ["cache", "link", "best g", "E", "tokens/s", "tokens/s per GB/s", "hit rate", "turns", "tokens/s by g"],
            best_rows,
        ),
        "",
    ]
    penalty = {}
    for r in sweep:
        if r["status"] == "ok":
            penalty.setdefault((r["granularity_label"], r["link_bandwidth_bps"]), r)
    if penalty:
        lines += [
            "Miss penalty by granularity (one missed expert alone on the link, and the simulated stall per miss):",
            "",
        ]
        pen_rows = [
            [
                g,
                format_rate(bw),
                format_bytes(r["expert_bytes"]),
                f"{1e6 * r['transfer_s_per_miss']:.1f}",
                _pct(r["fixed_cost_share"]),
                f"{1e6 * (r['miss_penalty_stall_per_miss_s'] or 0):.1f}",
            ]
            for (g, bw), r in sorted(penalty.items(), key=lambda item: (item[1]["granularity"], item[0][1]))
        ]
        lines += [_table(["g", "link", "expert", "transfer us", "fixed share", "stall/miss us"], pen_rows), ""]
    calibration = document.get("calibration") or []
    if calibration:
        lines += [
            "## Stand-in check at the real shape",
            "",
            _table(
                ["g", "cache", "hit rate real", "hit rate synthetic", "gap", "tokens/s synthetic / real"],
                [
                    [
                        _num(c["granularity"]),
                        format_bytes(c["cache_budget_bytes"]),
                        _pct(c["hit_rate_real"]),
                        _pct(c["hit_rate_synthetic"]),
                        f"{100 * c['hit_rate_gap']:+.1f} pts",
                        _num(c["tokens_per_s_ratio"], 3),
                    ]
                    for c in calibration
                ],
            ),
            "",
        ]
    del LAWS
    return lines


# ---------------------------------------------------------------------------------------- serving
def _serving(directory: Path, rows: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    settings = document.get("settings", {})
    law = document.get("quality_law", {})
    lines = _header("Serving cost at equal quality", document)
    lines += [
        f"Template `{settings.get('template')}` on `{settings.get('hardware')}` at "
        f"{settings.get('gpu_price_per_hour')} per GPU-hour; {settings.get('prompt_tokens')} prompt tokens then "
        f"{settings.get('decode_steps')} decode steps.",
        "",
        f"Quality proxy ({law.get('label')}): `{law.get('formula')}` with a={law.get('a')}, b={law.get('b')}, "
        f"c={law.get('c')}, d={law.get('d')}, E_start={law.get('e_start')}, E_max={law.get('e_max')}. "
        f"{settings.get('quality_proxy', '')}.",
        "",
    ]
    chosen = sorted((r for r in rows if r["chosen"]), key=lambda r: (r["mode"], r["num_experts"]))
    plt, fig, axes = _figure(2, width=4.6)
    for mode, style in (("offload", "o-"), ("resident", "s--")):
        group = [r for r in chosen if r["mode"] == mode]
        if group:
            axes[0].plot(
                [r["num_experts"] for r in group], [r["cost_per_million_tokens"] for r in group], style, label=mode
            )
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("experts E (equal predicted quality)")
    axes[0].set_ylabel("cost per million tokens")
    axes[0].legend(fontsize=8)
    offload = [r for r in chosen if r["mode"] == "offload"]
    if offload:
        xs = range(len(offload))
        gib = 2.0**30
        weights = [(r["mem_non_expert_bytes"] or 0) / gib for r in offload]
        cache = [(r["cache_bytes"] or 0) / gib for r in offload]
        kv = [(r["mem_kv_cache_bytes"] or 0) / gib for r in offload]
        axes[1].bar(xs, weights, label="resident weights")
        axes[1].bar(xs, cache, bottom=weights, label="expert cache")
        axes[1].bar(xs, kv, bottom=[w + c for w, c in zip(weights, cache)], label="KV cache")
        axes[1].set_xticks(list(xs), [f"E={r['num_experts']}\nB={r['batch_size']}" for r in offload], fontsize=7)
        axes[1].set_ylabel("GiB (offloaded, cheapest batch)")
        axes[1].legend(fontsize=7)
    png = _save(plt, fig, directory / "serving_cost.png")
    lines += [f"![cost per million tokens and memory split]({png})", "", "## Cheapest batch per model and mode", ""]
    table_rows = [
        [
            r["mode"],
            r["num_experts"],
            r["top_k"],
            r["expert_ffn_size"],
            _num(r["total_params"] / 1e9, 3),
            _num(r["active_params_without_embedding"] / 1e9, 3),
            r["batch_size"],
            r["max_batch_size"],
            format_bytes(r["mem_non_expert_bytes"] or 0),
            format_bytes(r["cache_bytes"] or 0),
            format_bytes(r["mem_kv_cache_bytes"] or 0),
            _pct(r["hit_rate"]),
            _num(r["decode_tokens_per_s"]),
            _num(r["cost_per_million_tokens"]),
        ]
        for r in chosen
    ]
    lines += [
        _table(
            [
                "mode",
                "E",
                "k",
                "expert ffn",
                "total B",
                "active B",
                "batch",
                "max batch",
                "weights",
                "expert cache",
                "KV",
                "hit rate",
                "tokens/s",
                "cost / M tokens",
            ],
            table_rows,
        ),
        "",
    ]
    infeasible = {(r["num_experts"], r["mode"]): r for r in rows if r["status"] != "ok"}
    for (experts, mode), r in sorted(infeasible.items()):
        if not any(c["num_experts"] == experts and c["mode"] == mode for c in chosen):
            lines.append(
                f"- E={experts} {mode}: does not run ({r['reason']}); resident weights need "
                f">= {r['min_gpus_resident']} such GPUs."
            )
    cheapest = document.get("cheapest") or []
    if cheapest:
        top = cheapest[0]
        lines += [
            "",
            f"**Cheapest**: E={top['num_experts']} {top['mode']} at batch {top['batch_size']}: "
            f"{_num(top['cost_per_million_tokens'])} per million tokens "
            f"({_num(top['decode_tokens_per_s'])} tokens/s).",
        ]
    lines.append("")
    return lines


# ---------------------------------------------------------------------------------------- architectures
def _architectures(directory: Path, rows: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    from moesim.scaling.architectures import CONFIG_HEADERS, config_cells

    settings = document.get("settings", {})
    budget = settings.get("budget", {})
    lines = _header("Architectures under a joint budget", document)
    lines += [
        f"Budgets: {budget.get('flops_per_token', 0) / 1e9:.3g} GFLOP/token at {budget.get('context_len')} context, "
        f"{budget.get('active_params', 0) / 1e9:.3g} B active, {budget.get('total_params', 0) / 1e9:.3g} B total, "
        f"each within {100 * budget.get('tolerance', 0):.3g}%. Template `{settings.get('space', {}).get('template')}`. "
        f"{document.get('num_candidates')} configurations qualify; {settings.get('selection')}. Simulated on "
        f"`{settings.get('hardware')}`, cache {settings.get('cache_capacity')}, batch {settings.get('batch_size')}.",
        "",
    ]
    ranked = sorted((r for r in rows if r["simulated"]), key=lambda r: r["rank"] or 0)
    if ranked:
        plt, fig, axes = _figure(1, width=6.5)
        labels = [r["name"] for r in ranked]
        values = [r["decode_tokens_per_s"] or 0.0 for r in ranked]
        axes[0].barh(range(len(ranked)), values)
        axes[0].set_yticks(range(len(ranked)), labels, fontsize=7)
        axes[0].invert_yaxis()
        axes[0].set_xlabel("decode tokens/s when offloaded")
        png = _save(plt, fig, directory / "architectures_tokens.png")
        lines += [f"![tokens/s by configuration]({png})", ""]
    table_rows = [
        [
            *config_cells(r),
            f"{100 * r['dev_flops_per_token']:+.1f}",
            f"{100 * r['dev_active_params']:+.1f}",
            f"{100 * r['dev_total_params']:+.1f}",
            format_bytes(r["expert_bytes"]),
            r["mem_capacity_experts"] if r["status"] == "ok" else "-",
            _pct(r["hit_rate"]),
            _num(r["decode_tokens_per_s"]),
            r["status"],
        ]
        for r in ranked
    ]
    headers = [*CONFIG_HEADERS, "FLOPs %", "active %", "total %", "expert", "cached", "hit rate", "tokens/s", "status"]
    lines += [_table(headers, table_rows), ""]
    return lines


_RENDERERS = {"granularity": _granularity, "serving": _serving, "architectures": _architectures}


def render(path: str | os.PathLike) -> Path:
    """Write ``report.md`` (and its figures) for the results directory ``path``; return its path."""
    analysis, table, document = read_dataset(path, VERSIONS)
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    lines = _RENDERERS[analysis](directory, table.to_pylist(), document)
    report = directory / "report.md"
    atomic_write_text(report, "\n".join(lines).rstrip() + "\n")
    return report
